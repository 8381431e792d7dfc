"""What a copy is asked to do (``CopyOptions``) and what it tells as it goes (``Progress``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import Cancelled

if TYPE_CHECKING:  # the settings pull in pydantic: not needed to copy
    from engine.config import CopySettings


class CopyCancelled(Cancelled):
    """The copy stopped because it was asked to (its ``cancel`` event was set)."""


@dataclass(frozen=True)
class CopyOptions:
    connections: int = 4
    requests_in_flight: int = 16
    request_size: int = 1024 * 1024
    # A fresh qcow2 reads as zeroes: zero runs need no command at all.
    target_is_zero: bool = False
    # Bytes per second across all connections; None copies as fast as the ends allow.
    max_rate_bps: float | None = None
    # Zero runs inside a read block are found at this granularity (nbdcopy's --sparse),
    # so that a block half data, half zeroes leaves the zero half unallocated. 64 KiB is
    # the qcow2 cluster: finer only sends more commands to a target that allocates whole
    # clusters anyway, and checking 4 KiB pieces from Python costs ~25x more CPU.
    sparse_size: int = 64 * 1024
    # Take a digest of every chunk of this size (verification; ``copy``'s ``digests``
    # callback gets them); None takes none. Backups ask, restores do not.
    chunk_size: int | None = None

    @classmethod
    def from_settings(cls, s: CopySettings, **overrides: object) -> CopyOptions:
        values: dict[str, object] = {
            "connections": s.connections,
            "requests_in_flight": s.requests_in_flight,
            "request_size": s.request_size,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Progress:
    disk: str
    bytes_done: int
    bytes_total: int
    bytes_zero: int
    rate_bps: float
    connections: int = 1


ProgressCallback = Callable[[Progress], None]
