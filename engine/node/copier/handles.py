"""libnbd handles for a copy: connected all at once, closed politely."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import nbd

from engine.errors import CopyError


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
