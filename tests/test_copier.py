"""The libnbd copier against real servers: nbdkit as source, qemu-nbd on a qcow2 as target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import nbd
import pytest

from engine.errors import CopyError
from engine.node.copier import CopyCancelled, CopyOptions, Extent, Progress, copy
from tests.fixtures.images import qcow2_data
from tests.nbd_servers import nbdkit, qemu_nbd

MiB = 1024 * 1024
SIZE = 24 * MiB
# Where the source holds data (the rest is explicit zeroes or holes), and where the
# target qcow2 (64 KiB clusters) may therefore hold clusters.
# 4 MiB..4 MiB+64 KiB is data inside written zeroes: one read block, half data, half zero.
DATA = [
    (0, 4 * MiB),
    (4 * MiB, 64 * 1024),
    (16 * MiB + 256 * 1024 - 1, 1),
    (20 * MiB, 2 * MiB + 17),
]
ALLOWED = [
    (0, 4 * MiB + 64 * 1024),
    (16 * MiB + 192 * 1024, 64 * 1024),
    (20 * MiB, 2 * MiB + 64 * 1024),
]


@pytest.fixture
def source_file(tmp_path: Path) -> Path:
    """Random data, written zeroes, holes, and one non-zero byte ending a block."""
    path = tmp_path / "source.img"
    with path.open("wb") as f:
        f.truncate(SIZE)
        f.seek(4 * MiB)
        f.write(b"\0" * 4 * MiB)
        for off, n in DATA:
            f.seek(off)
            f.write(os.urandom(n) if n > 1 else b"\x01")
    return path


def within(ranges: list[tuple[int, int]], allowed: list[tuple[int, int]]) -> bool:
    return all(any(a <= s and s + n <= a + m for a, m in allowed) for s, n in ranges)


def identical(raw: Path, qcow2: Path) -> bool:
    r = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", str(raw), str(qcow2)],
        check=False,
    )
    return r.returncode == 0


def test_fresh_target_is_exact_and_holds_no_zero_clusters(source_file: Path, tmp_path: Path):
    target = tmp_path / "t.qcow2"
    seen: list[Progress] = []
    with nbdkit("file", f"file={source_file}") as src, qemu_nbd(target, SIZE) as dst:
        final = copy(
            src, dst, disk="2000", options=CopyOptions(target_is_zero=True), progress=seen.append
        )
    assert identical(source_file, target)
    assert within(qcow2_data(target), ALLOWED)
    assert final.bytes_done == final.bytes_total == SIZE
    # Everything but the data (rounded to 256 KiB requests) was settled as zero.
    assert final.bytes_zero >= SIZE - 7 * MiB
    assert (4 * MiB + 64 * 1024, 192 * 1024) not in qcow2_data(target)
    assert final.connections == 4  # both ends advertise multi-conn
    assert seen[-1] == final


def test_used_target_gets_zero_writes(source_file: Path, tmp_path: Path):
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(os.urandom(SIZE))
    target = tmp_path / "t.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-O", "qcow2", str(garbage), str(target)], check=True
    )
    with nbdkit("file", f"file={source_file}") as src, qemu_nbd(target) as dst:
        copy(src, dst, disk="2000", options=CopyOptions(target_is_zero=False))
    assert identical(source_file, target)


def test_one_byte_at_the_end_of_a_zero_block_is_copied(tmp_path: Path):
    target = tmp_path / "t.qcow2"
    # nbdkit's data plugin: 1 MiB of zeroes but for the last byte of the first request.
    with nbdkit("data", "@262143 1", "size=1M") as src, qemu_nbd(target, MiB) as dst:
        copy(src, dst, options=CopyOptions(target_is_zero=True, request_size=256 * 1024))
        h = nbd.NBD()
        h.connect_uri(dst)
        assert h.pread(2, 262142) == b"\x00\x01"
        h.shutdown()


def test_only_the_given_extents_are_copied(source_file: Path, tmp_path: Path):
    target = tmp_path / "t.qcow2"
    with nbdkit("file", f"file={source_file}") as src, qemu_nbd(target, SIZE) as dst:
        final = copy(src, dst, extents=[Extent(MiB, MiB)], options=CopyOptions(target_is_zero=True))
        h = nbd.NBD()
        h.connect_uri(dst)
        assert h.pread(MiB, MiB) == source_file.read_bytes()[MiB : 2 * MiB]
        assert h.pread(MiB, 0) == b"\0" * MiB
        h.shutdown()
    assert final.bytes_total == MiB


def test_read_error_names_disk_offset_and_error(tmp_path: Path):
    target = tmp_path / "t.qcow2"
    with (
        nbdkit("--filter=error", "pattern", "size=4M", "error-pread=EIO",
               "error-pread-rate=1") as src,
        qemu_nbd(target, 4 * MiB) as dst,
        pytest.raises(CopyError, match=r"^disk 2001: read of 262144 bytes at offset \d+ failed "
                      r"on the source: Input/output error$") as err,
    ):  # fmt: skip
        copy(src, dst, disk="2001", options=CopyOptions(request_size=256 * 1024))
    assert err.value.exit_code == 5


def test_write_error_names_disk_offset_and_error():
    """Writes go out from inside the read's completion: their failure still ends the copy."""
    with (
        nbdkit("pattern", "size=4M") as src,
        nbdkit("--filter=error", "memory", "size=4M", "error-pwrite=EIO",
               "error-pwrite-rate=1") as dst,
        pytest.raises(CopyError, match=r"^disk 2002: write of 1048576 bytes at offset \d+ "
                      r"failed on the target: Input/output error$"),
    ):  # fmt: skip
        copy(src, dst, disk="2002", options=CopyOptions(request_size=MiB))


def test_target_too_small_is_refused(source_file: Path, tmp_path: Path):
    with (
        nbdkit("file", f"file={source_file}") as src,
        qemu_nbd(tmp_path / "t.qcow2", MiB) as dst,
        pytest.raises(CopyError, match="too small"),
    ):
        copy(src, dst, disk="2000")


def test_buffers_are_reused_and_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Memory bound: no more read buffers exist than requests may be in flight."""
    created = 0

    class CountingBuffer(nbd.Buffer):  # a spy on the real buffer, not a mock
        def __init__(self, n: int) -> None:
            nonlocal created
            created += 1
            super().__init__(n)

    monkeypatch.setattr(nbd, "Buffer", CountingBuffer)
    target = tmp_path / "t.qcow2"
    opts = CopyOptions(connections=1, requests_in_flight=4, request_size=64 * 1024)
    with nbdkit("pattern", "size=16M") as src, qemu_nbd(target, 16 * MiB) as dst:
        copy(src, dst, options=opts)
    assert 1 <= created <= 4  # 256 reads went through at most 4 buffers


def test_single_connection_when_target_lacks_multi_conn(source_file: Path, tmp_path: Path):
    target = tmp_path / "t.qcow2"
    with nbdkit("file", f"file={source_file}") as src, qemu_nbd(target, SIZE, shared=1) as dst:
        final = copy(src, dst, options=CopyOptions(target_is_zero=True))
    assert final.connections == 1
    assert identical(source_file, target)


def test_cancel_stops_the_copy(tmp_path: Path):
    target = tmp_path / "t.qcow2"
    cancel = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.bytes_done > 0:
            cancel.set()

    opts = CopyOptions(max_rate_bps=4 * MiB, request_size=64 * 1024)
    with (
        nbdkit("pattern", "size=64M") as src,
        qemu_nbd(target, 64 * MiB) as dst,
        pytest.raises(CopyCancelled),
    ):
        copy(src, dst, options=opts, progress=on_progress, cancel=cancel, interval=0.05)


def test_cli_copy_prints_json_progress(source_file: Path, tmp_path: Path):
    target = tmp_path / "t.qcow2"
    with nbdkit("file", f"file={source_file}") as src, qemu_nbd(target, SIZE) as dst:
        out = subprocess.run(
            [sys.executable, "-m", "engine.cli.main", "nbd", "copy", src, dst,
             "--target-is-zero", "--progress", "json", "--connections", "2"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["type"] == "disk_started"
    assert lines[-1]["type"] == "disk_done"
    assert lines[-1]["bytes_done"] == SIZE
    assert {"progress"} <= {line["type"] for line in lines}
    assert identical(source_file, target)


def test_cli_copy_error_is_one_line_with_exit_code(tmp_path: Path):
    with qemu_nbd(tmp_path / "t.qcow2", MiB) as dst:
        out = subprocess.run(
            [sys.executable, "-m", "engine.cli.main", "nbd", "copy",
             f"nbd+unix:///?socket={tmp_path}/none.sock", dst, "--progress", "none"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert out.returncode == 5
    assert out.stderr.strip().startswith("error: disk copy: cannot connect to source")
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_large_mixed_disk_over_a_used_target(tmp_path: Path):
    """1 GiB: many work units, every connection busy, zero writes over old data."""
    size = 1024 * MiB
    source = tmp_path / "big.img"
    with source.open("wb") as f:
        f.truncate(size)
        for off in range(0, size, 7 * MiB + 4096):
            f.seek(off)
            f.write(os.urandom(MiB // 2) + bytes(MiB // 2) + os.urandom(4097))
    target = tmp_path / "t.qcow2"
    garbage = tmp_path / "g.img"
    with garbage.open("wb") as f:
        for _ in range(size // (64 * MiB)):
            f.write(b"\xa5" * 64 * MiB)
    subprocess.run(
        ["qemu-img", "convert", "-q", "-O", "qcow2", str(garbage), str(target)], check=True
    )
    garbage.unlink()
    with nbdkit("file", f"file={source}") as src, qemu_nbd(target) as dst:
        final = copy(src, dst, disk="big")
    assert final.bytes_done == size
    assert identical(source, target)
