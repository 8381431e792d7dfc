"""Where a disk's bytes are, the way qemu reads them: ``qemu-img map`` of the point's
qcow2 (metadata only, no data read) says, per guest extent, whether it reads as zeros,
or which file of the chain holds it and at what host offset.

That lets ``verify`` read a point's data straight from its files, as qemu would, rather
than through an NBD export: reading through qemu-nbd cost three times what reading the
files costs. What the map cannot place exactly (a compressed or encrypted cluster, a
file that is not a plain qcow2, data beyond a file's end) is ``Kind.OTHER``: that part
is read through qemu after all.
"""

from __future__ import annotations

import enum
import json
import os
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from engine.errors import SendenseError
from engine.hub.restores.convert import backing_file

QCOW2_MAGIC = b"QFI\xfb"
_EXTERNAL_DATA_FILE = 1 << 2  # incompatible feature: the clusters live in another file


class Kind(enum.Enum):
    ZERO = "zero"  # reads as zeros
    DATA = "data"  # bytes at ``offset`` of ``file``
    OTHER = "other"  # only qemu can read it


@dataclass(frozen=True)
class Extent:
    start: int
    length: int
    kind: Kind
    file: int = -1  # index into Layout.files
    offset: int = 0

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class Layout:
    size: int
    files: list[Path]  # depth 0 (the point's qcow2), 1 (its backing file), ...
    extents: list[Extent]  # in guest order, covering [0, size)


def map_disk(qemu_img: str, qcow2: Path) -> Layout:
    """The disk's layout; SendenseError when qemu cannot map it (then only qemu can read
    it, and the caller reads it through an export)."""
    proc = subprocess.run(
        [qemu_img, "map", "--output=json", "-f", "qcow2", str(qcow2)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise SendenseError(f"qemu-img map failed: {lines[-1] if lines else proc.returncode}")
    files, plain = _chain(qcow2)
    sizes = [os.stat(f).st_size if ok else 0 for f, ok in zip(files, plain, strict=True)]
    extents: list[Extent] = []
    pos = 0
    for entry in json.loads(proc.stdout):
        start, length = int(entry["start"]), int(entry["length"])
        if start != pos or length <= 0:
            raise SendenseError(f"qemu-img map of {qcow2}: a gap at {pos}")
        extents.append(_extent(entry, start, length, plain, sizes))
        pos = start + length
    return Layout(pos, files, extents)


def _extent(
    entry: dict[str, object], start: int, length: int, plain: list[bool], sizes: list[int]
) -> Extent:
    if entry.get("zero"):
        return Extent(start, length, Kind.ZERO)
    depth, offset = entry.get("depth"), entry.get("offset")
    if (
        entry.get("data")
        and not entry.get("compressed")
        and isinstance(depth, int)
        and isinstance(offset, int)
        and 0 <= depth < len(plain)
        and plain[depth]
        and offset + length <= sizes[depth]
    ):
        return Extent(start, length, Kind.DATA, depth, offset)
    return Extent(start, length, Kind.OTHER)


def _chain(qcow2: Path) -> tuple[list[Path], list[bool]]:
    """The chain's files as qemu opens them, each with whether a map's host offset is
    an offset in that very file (a qcow2 without an external data file)."""
    files: list[Path] = []
    plain: list[bool] = []
    current: Path | None = qcow2
    while current is not None and current not in files and len(files) < 64:
        files.append(current)
        ok = _plain_qcow2(current)
        plain.append(ok)
        current = backing_file(current) if ok else None
    return files, plain


def _plain_qcow2(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            header = fh.read(104)
    except OSError:
        return False
    if len(header) < 72 or header[:4] != QCOW2_MAGIC:
        return False
    if struct.unpack(">I", header[32:36])[0]:  # encrypted: host bytes are not guest bytes
        return False
    version = struct.unpack(">I", header[4:8])[0]
    if version < 3:
        return True
    return len(header) >= 80 and not struct.unpack(">Q", header[72:80])[0] & _EXTERNAL_DATA_FILE
