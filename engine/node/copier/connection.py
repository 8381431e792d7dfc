"""One disk's copy as its connections share it (``DiskJob``), and what one connection (a
source handle and a target handle) does with its share (``Connection``)."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import nbd

from engine.block_status import allocation
from engine.errors import CopyError
from engine.node.copier.digests import Digests, UnitDigests, align_allocation, read_size
from engine.node.copier.extents import Extent, work_units, zero_runs
from engine.node.copier.options import CopyOptions


class Stopped(Exception):
    """Raised inside a connection when another connection failed or the copy was cancelled."""


class DiskJob:
    """State shared by the connections copying one disk: units left, counters, first error."""

    def __init__(
        self,
        disk: str,
        extents: Sequence[Extent],
        opts: CopyOptions,
        digests: Digests | None = None,
    ) -> None:
        self.disk = disk
        self.opts = opts
        # With digests, reads hold whole chunks (``digests`` has the why).
        self.digests = digests
        self.read_size = (
            read_size(opts.request_size, digests.chunk) if digests else opts.request_size
        )
        self.units = collections.deque(work_units(extents))
        self.total = sum(e.length for e in extents)
        # Each connection counts its own bytes (one writer per counter, no lock per
        # command); progress sums them.
        self.conns: list[Connection] = []
        self.issued = 0
        self.started = time.monotonic()
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def next_unit(self) -> Extent | None:
        try:
            return self.units.popleft()
        except IndexError:
            return None

    def counts(self) -> tuple[int, int]:
        """Bytes settled so far, and of those how many were zero."""
        conns = list(self.conns)
        return sum(c.done for c in conns), sum(c.zero for c in conns)

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def due(self, n: int) -> float:
        """When the next read of ``n`` bytes may go out to keep under the rate limit."""
        rate = self.opts.max_rate_bps
        if not rate:
            return 0.0
        with self.lock:
            self.issued += n
            return self.started + self.issued / rate


@dataclass
class _Shared:
    """A read buffer lent to several writes (its data runs): back to the pool after the last."""

    buf: nbd.Buffer
    writes: int = 0


def _errno(err: object) -> int:
    return int(getattr(err, "value", 0) or 0)


@dataclass
class Connection:
    """One source handle and one target handle.

    Its work is a generator (``steps``) that issues reads and yields whenever it has to
    wait, so that one loop (``engine._drive``) on one thread runs several connections instead of
    a thread each fighting over the GIL. Completions act at once, inside libnbd's
    callback: a finished read goes straight out as writes (another handle, which libnbd
    allows), a finished write returns its buffer. A failed command is kept in ``error``
    for the loop to raise: an exception must not cross libnbd's C callback.
    """

    job: DiskJob
    src: nbd.NBD
    dst: nbd.NBD
    free: list[nbd.Buffer] = field(default_factory=list)
    in_flight: int = 0
    done: int = 0
    zero: int = 0
    error: Exception | None = None
    wake_at: float = 0.0

    def steps(self) -> Iterator[None]:
        job = self.job
        while not job.stop.is_set():
            unit = job.next_unit()
            if unit is None:
                break
            parts = self._extents(unit)
            sums = None
            if job.digests is not None:
                sums = job.digests.unit(unit)
                parts = align_allocation(parts, sums.chunk, unit.offset + unit.length)
            for ext, zero in parts:
                if zero:
                    if sums is not None:
                        sums.zero(ext)
                    yield from self._zero_run(ext)
                else:
                    yield from self._data_run(ext, sums)
        while self.in_flight and not job.stop.is_set():
            yield

    def _extents(self, unit: Extent) -> Iterator[tuple[Extent, bool]]:
        """The unit split into (extent, reads-as-zero) by the source's allocation map.

        A unit no larger than one read is read as it is: asking the map costs a round trip
        (the loop waits for it) as long as the read would, and the read's zero runs are
        found in its buffer anyway. An incremental's many small changed areas gain most.
        """
        if unit.length <= self.job.read_size or not self.src.can_meta_context(
            nbd.CONTEXT_BASE_ALLOCATION
        ):
            yield unit, False
            return
        pos = unit.offset
        end = unit.offset + unit.length
        while pos < end:
            try:
                found = allocation(self.src, end - pos, pos)
            except nbd.Error as exc:
                raise CopyError(
                    f"disk {self.job.disk}: block status at offset {pos} failed: {exc.string}"
                ) from None
            if not found:
                yield Extent(pos, end - pos), False
                return
            for length, flags in found:
                n = min(length, end - pos)
                if n <= 0:
                    break
                yield Extent(pos, n), bool(flags & nbd.STATE_ZERO)
                pos += n

    def _zero_run(self, ext: Extent) -> Iterator[None]:
        if self.job.opts.target_is_zero:
            self._settle(ext.length, zero=True)
            return
        yield from self._slot()
        self._issue_zero(ext.offset, ext.length)

    def _data_run(self, ext: Extent, sums: UnitDigests | None) -> Iterator[None]:
        size = self.job.read_size
        throttled = bool(self.job.opts.max_rate_bps)
        off = ext.offset
        end = ext.offset + ext.length
        while off < end:
            n = min(size, end - off)
            if throttled:
                self.wake_at = self.job.due(n)
                while self.wake_at > time.monotonic():
                    yield
            yield from self._slot()
            buf = self.free.pop() if n == size and self.free else nbd.Buffer(n)
            self.in_flight += 1
            self.src.aio_pread(buf, off, completion=self._read_done(buf, off, sums))
            off += n

    def _slot(self) -> Iterator[None]:
        """Wait until fewer than ``requests_in_flight`` commands are out: the memory bound.

        Buffers are held only by commands in flight, so at most that many exist.
        """
        while self.in_flight >= self.job.opts.requests_in_flight:
            yield
        if self.job.stop.is_set():
            raise Stopped

    def _settle(self, n: int, zero: bool) -> None:
        self.done += n
        if zero:
            self.zero += n

    def _release(self, buf: nbd.Buffer) -> None:
        if len(buf) == self.job.read_size:
            self.free.append(buf)

    def _failed(self, kind: str, offset: int, length: int, errno: int) -> None:
        if self.error is None:
            end = "source" if kind == "read" else "target"
            self.error = CopyError(
                f"disk {self.job.disk}: {kind} of {length} bytes at offset {offset} "
                f"failed on the {end}: {os.strerror(errno)}"
            )

    def _read_done(
        self, buf: nbd.Buffer, offset: int, sums: UnitDigests | None
    ) -> Callable[[object], int]:
        def completion(err: object) -> int:
            self.in_flight -= 1
            errno = _errno(err)
            if errno:
                self._failed("read", offset, len(buf), errno)
                return 1
            try:
                if sums is not None:
                    sums.read(buf, offset)
                self._route(buf, offset)
            except nbd.Error as exc:  # the target refused a command at once: it is dead
                self.error = self.error or CopyError(f"disk {self.job.disk}: {exc.string}")
            except Exception as exc:  # anything unforeseen still ends the copy, reported
                self.error = self.error or exc
            return 1

        return completion

    def _write_done(
        self, buf: nbd.Buffer | None, offset: int, length: int, shared: _Shared | None
    ) -> Callable[[object], int]:
        def completion(err: object) -> int:
            self.in_flight -= 1
            errno = _errno(err)
            if errno:
                self._failed("write" if buf is not None else "zero", offset, length, errno)
                return 1
            if shared is not None:
                shared.writes -= 1
                if not shared.writes:
                    self._release(shared.buf)
            elif buf is not None:
                self._release(buf)
            self._settle(length, zero=buf is None)
            return 1

        return completion

    def _issue_zero(self, off: int, n: int) -> None:
        self.in_flight += 1
        self.dst.aio_zero(n, off, completion=self._write_done(None, off, n, None))

    def _issue_write(self, buf: nbd.Buffer, off: int, shared: _Shared | None) -> None:
        self.in_flight += 1
        self.dst.aio_pwrite(buf, off, completion=self._write_done(buf, off, len(buf), shared))

    def _route(self, buf: nbd.Buffer, offset: int) -> None:
        """Send a block read from the source on: data runs as writes, zero runs as zero
        commands (or nothing, on a target known to be zero). Every byte is checked."""
        runs = zero_runs(buf, self.job.opts.sparse_size)
        if len(runs) == 1 and not runs[0][2]:
            self._issue_write(buf, offset, None)
            return
        # The route holds the buffer too, until every run is issued: a write that
        # completed at once must not hand it back while later runs still need it.
        shared = _Shared(buf, writes=1)
        view = memoryview(buf.to_buffer())
        for start, end, zero in runs:
            if not zero:
                shared.writes += 1
                sub = nbd.Buffer.from_buffer(view[start:end])
                self._issue_write(sub, offset + start, shared)
            elif self.job.opts.target_is_zero:
                self._settle(end - start, zero=True)
            else:
                self._issue_zero(offset + start, end - start)
        shared.writes -= 1
        if not shared.writes:
            self._release(buf)
