"""Checking one point: ``qemu-img check`` on its files, then every chunk of every disk read
back through its chain (a private read-only export) and compared with its table.

Each disk is read by several connections, each with several reads in flight (libnbd's
aio calls, waited for with ``poll``, which lets go of the GIL); block status skips what
reads as zero: such a chunk's expected digest is the digest of zeroes, so a table that
says data there is damage too. Adjacent bad chunks merge into one ``DamagedRange``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbd
import xxhash

from engine.contract.verify import DamagedRange, DiskVerification
from engine.errors import SendenseError
from engine.hub.jobs.ending import qcow2_check
from engine.hub.restores.reading import PrivateExport
from engine.hub.verify.table import Table

CONNECTIONS = 4
IN_FLIGHT = 8
READ_SIZE = 4 * 2**20  # without a table: any size
UNIT = 64 * 2**20  # what one connection takes at a time


class VerifyStopped(SendenseError):
    """The verification was stopped (the hub shutting down)."""


@functools.cache
def _zeros(length: int) -> bytes:
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

    def done(self, n: int, chunks: int = 0) -> None:
        with self.lock:
            self.state.bytes_done += n
            self.state.chunks += chunks


def check_structure(qemu_img: str, disk: DiskCheck) -> DamagedRange | None:
    """``qemu-img check`` on each file of the disk's chain; the first refusal, if any."""
    for path in disk.files:
        problem = qcow2_check(qemu_img, path)
        if problem:
            disk.state.check = f"{path.name}: {problem}"
            return DamagedRange(disk_key=disk.disk_key, reason=disk.state.check)
    disk.state.check = "ok"
    return None


def read_disk(qemu_nbd: str, runtime: Path, disk: DiskCheck, stop: threading.Event) -> None:
    """Read the disk whole through its chain and compare each chunk (when it has a table);
    bad chunks go to ``disk.bad``. Raises SendenseError when it cannot read."""
    with PrivateExport(qemu_nbd, disk.qcow2, runtime) as export:
        size = disk.state.bytes_total = _size_of(export.uri, disk)
        units = iter(range(0, size, UNIT))
        lock = threading.Lock()
        errors: list[BaseException] = []

        def take() -> int | None:
            with lock:
                return next(units, None)

        def run() -> None:
            try:
                _read_units(export.uri, disk, size, take, stop)
            except BaseException as exc:  # the first one is raised below
                errors.append(exc)
                stop.set()

        threads = [
            threading.Thread(target=run, name=f"verify-{disk.disk_key}-{i}")
            for i in range(CONNECTIONS)
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
        size = int(h.get_size())
    except nbd.Error as exc:
        raise SendenseError(f"disk {disk.disk_key}: cannot read the point: {exc.string}") from None
    finally:
        _close(h)
    if disk.table is not None and disk.table.header.capacity != size:
        raise SendenseError(
            f"disk {disk.disk_key}: its digest table is of {disk.table.header.capacity} bytes,"
            f" the disk of {size}"
        )
    return size


def _close(h: nbd.NBD) -> None:
    """Disconnect politely when connected; the handle goes with its last reference."""
    with contextlib.suppress(nbd.Error):
        if h.aio_is_ready():
            h.shutdown()


def _read_units(
    uri: str,
    disk: DiskCheck,
    size: int,
    take: Callable[[], int | None],
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
        while (start := take()) is not None:
            end = min(size, start + UNIT)
            for off, n, zero in _parts(h, start, end, chunk, zero_map):
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
    """(offset, length, zero) on chunk boundaries: zero only where whole chunks are."""
    if not zero_map:
        yield start, end - start, False
        return
    pos = start
    while pos < end:
        found = _allocation(h, end - pos, pos)
        if not found:
            yield pos, end - pos, False
            return
        for length, flags in found:
            n = min(length, end - pos)
            if n <= 0:
                break
            s, e = pos, pos + n
            pos = e
            zs = -(-s // chunk) * chunk
            ze = e if e == end else e - e % chunk
            if not flags & nbd.STATE_ZERO or ze <= zs:
                yield s, n, False
                continue
            if zs > s:
                yield s, zs - s, False
            yield zs, ze - zs, True
            if e > ze:
                yield ze, e - ze, False


def _allocation(h: nbd.NBD, count: int, offset: int) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []

    def collect(ctx: str, off: int, entries: list[int], err: object) -> int:
        if ctx == nbd.CONTEXT_BASE_ALLOCATION:
            found.extend(zip(entries[::2], entries[1::2], strict=True))
        return 0

    h.block_status(count, offset, collect)
    return found


def _compare_zero(disk: DiskCheck, off: int, n: int, chunk: int) -> None:
    table = disk.table
    count = 0
    if table is not None:
        for pos in range(off, off + n, chunk):
            length = min(chunk, off + n - pos)
            i = pos // chunk
            if table.digest(i) != _zeros(length):
                disk.bad.setdefault(i, "reads as zeroes where the copier read data")
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
        table = disk.table
        count = 0
        if table is not None:
            view = memoryview(buf.to_buffer())
            for start in range(0, len(view), chunk):
                i = (offset + start) // chunk
                if xxhash.xxh3_128_digest(view[start : start + chunk]) != table.digest(i):
                    disk.bad.setdefault(i, "chunk digest differs from what the copier read")
                count += 1
        disk.done(len(buf), count)
        return 1

    return completion


def damaged_ranges(disk: DiskCheck) -> list[DamagedRange]:
    """The disk's bad chunks as byte ranges, neighbours with the same reason merged."""
    if disk.table is None or not disk.bad:
        return []
    chunk, size = disk.table.header.chunk_size, disk.table.header.capacity
    out: list[DamagedRange] = []
    for i in sorted(disk.bad):
        start, end, reason = i * chunk, min(size, (i + 1) * chunk), disk.bad[i]
        last = out[-1] if out else None
        if (
            last is not None
            and last.reason == reason
            and (last.offset or 0) + (last.length or 0) == start
        ):
            last.length = end - (last.offset or 0)
        else:
            out.append(
                DamagedRange(
                    disk_key=disk.disk_key, offset=start, length=end - start, reason=reason
                )
            )
    return out
