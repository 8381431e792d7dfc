"""Verified points after a real backup of the lab: the tables the copier's digests made,
verify passing on a good point, a single flipped byte found with its disk and chunk, a
point without tables checked for structure only, a point being verified not deleted, and
bad input. The checker alone, on a qcow2 chain qemu-img made: data in both files, zeros
over data, a compressed cluster (read through qemu-nbd), a short last chunk."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
import xxhash

from engine.config import Settings
from engine.contract.progress import ChunkDigests
from engine.contract.status import DiskStatus, JobStatus
from engine.contract.verify import DiskVerification
from engine.errors import Conflict
from engine.hub.events import EventBus
from engine.hub.exports.manager import ExportManager
from engine.hub.progress import DiskState, JobState
from engine.hub.restores.manager import RestoreManager
from engine.hub.verify.checker import check_structure, damaged_ranges, read_disk
from engine.hub.verify.disk import DIFFERS, ZEROES, DiskCheck
from engine.hub.verify.layout import Kind, map_disk
from engine.hub.verify.manager import VerifyManager
from engine.hub.verify.over_nbd import read_over_nbd
from engine.hub.verify.table import Table, TableWriter, derive, read_table, table_path
from tests.fixtures.held import qemu_img_held
from tests.fixtures.images import qcow2_map
from tests.fixtures.points import Point, chained_point
from tests.fixtures.services import processes_mentioning


def verify(point: Point, point_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return point.services.sendense("verify", point_id, *extra)


def a_data_byte(qcow2: Path) -> tuple[int, int]:
    """(guest offset, file offset) of the first byte of the qcow2's first data cluster."""
    mapped = [m for m in qcow2_map(qcow2) if m["data"] and "offset" in m]
    assert mapped, f"{qcow2} holds no data to flip"
    return mapped[0]["start"], mapped[0]["offset"]


@pytest.mark.slow
def test_a_good_point_verifies_and_one_flipped_byte_is_found(
    point: Point, settings: Settings
) -> None:
    for key, qcow2 in point.disks.items():
        table = read_table(table_path(qcow2))
        assert TableWriter(table_path(qcow2), table.header.capacity).complete, key

    good = verify(point, point.point_id)
    assert good.returncode == 0, good.stderr
    assert "verified" in good.stdout
    with point.services.client() as api:
        view = api.get(f"/api/v1/restore-points/{point.point_id}").json()
        assert view["verification"] == "verified"
        report = api.get(f"/api/v1/restore-points/{point.point_id}/verify").json()
        assert report["state"] == "verified" and not report["running"]
        assert report["bytes_done"] == report["bytes_total"] > 0

    # An incremental made without tables: structure and reads only, with the note.
    child = chained_point(settings, point)
    note = verify(point, child.point_id, "--json")
    assert note.returncode == 0, note.stderr
    answer = json.loads(note.stdout)
    assert answer["state"] == "unverified"
    assert "no chunk digests were recorded" in answer["detail"]

    key = min(point.disks)
    qcow2 = point.disks[key]
    guest, host = a_data_byte(qcow2)
    with qcow2.open("r+b") as f:
        f.seek(host)
        byte = f.read(1)
        f.seek(host)
        f.write(bytes([byte[0] ^ 0xFF]))
    chunk = read_table(table_path(qcow2)).header.chunk_size
    start = guest // chunk * chunk
    bad = verify(point, point.point_id)
    assert bad.returncode == 13, bad.stdout + bad.stderr
    line = bad.stderr.strip().splitlines()[-1]
    assert f"disk {key} bytes {start}-{start + chunk}" in line, line
    with point.services.client() as api:
        report = api.get(f"/api/v1/restore-points/{point.point_id}/verify").json()
        assert report["state"] == "damaged"
        assert report["damaged"] == [
            {
                "disk_key": key,
                "offset": start,
                "length": chunk,
                "reason": "chunk digest differs from what the copier read",
            }
        ]
        assert api.get(f"/api/v1/restore-points/{point.point_id}").json()["verification"] == (
            "damaged"
        )
    assert processes_mentioning(str(qcow2), "qemu-nbd") == []


@pytest.mark.slow
def test_unknown_point_is_not_found(point: Point) -> None:
    unknown = verify(point, "no-such-point")
    assert unknown.returncode == 7
    assert unknown.stderr.strip() == "error: restore point no-such-point does not exist"
    with point.services.client() as api:
        assert api.post("/api/v1/restore-points/no-such-point/verify").status_code == 404
        assert api.get("/api/v1/restore-points/no-such-point/verify").status_code == 404


def test_a_table_knows_its_chunks_and_an_incremental_starts_from_its_parents(
    tmp_path: Path,
) -> None:
    chunk, capacity = 64 * 1024, 3 * 64 * 1024 + 10  # four chunks, the last short
    path = table_path(tmp_path / "full.qcow2")
    state = JobState(
        backup_id="b",
        context_id="c",
        disks={
            2000: DiskState(
                disk_key=2000,
                export_name="e",
                qcow2_path=str(tmp_path / "full.qcow2"),
                bytes_total=capacity,
                status=DiskStatus.COPIED,
                digests=TableWriter(path, capacity),
            )
        },
        client_status=JobStatus.COMPLETED,
        exit_code=0,
    )

    def digests(offset: int, raw: bytes) -> ChunkDigests:
        encoded = base64.b64encode(raw).decode()
        return ChunkDigests(
            job_id="b", disk_key=2000, chunk_size=chunk, offset=offset, digests=encoded
        )

    state.apply(digests(0, b"\x01" * 32))
    state.apply(digests(3 * chunk, b"\x03" * 16))
    state.apply(digests(0, b"\x01" * 16))  # again: counted once
    assert state.outcome() == (JobStatus.FAILED, "disk 2000: chunk digests cover 3 of 4 chunks")
    state.apply(digests(2 * chunk, b"\x02" * 16))
    assert state.outcome() == (JobStatus.COMPLETED, None)
    beyond = copy.deepcopy(state)  # digests beyond the disk's end fail the job
    beyond.apply(digests(4 * chunk, b"\x05" * 16))
    assert beyond.outcome()[0] == JobStatus.FAILED
    assert "do not fit 4 chunks" in (beyond.outcome()[1] or "")
    state.disks[2000].digests.close(sync=True)  # type: ignore[union-attr]

    reopened = TableWriter(path, capacity)  # a restarted hub's view
    assert reopened.complete and reopened.count == 4
    reopened.close()
    child = derive(path, table_path(tmp_path / "incr.qcow2"))
    assert child.complete
    child.put(chunk, chunk, b"\x09" * 16)  # a changed chunk replaces the parent's
    child.close()
    table = read_table(table_path(tmp_path / "incr.qcow2"))
    assert [table.digest(i)[:1] for i in range(4)] == [b"\x01", b"\x09", b"\x02", b"\x03"]
    assert read_table(path).digest(1) == b"\x01" * 16


@pytest.mark.slow
def test_a_point_being_verified_is_not_deleted(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    # The verification is held in its first qemu-img until the block ends.
    with qemu_img_held(settings, tmp_path) as held:
        verify = VerifyManager(held)
        restores = RestoreManager(
            settings, ExportManager.from_settings(settings), EventBus(), "t", verify.busy_points
        )
        assert verify.start(point.point_id).running
        with pytest.raises(Conflict) as refused:
            restores.delete_point(point.point_id)
        assert str(refused.value) == (
            f"point {point.point_id} is being verified: wait for the verification"
        )
    verify.shutdown()
    assert verify.busy_points() == set()
    assert all(qcow2.exists() for qcow2 in point.disks.values())


CHUNK = 256 * 1024
KiB, MiB = 1024, 1024 * 1024


def make_chain(folder: Path) -> tuple[Path, Path]:
    """An overlay on a compressed base, and the raw disk the chain reads as."""
    raw = folder / "base.raw"
    with raw.open("wb") as f:
        f.truncate(4 * MiB + 192 * KiB)  # the last chunk is short
        for offset, data in [
            (356 * KiB, os.urandom(300 * KiB)),  # starts and ends inside chunks
            (1 * MiB, os.urandom(1 * MiB)),
            (3 * MiB, b"x" * 128 * KiB),  # compresses: a cluster without a host offset
            (4 * MiB + 64 * KiB, os.urandom(64 * KiB)),
        ]:
            f.seek(offset)
            f.write(data)
    base, top = folder / "base.qcow2", folder / "top.qcow2"
    qemu = ["qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(base)]
    subprocess.run(qemu, check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base.name, "-F", "qcow2", str(top)],
        check=True,
    )
    writes = [
        "-c",
        f"write -P 7 {MiB + 64 * KiB} {64 * KiB}",
        "-c",
        f"write -z {MiB + 512 * KiB} {64 * KiB}",
    ]
    subprocess.run(["qemu-io", "-f", "qcow2", *writes, str(top)], check=True, capture_output=True)
    whole = folder / "disk.raw"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(top), str(whole)],
        check=True,
    )
    return top, whole


def table_of(raw: Path) -> Table:
    writer = TableWriter(table_path(raw), raw.stat().st_size)
    with raw.open("rb") as f:
        for offset in range(0, raw.stat().st_size, CHUNK):
            writer.put(CHUNK, offset, xxhash.xxh3_128_digest(f.read(CHUNK)))
    writer.close()
    return read_table(table_path(raw))


def check(top: Path, table: Table | None, run: Path) -> DiskCheck:
    disk = DiskCheck(
        2000, top, [top, top.parent / "base.qcow2"], table, DiskVerification(disk_key=2000)
    )
    assert check_structure("qemu-img", disk) is None
    read_disk("qemu-img", "qemu-nbd", run, disk, threading.Event())
    assert processes_mentioning(str(top), "qemu-nbd") == []
    return disk


def with_digest(table: Table, chunk: int, digest: bytes) -> Table:
    body = table.body[: chunk * 16] + digest + table.body[(chunk + 1) * 16 :]
    return Table(table.header, body)


def test_the_checker_reads_a_chain_as_qemu_does_and_finds_what_differs(tmp_path: Path) -> None:
    top, raw = make_chain(tmp_path)
    layout = map_disk("qemu-img", top)
    kinds = {(e.kind, e.file) for e in layout.extents}
    assert {(Kind.DATA, 0), (Kind.DATA, 1), (Kind.ZERO, -1), (Kind.OTHER, -1)} <= kinds
    table = table_of(raw)
    size = raw.stat().st_size

    good = check(top, table, tmp_path / "run")
    assert good.bad == {}
    assert (good.state.chunks, good.state.bytes_done) == (table.header.chunks, size)

    through_qemu = DiskCheck(2000, top, [top], table, DiskVerification(disk_key=2000))
    read_over_nbd("qemu-nbd", tmp_path / "run", through_qemu, None, threading.Event())
    assert (through_qemu.bad, through_qemu.state.chunks) == ({}, table.header.chunks)

    unread = check(top, None, tmp_path / "run")  # without a table: read, not compared
    assert (unread.bad, unread.state.chunks, unread.state.bytes_done) == ({}, 0, size)

    zero_chunk = 2 * MiB // CHUNK + 1  # reads as zeros, the table says data
    compressed = 3 * MiB // CHUNK  # read through qemu-nbd
    last = table.header.chunks - 1
    wrong = table
    for chunk in (zero_chunk, compressed, last):
        wrong = with_digest(wrong, chunk, b"\x01" * 16)
    found = check(top, wrong, tmp_path / "run")
    assert found.bad == {zero_chunk: ZEROES, compressed: DIFFERS, last: DIFFERS}
    assert damaged_ranges(found)[-1].length == size - last * CHUNK

    # One flipped byte of the base's data, under the overlay: its chunk and no other.
    under = next(e for e in layout.extents if e.kind is Kind.DATA and e.file == 1)
    with (tmp_path / "base.qcow2").open("r+b") as f:
        f.seek(under.offset + 5)
        byte = f.read(1)
        f.seek(under.offset + 5)
        f.write(bytes([byte[0] ^ 0x20]))
    flipped = check(top, table, tmp_path / "run")
    assert flipped.bad == {(under.start + 5) // CHUNK: DIFFERS}
