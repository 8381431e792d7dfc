"""What an NBD server says of a disk's allocation: shared by the copier (which skips
what reads as zero) and the hub's verification (whose NBD fallback does the same)."""

from __future__ import annotations

import nbd


def allocation(h: nbd.NBD, count: int, offset: int) -> list[tuple[int, int]]:
    """``base:allocation`` from ``offset`` as (length, flags) pairs; may cover less than asked."""
    found: list[tuple[int, int]] = []

    def collect(ctx: str, off: int, entries: list[int], err: object) -> int:
        if ctx == nbd.CONTEXT_BASE_ALLOCATION:
            found.extend(zip(entries[::2], entries[1::2], strict=True))
        return 0

    h.block_status(count, offset, collect)
    return found
