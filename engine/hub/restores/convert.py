"""qemu-img for disk restores: what a point's chain holds, the room an image of it takes,
the ``convert`` command that writes it, and how far that command got.

Speed (bench/bench_restore.py measures it against a plain ``qemu-img convert -O raw``):
out-of-order writes (``-W``) with qemu-img's most coroutines (``-m 16``) keep many reads
of the chain in flight, and copy offloading (``-C``, copy_file_range) leaves the data
to the kernel. Writes go through the page cache: ``O_DIRECT`` (``-t none``) measured
slower, and waiting for the data to reach the disk costs as much as the copy; a restore
waits for that only where it replaces a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
from pathlib import Path

from engine.contract.status import DiskFormat
from engine.errors import NotFound, SendenseError
from engine.hub.exports.images import QCOW2_MAGIC

MiB = 1024 * 1024
COROUTINES = 16  # qemu-img's maximum
# ``qemu-img convert -p`` prints ``    (12.34/100%)\r`` as it takes up chunks.
PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
QCOW2_HEADER = 20  # magic, version, backing file offset (u64) and size (u32)


def size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / MiB:.1f} MiB"


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def data_bytes(qemu_img: str, qcow2: Path) -> int:
    """What the point's chain holds as data (not holes, not zeroes)."""
    done = subprocess.run(
        [qemu_img, "map", "--output=json", "-f", "qcow2", str(qcow2)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SendenseError(f"qemu-img cannot read {qcow2}: {one_line(done.stderr)}")
    return sum(e["length"] for e in json.loads(done.stdout) if e["data"] and not e["zero"])


def backing_file(qcow2: Path) -> Path | None:
    """The qcow2's backing file, from its header (no qemu-img started for it)."""
    with open(qcow2, "rb") as fh:
        header = fh.read(QCOW2_HEADER)
        if len(header) < QCOW2_HEADER or header[:4] != QCOW2_MAGIC:
            raise SendenseError(f"{qcow2} is not a qcow2 image")
        offset, size = struct.unpack(">QI", header[8:20])
        if not offset or not size:
            return None
        fh.seek(offset)
        name = os.fsdecode(fh.read(size))
    return qcow2.parent / name  # a relative name is relative to the overlay's folder


def chain_bytes(qcow2: Path) -> int:
    """What the files of the chain take on disk: more than the data it holds, never less."""
    total, seen = 0, set()
    current: Path | None = qcow2
    while current is not None and current not in seen:
        seen.add(current)
        try:
            total += current.stat().st_blocks * 512
            current = backing_file(current)
        except FileNotFoundError:
            raise NotFound(f"the restore point's file {current} is missing") from None
        except OSError as exc:
            raise SendenseError(f"cannot read {current}: {exc.strerror}") from None
    return total


def needed_bytes(fmt: DiskFormat, data: int, capacity: int) -> int:
    """Room the image takes at most: its data, the format's tables, and a MiB to spare."""
    if fmt == DiskFormat.QCOW2:  # L2 tables and refcounts: 8 + 2 bytes a 64 KiB cluster
        return data + capacity // 4096 + MiB
    if fmt == DiskFormat.VMDK:  # grain tables, and a marker a 64 KiB grain
        return data + data // 64 + capacity // 8192 + MiB
    return data + MiB


def part_path(target: Path, restore_id: str) -> Path:
    """The temporary file beside ``target`` (found again from the job after a restart)."""
    digest = hashlib.sha256(restore_id.encode()).hexdigest()[:12]
    return target.with_name(f".{target.name[:180]}.{digest}.part")


def convert_argv(
    qemu_img: str, source: Path, output: Path, fmt: DiskFormat, *, max_rate_mib: float | None
) -> list[str]:
    """A standalone image (no ``-B``: nothing of the chain stays a backing file)."""
    argv = [qemu_img, "convert", "-p", "-f", "qcow2", "-O", fmt.value]
    if fmt == DiskFormat.VMDK:
        # Compressed grains, in order; out-of-order writes gain nothing here.
        argv += ["-o", "subformat=streamOptimized"]
    else:
        argv += ["-W", "-m", str(COROUTINES)]
    if max_rate_mib is not None:
        argv += ["-r", str(int(max_rate_mib * MiB))]
    elif fmt != DiskFormat.VMDK:
        # copy_file_range: the kernel moves the data clusters, no copy through qemu-img's
        # buffers (holes and zero clusters are still skipped by the chain's block status).
        # qemu-img ignores -r with it, so a throttled restore goes without.
        argv += ["-C"]
    return [*argv, str(source), str(output)]


def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    """qemu-img that dies with the thread that started it (a hub that crashed leaves no
    qemu-img writing: util-linux's setpriv sets the parent-death signal and execs it, so
    Python can vfork instead of copying the hub's memory for a preexec function), in a
    process group of its own (a signal to the hub's group reaches the hub, which ends
    its restores itself)."""
    return subprocess.Popen(
        ["setpriv", "--pdeathsig", "TERM", "--", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,
    )


def written_bytes(pid: int) -> int:
    """What a process has written so far (``wchar``: bytes passed to write calls)."""
    try:
        with open(f"/proc/{pid}/io", "rb") as fh:
            for line in fh:
                if line.startswith(b"wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def on_disk(path: Path) -> None:
    """The file's data on the disk, not only in the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
