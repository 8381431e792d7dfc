"""Copy a list of extents from one NBD export to another with libnbd's asynchronous API.

Modelled on nbdcopy: the disk is cut into work units (128 MiB); each connection takes
units in turn, asks the source which parts are allocated (``base:allocation``), reads
the data parts in fixed-size requests with a bounded number in flight (so memory is
``connections * requests_in_flight * request_size`` whatever the disk size), checks
every read block with ``Buffer.is_zero`` (every byte, never a sample), and writes data,
sends zero commands, or skips zeroes when the target is known to be zero already.

The input is a list of extents, so a full copy (the whole disk) and an incremental copy
(the changed areas from CBT) are the same code.
"""

from __future__ import annotations

import collections
import os
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import nbd

from engine.errors import Cancelled, CopyError

if TYPE_CHECKING:  # the settings pull in pydantic: not needed to copy
    from engine.config import CopySettings

WORK_UNIT = 128 * 1024 * 1024
LOOPS = 2


class CopyCancelled(Cancelled):
    """The copy stopped because it was asked to (its ``cancel`` event was set)."""


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int


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


def open_handle(uri: str, disk: str, role: str, *, meta: bool = False) -> nbd.NBD:
    """A connected libnbd handle; a failure names the disk and which end could not be reached."""
    h = nbd.NBD()
    h.set_handle_name(f"{disk}-{role}")
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    # libnbd zeroes every read buffer first by default (a guard for callers that use a
    # buffer after a failed read); a failed read here stops the copy, so skip the memset.
    h.set_pread_initialize(False)
    try:
        h.connect_uri(uri)
    except nbd.Error as exc:
        raise CopyError(f"disk {disk}: cannot connect to {role} {uri}: {exc.string}") from None
    return h


def open_all(specs: list[tuple[str, str, bool]], disk: str, opened: list[nbd.NBD]) -> list[nbd.NBD]:
    """Handles for (uri, role, meta) specs, connected at the same time; each lands in
    ``opened`` (for the caller to close) and the first failure in spec order is raised.

    A TCP handshake with qemu-nbd spends ~40 ms waiting (small messages, delayed ACKs),
    so eight handles one after another cost a third of a second; libnbd releases the
    GIL while it connects, so threads overlap the waits.
    """
    if not specs:
        return []
    with ThreadPoolExecutor(len(specs)) as pool:
        futures = [
            pool.submit(open_handle, uri, disk, role, meta=meta) for uri, role, meta in specs
        ]
    handles: list[nbd.NBD] = []
    failure: BaseException | None = None
    for future in futures:
        exc = future.exception()
        if exc is None:
            handles.append(future.result())
        else:
            failure = failure or exc
    opened.extend(handles)
    if failure is not None:
        raise failure
    return handles


def close_handle(h: nbd.NBD) -> None:
    """Disconnect politely (servers log a bare hang-up as an error); libnbd frees on GC."""
    try:
        if h.aio_is_ready() or h.aio_is_processing():
            h.shutdown(nbd.SHUTDOWN_ABANDON_PENDING)
    except nbd.Error:
        pass


def allocation(h: nbd.NBD, count: int, offset: int) -> list[tuple[int, int]]:
    """``base:allocation`` from ``offset`` as (length, flags) pairs; may cover less than asked."""
    found: list[tuple[int, int]] = []

    def collect(ctx: str, off: int, entries: list[int], err: object) -> int:
        if ctx == nbd.CONTEXT_BASE_ALLOCATION:
            found.extend(zip(entries[::2], entries[1::2], strict=True))
        return 0

    h.block_status(count, offset, collect)
    return found


def work_units(extents: Sequence[Extent], unit: int = WORK_UNIT) -> Iterator[Extent]:
    for ext in extents:
        end = ext.offset + ext.length
        off = ext.offset
        while off < end:
            n = min(unit, end - off)
            yield Extent(off, n)
            off += n


class _Job:
    """State shared by the connections copying one disk: units left, counters, first error."""

    def __init__(self, disk: str, extents: Sequence[Extent], opts: CopyOptions) -> None:
        self.disk = disk
        self.opts = opts
        self.units = collections.deque(work_units(extents))
        self.total = sum(e.length for e in extents)
        # Each connection counts its own bytes (one writer per counter, no lock per
        # command); progress sums them.
        self.conns: list[_Connection] = []
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
class _Connection:
    """One source handle and one target handle.

    Its work is a generator (``steps``) that issues reads and yields whenever it has to
    wait, so that one loop (``_drive``) on one thread runs several connections instead of
    a thread each fighting over the GIL. Completions act at once, inside libnbd's
    callback: a finished read goes straight out as writes (another handle, which libnbd
    allows), a finished write returns its buffer. A failed command is kept in ``error``
    for the loop to raise: an exception must not cross libnbd's C callback.
    """

    job: _Job
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
            for ext, zero in self._extents(unit):
                if zero:
                    yield from self._zero_run(ext)
                else:
                    yield from self._data_run(ext)
        while self.in_flight and not job.stop.is_set():
            yield

    def _extents(self, unit: Extent) -> Iterator[tuple[Extent, bool]]:
        """The unit split into (extent, reads-as-zero) by the source's allocation map."""
        if not self.src.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
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

    def _data_run(self, ext: Extent) -> Iterator[None]:
        size = self.job.opts.request_size
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
            self.src.aio_pread(buf, off, completion=self._read_done(buf, off))
            off += n

    def _slot(self) -> Iterator[None]:
        """Wait until fewer than ``requests_in_flight`` commands are out: the memory bound.

        Buffers are held only by commands in flight, so at most that many exist.
        """
        while self.in_flight >= self.job.opts.requests_in_flight:
            yield
        if self.job.stop.is_set():
            raise _Stopped

    def _settle(self, n: int, zero: bool) -> None:
        self.done += n
        if zero:
            self.zero += n

    def _release(self, buf: nbd.Buffer) -> None:
        if len(buf) == self.job.opts.request_size:
            self.free.append(buf)

    def _failed(self, kind: str, offset: int, length: int, errno: int) -> None:
        if self.error is None:
            end = "source" if kind == "read" else "target"
            self.error = CopyError(
                f"disk {self.job.disk}: {kind} of {length} bytes at offset {offset} "
                f"failed on the {end}: {os.strerror(errno)}"
            )

    def _read_done(self, buf: nbd.Buffer, offset: int) -> Callable[[object], int]:
        def completion(err: object) -> int:
            self.in_flight -= 1
            errno = _errno(err)
            if errno:
                self._failed("read", offset, len(buf), errno)
                return 1
            try:
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


class _Poller:
    """Waits on the sockets of handles with commands out, and lets libnbd read or write
    whatever is ready; completions act inside those calls.

    One poll object for the whole copy, changed only when a handle's interest changes
    (most iterations change nothing).
    """

    def __init__(self, conns: list[_Connection]) -> None:
        self.poller = select.poll()
        self.handles = [(h, conn, h.aio_get_fd()) for conn in conns for h in (conn.src, conn.dst)]
        self.by_fd = {fd: (h, conn) for h, conn, fd in self.handles}
        self.events = dict.fromkeys(self.by_fd, 0)

    def wait(self, timeout: float) -> None:
        for h, _, fd in self.handles:
            events = 0
            if h.aio_in_flight():
                direction = h.aio_get_direction()
                if direction & nbd.AIO_DIRECTION_READ:
                    events |= select.POLLIN
                if direction & nbd.AIO_DIRECTION_WRITE:
                    events |= select.POLLOUT
            if events != self.events[fd]:
                if events:
                    self.poller.register(fd, events)
                else:
                    self.poller.unregister(fd)
                self.events[fd] = events
        for fd, revents in self.poller.poll(max(0, int(timeout * 1000))):
            h, conn = self.by_fd[fd]
            try:
                if revents & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    h.aio_notify_read()
                elif revents & select.POLLOUT:
                    h.aio_notify_write()
            except nbd.Error as exc:
                role = "source" if h is conn.src else "target"
                raise CopyError(
                    f"disk {conn.job.disk}: {role} connection failed: {exc.string}"
                ) from None


class _Stopped(Exception):
    """Raised inside a connection when another connection failed or the copy was cancelled."""


def copy(
    source_uri: str,
    target_uri: str,
    *,
    disk: str = "disk",
    extents: Sequence[Extent] | None = None,
    options: CopyOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    interval: float = 0.25,
) -> Progress:
    """Copy ``extents`` (default: the whole source) and flush; the final progress on success.

    Raises CopyError on any failed command (naming disk, offset and error) and
    CopyCancelled when ``cancel`` is set; either way all connections are closed.
    """
    opts = options or CopyOptions()
    handles: list[nbd.NBD] = []
    try:
        first_src, first_dst = open_all(
            [(source_uri, "source", True), (target_uri, "target", False)], disk, handles
        )
        size = first_src.get_size()
        if first_dst.get_size() < size:
            raise CopyError(
                f"disk {disk}: target holds {first_dst.get_size()} bytes, "
                f"source {size}: the target is too small"
            )
        if extents is None:
            extents = [Extent(0, size)]
        for e in extents:
            if e.offset < 0 or e.length < 0 or e.offset + e.length > size:
                raise CopyError(f"disk {disk}: extent {e} lies outside the {size}-byte disk")
        multi = first_src.can_multi_conn() and first_dst.can_multi_conn()
        count = opts.connections if multi else 1
        more = open_all(
            [
                spec
                for i in range(1, count)
                for spec in ((source_uri, f"source{i}", True), (target_uri, f"target{i}", False))
            ],
            disk,
            handles,
        )
        pairs = [(first_src, first_dst), *zip(more[::2], more[1::2], strict=True)]
        job = _Job(disk, extents, opts)
        return _run(job, pairs, progress, cancel, interval)
    finally:
        for h in handles:
            close_handle(h)


def _drive(job: _Job, conns: list[_Connection]) -> None:
    """Run these connections' steps until all are done and nothing is in flight.

    After a failure or a cancel, ``job.stop`` makes the steps end; commands already out
    are still waited for (their buffers belong to libnbd until then), unless a
    connection itself broke.
    """
    steps = {id(c): (c, c.steps()) for c in conns}
    poller = _Poller(conns)
    throttled = bool(job.opts.max_rate_bps)
    while steps or any(c.in_flight for c in conns):
        for key, (_, gen) in list(steps.items()):
            try:
                next(gen)
            except StopIteration:
                del steps[key]
            except (CopyError, _Stopped) as exc:
                job.fail(exc)
                del steps[key]
            except nbd.Error as exc:  # a command refused at once: the handle is dead
                job.fail(CopyError(f"disk {job.disk}: {exc.string}"))
                del steps[key]
        # The timeout bounds how long a stop (cancel, another loop's failure) goes
        # unnoticed; a throttled connection also wakes the loop when its next read is due.
        timeout = 0.25
        if throttled:
            now = time.monotonic()
            wake = min((c.wake_at for c, _ in steps.values() if c.wake_at > now), default=now)
            timeout = max(0.0, min(0.25, wake - now)) if wake > now else 0.25
        if any(c.in_flight for c in conns):
            try:
                poller.wait(timeout)
            except CopyError as exc:
                job.fail(exc)
                return
        elif steps:
            job.stop.wait(timeout)
        for conn in conns:
            if conn.error is not None:
                job.fail(conn.error)
                conn.error = None


def _drive_safely(job: _Job, conns: list[_Connection]) -> None:
    try:
        _drive(job, conns)
    except BaseException as exc:  # anything unforeseen still ends the copy, reported
        job.fail(exc)


def _run(
    job: _Job,
    pairs: list[tuple[nbd.NBD, nbd.NBD]],
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    interval: float,
) -> Progress:
    conns = [_Connection(job, s, d) for s, d in pairs]
    job.conns = conns
    window: collections.deque[tuple[float, int]] = collections.deque(maxlen=8)

    def report() -> Progress:
        now = time.monotonic()
        done, zero = job.counts()
        window.append((now, done))
        t0, d0 = window[0]
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        p = Progress(job.disk, done, job.total, zero, rate, len(pairs))
        if progress is not None:
            progress(p)
        return p

    # Connections are shared out between LOOPS threads: one loop avoids fighting over
    # the GIL, a second lets libnbd's socket work (done without the GIL) overlap.
    groups = [conns[i::LOOPS] for i in range(min(LOOPS, len(conns)))]
    threads = [
        threading.Thread(target=_drive_safely, args=(job, g), name=f"copy-{job.disk}-{i}")
        for i, g in enumerate(groups)
    ]
    report()
    for t in threads:
        t.start()
    while alive := [t for t in threads if t.is_alive()]:
        if cancel is not None and cancel.is_set():
            job.stop.set()
        alive[0].join(interval)
        report()
    if job.error is not None and not isinstance(job.error, _Stopped):
        raise job.error
    if cancel is not None and cancel.is_set():
        raise CopyCancelled(f"disk {job.disk}: copy cancelled")
    done, zero = job.counts()
    if job.error is not None or done != job.total:
        raise CopyError(f"disk {job.disk}: copy stopped at {done} of {job.total} bytes")
    # One flush once every write has been answered: with multi-conn (the only way there
    # is more than one connection) a flush on one connection covers them all.
    try:
        pairs[0][1].flush()
    except nbd.Error as exc:
        raise CopyError(f"disk {job.disk}: flush failed: {exc.string}") from None
    elapsed = time.monotonic() - job.started
    rate = done / elapsed if elapsed else 0.0
    final = Progress(job.disk, done, job.total, zero, rate, len(pairs))
    if progress is not None:
        progress(final)
    return final
