"""One disk under verification, shared by its two readers (straight from the files,
engine/hub/verify/direct.py, and through qemu, engine/hub/verify/over_nbd.py): what it
expects (its table), what was found wrong, and how far it got."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from engine.contract.verify import DiskVerification
from engine.errors import SendenseError
from engine.hub.verify.table import Table

DIFFERS = "chunk digest differs from what the copier read"
ZEROES = "reads as zeroes where the copier read data"


class VerifyStopped(SendenseError):
    """The verification was stopped (the hub shutting down)."""


@functools.cache
def zeros_digest(length: int) -> bytes:
    return xxhash.xxh3_128(bytes(length)).digest()


@dataclass
class DiskCheck:
    """One disk of the point: its files (the qcow2 first, then its chain's), its table."""

    disk_key: int
    qcow2: Path
    files: list[Path]
    table: Table | None
    state: DiskVerification
    bad: dict[int, str] = field(default_factory=dict)  # chunk index -> why
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sized(self, size: int) -> int:
        """The disk is of ``size`` bytes: its table must be of as many."""
        self.state.bytes_total = size
        if self.table is not None and self.table.header.capacity != size:
            raise SendenseError(
                f"disk {self.disk_key}: its digest table is of {self.table.header.capacity}"
                f" bytes, the disk of {size}"
            )
        return size

    def done(self, n: int, chunks: int = 0) -> None:
        with self.lock:
            self.state.bytes_done += n
            self.state.chunks += chunks

    def compare(self, index: int, digest: bytes, reason: str = DIFFERS) -> None:
        """Chunk ``index`` read as ``digest``; a table that says otherwise is damage."""
        assert self.table is not None
        if digest != self.table.digest(index):
            self.bad.setdefault(index, reason)

    def compare_zeros(self, index: int, length: int) -> None:
        self.compare(index, zeros_digest(length), ZEROES)
