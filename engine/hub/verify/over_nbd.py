"""Reading parts of a disk through qemu (a private read-only qemu-nbd export of its
chain) and comparing their chunks with the table: for what only qemu can read (a
compressed cluster, an image the map cannot place, a disk qemu-img map refused).

Each range is read by several connections, each with several reads in flight (libnbd's
aio calls, waited for with ``poll``, which lets go of the GIL); block status skips what
reads as zero: such a chunk's expected digest is the digest of zeroes, so a table that
says data there is damage too.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import nbd
import xxhash

from engine.block_status import allocation
from engine.errors import SendenseError
from engine.hub.restores.reading import PrivateExport
from engine.hub.verify.disk import DiskCheck, VerifyStopped

CONNECTIONS = 4
IN_FLIGHT = 8
READ_SIZE = 4 * 2**20  # without a table: any size
UNIT = 64 * 2**20  # what one connection takes at a time


def read_over_nbd(
    qemu_nbd: str,
    runtime: Path,
    disk: DiskCheck,
    ranges: list[tuple[int, int]] | None,
    stop: threading.Event,
) -> None:
    """Read and compare the chunks of ``ranges`` (chunk-aligned ``(start, end)``), or of
    the whole disk (None: its size is what qemu serves)."""
    lock = threading.Lock()
    errors: list[BaseException] = []
    with PrivateExport(qemu_nbd, disk.qcow2, runtime) as export:
        if ranges is None:
            ranges = [(0, disk.sized(_size_of(export.uri, disk)))]
        chunk = disk.table.header.chunk_size if disk.table else READ_SIZE
        span = max(chunk, UNIT // chunk * chunk)  # units begin on chunks
        todo = [(p, min(e, p + span)) for s, e in ranges for p in range(s, e, span)]
        units = iter(todo)

        def take() -> tuple[int, int] | None:
            with lock:
                return next(units, None)

        def run() -> None:
            try:
                _read_units(export.uri, disk, take, stop)
            except BaseException as exc:  # the first one is raised below
                errors.append(exc)
                stop.set()

        threads = [
            threading.Thread(target=run, name=f"verify-{disk.disk_key}-{i}")
            for i in range(max(1, min(CONNECTIONS, len(todo))))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    real = [e for e in errors if not isinstance(e, VerifyStopped)]
    if real:
        raise real[0]
    if errors or stop.is_set():
        raise VerifyStopped("verification stopped")


def _size_of(uri: str, disk: DiskCheck) -> int:
    h = nbd.NBD()
    try:
        h.connect_uri(uri)
        return int(h.get_size())
    except nbd.Error as exc:
        raise SendenseError(f"disk {disk.disk_key}: cannot read the point: {exc.string}") from None
    finally:
        _close(h)


def _close(h: nbd.NBD) -> None:
    """Disconnect politely when connected; the handle goes with its last reference."""
    with contextlib.suppress(nbd.Error):
        if h.aio_is_ready():
            h.shutdown()


def _read_units(
    uri: str,
    disk: DiskCheck,
    take: Callable[[], tuple[int, int] | None],
    stop: threading.Event,
) -> None:
    h = nbd.NBD()
    try:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        h.connect_uri(uri)
        zero_map = h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        chunk = disk.table.header.chunk_size if disk.table else READ_SIZE
        step = max(chunk, READ_SIZE // chunk * chunk)
        failed: list[str] = []
        while (unit := take()) is not None:
            for off, n, zero in _parts(h, *unit, chunk, zero_map):
                if stop.is_set():
                    raise VerifyStopped("verification stopped")
                if zero:
                    _compare_zero(disk, off, n, chunk)
                    continue
                for pos in range(off, off + n, step):
                    while h.aio_in_flight() >= IN_FLIGHT:
                        h.poll(-1)
                    length = min(step, off + n - pos)
                    buf = nbd.Buffer(length)
                    h.aio_pread(buf, pos, completion=_done(disk, buf, pos, chunk, failed))
                if failed:
                    raise SendenseError(failed[0])
        while h.aio_in_flight():
            h.poll(-1)
        if failed:
            raise SendenseError(failed[0])
    except nbd.Error as exc:
        raise SendenseError(
            f"disk {disk.disk_key}: reading the point failed: {exc.string}"
        ) from None
    finally:
        _close(h)


def _parts(
    h: nbd.NBD, start: int, end: int, chunk: int, zero_map: bool
) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, zero) covering ``[start, end)``: zero only where whole chunks
    are, so every part (``start`` being a chunk's) begins on a chunk and ends on one or
    at ``end``."""
    pos = cur = start  # pos: where the data part not yet given begins
    while zero_map and cur < end:
        before = cur
        for length, flags in allocation(h, end - cur, cur):
            s, e = cur, min(end, cur + length)
            if e <= s:
                break
            cur = e
            zs = -(-s // chunk) * chunk
            ze = e if e == end else e - e % chunk
            if flags & nbd.STATE_ZERO and ze > zs:
                if zs > pos:
                    yield pos, zs - pos, False
                yield zs, ze - zs, True
                pos = ze
        if cur == before:  # the server said nothing of it: read it
            break
    if pos < end:
        yield pos, end - pos, False


def _compare_zero(disk: DiskCheck, off: int, n: int, chunk: int) -> None:
    count = 0
    if disk.table is not None:
        for pos in range(off, off + n, chunk):
            disk.compare_zeros(pos // chunk, min(chunk, off + n - pos))
            count += 1
    disk.done(n, count)


def _done(
    disk: DiskCheck, buf: nbd.Buffer, offset: int, chunk: int, failed: list[str]
) -> Callable[[object], int]:
    def completion(err: object) -> int:
        errno = int(getattr(err, "value", 0) or 0)
        if errno:
            failed.append(
                f"disk {disk.disk_key}: read of {len(buf)} bytes at offset {offset} failed"
                f" (errno {errno})"
            )
            return 1
        count = 0
        if disk.table is not None:
            view = memoryview(buf.to_buffer())
            for start in range(0, len(view), chunk):
                disk.compare(
                    (offset + start) // chunk, xxhash.xxh3_128_digest(view[start : start + chunk])
                )
                count += 1
        disk.done(len(buf), count)
        return 1

    return completion
