"""``copy``: connect the handles, share the connections out between two loops, report
progress while they run, flush once at the end."""

from __future__ import annotations

import collections
import select
import threading
import time
from collections.abc import Sequence

import nbd

from engine.errors import CopyError
from engine.node.copier.connection import Connection, DiskJob, Stopped
from engine.node.copier.digests import Digests, DigestsCallback, align_extents
from engine.node.copier.extents import Extent
from engine.node.copier.handles import close_handle, open_all
from engine.node.copier.options import CopyCancelled, CopyOptions, Progress, ProgressCallback

LOOPS = 2


class Poller:
    """Waits on the sockets of handles with commands out, and lets libnbd read or write
    whatever is ready; completions act inside those calls.

    One poll object for the whole copy, changed only when a handle's interest changes
    (most iterations change nothing).
    """

    def __init__(self, conns: list[Connection]) -> None:
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
    digests: DigestsCallback | None = None,
) -> Progress:
    """Copy ``extents`` (default: the whole source) and flush; the final progress on success.

    With ``options.chunk_size`` and ``digests``, every chunk's digest goes to ``digests``
    exactly once (from this thread, a work unit at a time, all before this returns); the
    extents are then grown to whole chunks.

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
        sums = None
        if opts.chunk_size and digests is not None:
            sums = Digests(opts.chunk_size, digests)
            extents = align_extents(extents, opts.chunk_size, size)
        job = DiskJob(disk, extents, opts, sums)
        return _run(job, pairs, progress, cancel, interval)
    finally:
        for h in handles:
            close_handle(h)


def _drive(job: DiskJob, conns: list[Connection]) -> None:
    """Run these connections' steps until all are done and nothing is in flight.

    After a failure or a cancel, ``job.stop`` makes the steps end; commands already out
    are still waited for (their buffers belong to libnbd until then), unless a
    connection itself broke.
    """
    steps = {id(c): (c, c.steps()) for c in conns}
    poller = Poller(conns)
    throttled = bool(job.opts.max_rate_bps)
    while steps or any(c.in_flight for c in conns):
        for key, (_, gen) in list(steps.items()):
            try:
                next(gen)
            except StopIteration:
                del steps[key]
            except (CopyError, Stopped) as exc:
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


def _drive_safely(job: DiskJob, conns: list[Connection]) -> None:
    try:
        _drive(job, conns)
    except BaseException as exc:  # anything unforeseen still ends the copy, reported
        job.fail(exc)


def _run(
    job: DiskJob,
    pairs: list[tuple[nbd.NBD, nbd.NBD]],
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    interval: float,
) -> Progress:
    conns = [Connection(job, s, d) for s, d in pairs]
    job.conns = conns
    window: collections.deque[tuple[float, int]] = collections.deque(maxlen=8)

    def report() -> Progress:
        now = time.monotonic()
        done, zero = job.counts()
        window.append((now, done))
        t0, d0 = window[0]
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        p = Progress(job.disk, done, job.total, zero, rate, len(pairs))
        if job.digests is not None:
            job.digests.deliver()
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
    try:
        while alive := [t for t in threads if t.is_alive()]:
            if cancel is not None and cancel.is_set():
                job.stop.set()
            alive[0].join(interval)
            report()
    except BaseException:
        # A progress callback that raises (its reader gone: a broken pipe) ends the copy
        # too; the loops must stop before the handles close, or they would spin forever
        # and keep the process alive.
        job.stop.set()
        for t in threads:
            t.join()
        raise
    if job.error is not None and not isinstance(job.error, Stopped):
        raise job.error
    if cancel is not None and cancel.is_set():
        raise CopyCancelled(f"disk {job.disk}: copy cancelled")
    done, zero = job.counts()
    if job.error is not None or done != job.total:
        raise CopyError(f"disk {job.disk}: copy stopped at {done} of {job.total} bytes")
    if job.digests is not None:
        job.digests.deliver()
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
