"""Streams out of a file system: a file's bytes, or a tar of a file or folder (PAX,
utf-8 names, modes, mtimes, symlinks as symlinks), produced by a thread into a bounded
queue and handed to the HTTP answer chunk by chunk. Memory stays bounded whatever the
size; a client that goes away stops the thread at its next chunk.

The parsers are not thread-safe: every touch of them takes the session's lock, one
chunk or one folder at a time, so other requests on the same disk get their turn.
"""

from __future__ import annotations

import queue
import tarfile
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from typing import BinaryIO, cast

import anyio

from engine.contract.files import FileKind
from engine.hub.files.filesystems import FileSystem, Node

CHUNK = 1024 * 1024
QUEUE_CHUNKS = 8
POLL = 0.2  # how soon a stopped side notices


class _Stopped(Exception):
    """The reading side went away."""


class _End:
    pass


_END = _End()


class Sink:
    """Where a producer writes: bytes gathered into chunks, put on the queue."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | BaseException | _End] = queue.Queue(QUEUE_CHUNKS)
        self.stop = threading.Event()
        self.buffer = bytearray()

    def put(self, item: bytes | BaseException | _End) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=POLL)
                return
            except queue.Full:
                continue
        raise _Stopped

    def write(self, data: bytes) -> int:
        self.buffer += data
        while len(self.buffer) >= CHUNK:
            self.put(bytes(self.buffer[:CHUNK]))
            del self.buffer[:CHUNK]
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.put(bytes(self.buffer))
            self.buffer.clear()


class Stream:
    """Runs ``work`` in a thread from the first chunk asked and yields what it writes;
    ``done`` runs once when it is over: read out, failed, cancelled (the client went
    away), or closed before it ever started."""

    def __init__(self, work: Callable[[Sink], None], done: Callable[[], None]) -> None:
        self.work = work
        self.done = done
        self.sink = Sink()
        self.thread: threading.Thread | None = None
        self.finished = False

    def _run(self) -> None:
        try:
            self.work(self.sink)
            self.sink.flush()
            self.sink.put(_END)
        except _Stopped:
            pass
        except BaseException as exc:
            with suppress(_Stopped):
                self.sink.put(exc)
        finally:
            self.done()

    def _take(self) -> bytes | BaseException | _End | None:
        try:
            return self.sink.queue.get(timeout=POLL)
        except queue.Empty:
            return None

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> bytes:
        if self.finished:
            raise StopAsyncIteration
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="files-stream", daemon=True)
            self.thread.start()
        try:
            while True:
                item = await anyio.to_thread.run_sync(self._take)
                if item is None:
                    continue
                if isinstance(item, _End):
                    raise StopAsyncIteration
                if isinstance(item, BaseException):
                    raise item  # mid-stream: the answer is cut short, the client sees it
                return item
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.sink.stop.set()
        if self.thread is None:
            self.done()


class _LockedReader:
    """A parser's stream read under the session lock, a chunk at a time."""

    def __init__(self, stream: BinaryIO, lock: AbstractContextManager[object]) -> None:
        self.stream = stream
        self.lock = lock

    def read(self, size: int = -1) -> bytes:
        with self.lock:
            return self.stream.read(size)


def copy_file(
    fs: FileSystem, node: Node, lock: AbstractContextManager[object]
) -> Callable[[Sink], None]:
    def work(sink: Sink) -> None:
        with lock:
            stream = fs.open(node)
        reader = _LockedReader(stream, lock)
        while chunk := reader.read(CHUNK):
            sink.write(chunk)

    return work


def write_tar(
    fs: FileSystem, path: str, node: Node, lock: AbstractContextManager[object]
) -> Callable[[Sink], None]:
    """A tar of ``path``: member names start with its basename (the root's members are
    its entries)."""
    base = path.rstrip("/").rsplit("/", 1)[-1]

    def add(tar: tarfile.TarFile, at: str, name: str, member: str, node: Node) -> None:
        with lock:
            entry = fs.entry(at, name, node)
            children = fs.children(node) if entry.kind is FileKind.DIRECTORY else {}
        if member:
            info = tarfile.TarInfo(member)
            info.mode = entry.mode
            info.mtime = entry.mtime.timestamp() if entry.mtime else 0
            info.uid, info.gid = entry.uid or 0, entry.gid or 0
            if entry.kind is FileKind.DIRECTORY:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind is FileKind.SYMLINK:
                info.type, info.linkname = tarfile.SYMTYPE, entry.symlink_target or ""
                tar.addfile(info)
            elif entry.kind is FileKind.FILE:
                info.size = entry.size_bytes
                with lock:
                    stream = fs.open(node)
                tar.addfile(info, cast(BinaryIO, _LockedReader(stream, lock)))
            else:
                return  # devices, FIFOs, sockets: never extracted
        for child_name in sorted(children):
            child_at = f"{at.rstrip('/')}/{child_name}"
            child_member = f"{member}/{child_name}" if member else child_name
            add(tar, child_at, child_name, child_member, children[child_name])

    def work(sink: Sink) -> None:
        sink_file = cast(BinaryIO, sink)
        with tarfile.open(
            fileobj=sink_file, mode="w|", bufsize=CHUNK, format=tarfile.PAX_FORMAT, encoding="utf-8"
        ) as tar:
            tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # file contents read a chunk at a time, not 16 KiB
            add(tar, path, base, base, node)

    return work
