"""Chunk digests as the copier copies (engine/contract/verify.py): every decision on
chunk boundaries, so that each chunk is either read whole in one block or known zero
whole, and its digest (xxh3-128) is taken from what the source gave.

A work unit's digests are collected in its ``UnitDigests``, touched only by the loop
thread that drives the unit's connection (completions run there too), and handed to the
``Digests`` queue once every chunk of the unit is in; the report loop takes them from
there, so the caller's callback never runs inside libnbd's.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence

import nbd
import xxhash

from engine.node.copier.extents import Extent

DIGEST_SIZE = 16

# The caller's callback: the digests of consecutive chunks from ``offset``, 16 bytes each.
DigestsCallback = Callable[[int, bytes], None]


@functools.cache
def zero_digest(length: int) -> bytes:
    """The digest of ``length`` zero bytes: a disk has at most two lengths of chunk."""
    return xxhash.xxh3_128(bytes(length)).digest()


def read_size(request_size: int, chunk: int) -> int:
    """A read's size: whole chunks, at least one."""
    return max(chunk, -(-request_size // chunk) * chunk)


def align_extents(extents: Sequence[Extent], chunk: int, size: int) -> list[Extent]:
    """The extents grown to whole chunks (the disk's end closes the last), merged where
    they now touch: an incremental's changed areas read a little more, never less."""
    out: list[Extent] = []
    for e in sorted(extents, key=lambda e: e.offset):
        if not e.length:
            continue
        start = e.offset - e.offset % chunk
        end = min(size, -(-(e.offset + e.length) // chunk) * chunk)
        if out and start <= out[-1].offset + out[-1].length:
            last = out[-1]
            out[-1] = Extent(last.offset, max(end, last.offset + last.length) - last.offset)
        else:
            out.append(Extent(start, end - start))
    return out


def align_allocation(
    parts: Iterable[tuple[Extent, bool]], chunk: int, end: int
) -> Iterator[tuple[Extent, bool]]:
    """A unit's allocation map (contiguous parts) with zero only for whole chunks: a chunk
    with any data is read whole. ``end`` (the unit's end) closes a short last chunk.
    Neighbours of the same kind are merged."""
    run: list[int] | None = None  # [start, stop, zero]
    for ext, zero in parts:
        s, e = ext.offset, ext.offset + ext.length
        pieces = [(s, e, False)]
        if zero:
            zs = -(-s // chunk) * chunk
            ze = e if e == end else e - e % chunk
            if ze > zs:
                pieces = [(s, zs, False), (zs, ze, True), (ze, e, False)]
        for ps, pe, pz in pieces:
            if pe <= ps:
                continue
            if run is not None and run[2] == pz:
                run[1] = pe
                continue
            if run is not None:
                yield Extent(run[0], run[1] - run[0]), bool(run[2])
            run = [ps, pe, pz]
    if run is not None:
        yield Extent(run[0], run[1] - run[0]), bool(run[2])


class UnitDigests:
    """The digests of one work unit's chunks, filled in any order."""

    __slots__ = ("chunk", "left", "offset", "out", "table")

    def __init__(self, unit: Extent, chunk: int, out: collections.deque[tuple[int, bytes]]):
        self.offset = unit.offset
        self.chunk = chunk
        self.left = -(-unit.length // chunk)
        self.table = bytearray(self.left * DIGEST_SIZE)
        self.out = out

    def zero(self, ext: Extent) -> None:
        chunk = self.chunk
        full = zero_digest(chunk)
        for pos in range(ext.offset, ext.offset + ext.length, chunk):
            n = min(chunk, ext.offset + ext.length - pos)
            self._put(pos, full if n == chunk else zero_digest(n))

    def read(self, buf: nbd.Buffer, offset: int) -> None:
        view = memoryview(buf.to_buffer())
        chunk = self.chunk
        hash_ = xxhash.xxh3_128_digest
        for start in range(0, len(view), chunk):
            self._put(offset + start, hash_(view[start : start + chunk]))

    def _put(self, offset: int, digest: bytes) -> None:
        i = (offset - self.offset) // self.chunk * DIGEST_SIZE
        self.table[i : i + DIGEST_SIZE] = digest
        self.left -= 1
        if not self.left:
            self.out.append((self.offset, bytes(self.table)))


class Digests:
    """A copy's digests: units that completed wait here for the report loop."""

    def __init__(self, chunk: int, callback: DigestsCallback) -> None:
        self.chunk = chunk
        self.callback = callback
        self.ready: collections.deque[tuple[int, bytes]] = collections.deque()

    def unit(self, unit: Extent) -> UnitDigests:
        return UnitDigests(unit, self.chunk, self.ready)

    def deliver(self) -> None:
        """Hand every completed unit to the callback (the report loop's thread)."""
        while self.ready:
            offset, table = self.ready.popleft()
            self.callback(offset, table)
