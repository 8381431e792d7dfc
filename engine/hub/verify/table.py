"""A disk's digest table, beside its qcow2 (``<qcow2>.digests``): what ``verify``
compares a point's chunks with (engine/contract/verify.py).

The file is a 64-byte header (magic, algorithm, chunk size, capacity) and then 16 bytes
per chunk, chunk ``i`` at ``HEADER + 16 * i``. An entry of sixteen zero bytes was never
written (no real xxh3-128 digest is that, but for a 2^-128 chance), so a table left by a
restarted hub still knows which chunks it has, and a fresh one is a sparse file.

An incremental point's table starts as a copy of its parent's (``derive``): its
unchanged chunks are the parent's, so it is complete without re-reading them.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.contract.verify import DIGEST_ALGORITHM, DIGEST_SIZE

MAGIC = b"SDDIGEST"
VERSION = 1
_HEADER = struct.Struct("<8sI16sQQ")
HEADER_SIZE = 64
_EMPTY = bytes(DIGEST_SIZE)


class TableError(ValueError):
    """A table file that is not one, or digests that do not fit it."""


def table_path(qcow2: Path | str) -> Path:
    return Path(f"{qcow2}.digests")


@dataclass(frozen=True)
class Header:
    chunk_size: int
    capacity: int

    @property
    def chunks(self) -> int:
        return -(-self.capacity // self.chunk_size)

    def pack(self) -> bytes:
        raw = _HEADER.pack(
            MAGIC, VERSION, DIGEST_ALGORITHM.encode(), self.chunk_size, self.capacity
        )
        return raw.ljust(HEADER_SIZE, b"\0")

    @classmethod
    def unpack(cls, raw: bytes, path: Path) -> Header:
        if len(raw) < HEADER_SIZE:
            raise TableError(f"{path}: not a digest table (too short)")
        magic, version, algo, chunk, capacity = _HEADER.unpack_from(raw)
        if magic != MAGIC or version != VERSION:
            raise TableError(f"{path}: not a digest table (magic {magic!r}, version {version})")
        if algo.rstrip(b"\0").decode(errors="replace") != DIGEST_ALGORITHM or chunk <= 0:
            raise TableError(f"{path}: digests of {algo!r} in {chunk}-byte chunks, not ours")
        return cls(chunk, capacity)


class TableWriter:
    """Takes a disk's ``chunk_digests`` lines at their offsets, in any order, and knows
    which chunks it has. The file is made by the first line (its chunk size is the
    copier's), or is an existing table (a restarted hub, or ``derive``)."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        self.header: Header | None = None
        self.have: bytearray = bytearray()
        self.count = 0
        self._fd: int | None = None
        if path.exists():
            self._open_existing()

    def _open_existing(self) -> None:
        table = read_table(self.path)
        if table.header.capacity != self.capacity:
            raise TableError(
                f"{self.path}: a table of {table.header.capacity} bytes, "
                f"not of this {self.capacity}-byte disk"
            )
        self.header = table.header
        self.have = bytearray(
            table.body[i : i + DIGEST_SIZE] != _EMPTY
            for i in range(0, len(table.body), DIGEST_SIZE)
        )
        self.count = sum(self.have)
        self._fd = os.open(self.path, os.O_RDWR)

    def _create(self, chunk_size: int) -> None:
        self.header = Header(chunk_size, self.capacity)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
        os.pwrite(self._fd, self.header.pack(), 0)
        os.ftruncate(self._fd, HEADER_SIZE + self.header.chunks * DIGEST_SIZE)
        self.have = bytearray(self.header.chunks)

    @property
    def chunks(self) -> int | None:
        return self.header.chunks if self.header else None

    @property
    def complete(self) -> bool:
        return self.header is not None and self.count == self.header.chunks

    def describe(self) -> str:
        """What the table covers, for a failed job's reason."""
        if self.header is None:
            return "no chunk digests were recorded"
        return f"chunk digests cover {self.count} of {self.header.chunks} chunks"

    def put(self, chunk_size: int, offset: int, digests: bytes) -> None:
        if self.header is None:
            self._create(chunk_size)
        assert self.header is not None
        if self._fd is None:  # a line after the job ended
            raise TableError(f"{self.path}: the table is closed")
        if chunk_size != self.header.chunk_size:
            raise TableError(
                f"chunk digests of {chunk_size}-byte chunks, the table has "
                f"{self.header.chunk_size}-byte chunks"
            )
        first, rest = divmod(offset, chunk_size)
        n = len(digests) // DIGEST_SIZE
        if rest or len(digests) % DIGEST_SIZE or first + n > self.header.chunks:
            raise TableError(
                f"chunk digests at offset {offset} ({len(digests)} bytes) do not fit "
                f"{self.header.chunks} chunks of {chunk_size} bytes"
            )
        os.pwrite(self._fd, digests, HEADER_SIZE + first * DIGEST_SIZE)
        for i in range(first, first + n):
            if not self.have[i]:
                self.have[i] = 1
                self.count += 1

    def close(self, sync: bool = False) -> None:
        if self._fd is not None:
            if sync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class Table:
    header: Header
    body: bytes  # 16 bytes per chunk

    def digest(self, chunk: int) -> bytes:
        return self.body[chunk * DIGEST_SIZE : (chunk + 1) * DIGEST_SIZE]


def read_table(path: Path) -> Table:
    """A whole table (16 MiB per TiB at 1 MiB chunks); TableError when it is not one."""
    raw = path.read_bytes()
    header = Header.unpack(raw, path)
    body = raw[HEADER_SIZE:]
    if len(body) != header.chunks * DIGEST_SIZE:
        raise TableError(f"{path}: {len(body)} bytes of digests, not {header.chunks * 16}")
    return Table(header, body)


def derive(parent_table: Path, new_path: Path) -> TableWriter:
    """An incremental's table: its parent's, to be written over where chunks changed."""
    header = read_table(parent_table).header
    shutil.copyfile(parent_table, new_path)
    return TableWriter(new_path, header.capacity)


def remove_table(qcow2: Path) -> None:
    table_path(qcow2).unlink(missing_ok=True)
