"""Where the data is: extents, the work units a disk is cut into, and the zero runs inside
a block read (the source's allocation map: engine/block_status.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import nbd

WORK_UNIT = 128 * 1024 * 1024


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int


def work_units(extents: Sequence[Extent], unit: int = WORK_UNIT) -> Iterator[Extent]:
    for ext in extents:
        end = ext.offset + ext.length
        off = ext.offset
        while off < end:
            n = min(unit, end - off)
            yield Extent(off, n)
            off += n


def zero_runs(buf: nbd.Buffer, granule: int) -> list[tuple[int, int, bool]]:
    """(start, end, all-zero) runs of ``buf`` at ``granule`` bytes, neighbours merged.

    The whole-buffer check first: most blocks are all data or all zero, and
    ``is_zero`` stops at the first non-zero byte, so data blocks cost little.
    """
    size = len(buf)
    if buf.is_zero():
        return [(0, size, True)]
    runs: list[tuple[int, int, bool]] = []
    for start in range(0, size, granule):
        end = min(start + granule, size)
        zero = buf.is_zero(start, end - start)
        if runs and runs[-1][2] == zero:
            runs[-1] = (runs[-1][0], end, zero)
        else:
            runs.append((start, end, zero))
    return runs
