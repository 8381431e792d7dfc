"""Files and folders of a restore point written onto this machine, from the hub's tar
streams: what ``sendense restore files get`` and the console's file browser share.

The hub sends every path as a tar stream (``archive=true``), so a file keeps its mode and
times and a symlink stays a symlink. The stream is untrusted input: a member with an
absolute name, a ``..`` or a path through a symlink is refused, whoever put the symlink
there, so nothing lands outside the target folder. Every folder on the way is opened with
``O_NOFOLLOW`` relative to its parent's descriptor, and every file and symlink is made
under a temporary name and renamed into place once whole, so that a failure leaves no
partial file. ``tarfile`` parses the stream in a worker thread fed through a small queue:
memory stays bounded whatever the size of a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import queue
import secrets
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from engine.contract.files import FileKind
from engine.errors import BadInput, SendenseError

if TYPE_CHECKING:
    from engine.hub_client import HubClient

PROGRESS_INTERVAL = 0.2  # seconds between progress callbacks, at most
_QUEUE_CHUNKS = 16  # chunks in flight between the event loop and the tar thread
_WRITE_BLOCK = 1 << 20
_OPEN_DIRS_MAX = 256  # folder descriptors kept open for the members that follow


class UnsafeArchive(SendenseError, exit_code=5):
    """A tar stream with a member that would land outside the target folder."""


@dataclass(frozen=True)
class ExtractProgress:
    path: str  # the path being extracted now (inside the file system)
    files: int  # files written so far
    bytes_done: int  # bytes written so far
    bytes_total: int | None  # known total (sum of the entries' sizes) or None


@dataclass(frozen=True)
class ExtractResult:
    files: int
    folders: int
    symlinks: int
    bytes: int
    skipped: list[str]  # entries not extracted (devices, fifos...), with why


def check_target(to: Path) -> None:
    """Refuse (one line) a target folder that cannot be made or written, before anything
    streams. It probes by doing: as root, permission bits say nothing. What the probe
    made is removed again."""
    to = to.expanduser().absolute()
    made: list[Path] = []
    try:
        missing = [p for p in [to, *to.parents] if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        if not to.is_dir():
            raise BadInput(f"--to {to}: not a folder")
        probe = to / f".sendense-probe-{secrets.token_hex(4)}"
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"--to {to}: cannot write there ({exc.strerror or exc})") from None
    finally:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()


@dataclass
class _Counts:
    path: str = ""
    files: int = 0
    folders: int = 0
    symlinks: int = 0
    bytes_done: int = 0
    skipped: list[str] = field(default_factory=list)


class _Aborted(Exception):
    """The event loop's side ended early (an error, a cancelled task)."""


class _Pipe:
    """The response's chunks, from the event loop to ``tarfile`` in its thread."""

    END = b""

    def __init__(self) -> None:
        self._chunks: queue.Queue[bytes] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._buffer = memoryview(b"")
        self._ended = False
        self.reader_done = False  # the tar thread stopped reading (end, or an error)
        self.aborted = False

    def put(self, chunk: bytes) -> None:
        """Blocking until there is room or the reader is gone."""
        while not self.reader_done:
            with contextlib.suppress(queue.Full):
                self._chunks.put(chunk, timeout=0.1)
                return

    def try_put(self, chunk: bytes) -> bool:
        try:
            self._chunks.put_nowait(chunk)
        except queue.Full:
            return False
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._buffer and not self._ended:
            if self.aborted:
                raise _Aborted()
            try:
                chunk = self._chunks.get(timeout=0.1)
            except queue.Empty:
                continue
            if chunk == self.END:
                self._ended = True
            self._buffer = memoryview(chunk)
        n = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        out, self._buffer = bytes(self._buffer[:n]), self._buffer[n:]
        return out


def _safe_parts(name: str) -> tuple[str, ...]:
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise UnsafeArchive(f"the hub's tar stream holds an absolute name: {name!r}")
    parts = tuple(p for p in path.parts if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive(f"the hub's tar stream holds a name with '..': {name!r}")
    return parts


class _Writer:
    """Writes members under one root folder, opening each folder on the way with
    ``O_NOFOLLOW`` from its parent: a symlink anywhere on a member's path is refused."""

    def __init__(self, root: Path, counts: _Counts) -> None:
        self._root = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        self._dirs: dict[tuple[str, ...], int] = {}
        self._folder_times: list[tuple[tuple[str, ...], int, float]] = []
        self._counts = counts
        self.folder = PurePosixPath("/")  # the file system's folder the members are in

    def close(self) -> None:
        self._forget_dirs()
        os.close(self._root)

    def _forget_dirs(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _dir(self, parts: tuple[str, ...], name: str) -> int:
        """The folder at ``parts`` (made when missing), as a descriptor."""
        if not parts:
            return self._root
        if parts in self._dirs:
            return self._dirs[parts]
        parent = self._dir(parts[:-1], name)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            fd = os.open(parts[-1], flags, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
            fd = os.open(parts[-1], flags, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                where = "/".join(parts)
                raise UnsafeArchive(
                    f"the hub's tar stream writes {name!r} through {where!r}, "
                    "which is not a folder (a symlink?)"
                ) from None
            raise
        if len(self._dirs) >= _OPEN_DIRS_MAX:
            self._forget_dirs()
        self._dirs[parts] = fd
        return fd

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _safe_parts(member.name)
        if not parts:
            return
        self._counts.path = str(self.folder.joinpath(*parts))
        if member.isdir():
            self._dir(parts, member.name)
            self._folder_times.append((parts, member.mode & 0o7777, member.mtime))
            self._counts.folders += 1
            return
        parent = self._dir(parts[:-1], member.name)
        if member.issym():
            self._place(
                parent, parts[-1], lambda tmp: os.symlink(member.linkname, tmp, dir_fd=parent)
            )
            os.utime(parts[-1], (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)
            self._counts.symlinks += 1
        elif member.isreg():
            source = tar.extractfile(member)
            assert source is not None
            self._place(
                parent, parts[-1], lambda tmp: self._write_file(parent, tmp, source, member)
            )
            self._counts.files += 1
        else:
            what = "a hard link" if member.islnk() else "a device, FIFO or socket"
            self._counts.skipped.append(f"{member.name}: {what}, not extracted")

    def _place(self, parent: int, name: str, make: Callable[[str], None]) -> None:
        tmp = f".{name[:64]}.sendense-{secrets.token_hex(4)}"
        try:
            make(tmp)
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            raise

    def _write_file(
        self, parent: int, tmp: str, source: IO[bytes], member: tarfile.TarInfo
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(tmp, flags, 0o600, dir_fd=parent)
        try:
            while block := source.read(_WRITE_BLOCK):
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
                self._counts.bytes_done += len(block)
            os.fchmod(fd, member.mode & 0o7777)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Folders' modes and times last, deepest first: writing into a folder changes
        its mtime, and a read-only folder must still take its entries."""
        for parts, mode, mtime in sorted(self._folder_times, key=lambda t: -len(t[0])):
            fd = self._dir(parts, "/".join(parts))
            os.fchmod(fd, mode)
            os.utime(fd, (mtime, mtime))


def _untar(pipe: _Pipe, writer: _Writer) -> None:
    try:
        with tarfile.open(fileobj=pipe, mode="r|", encoding="utf-8") as tar:  # type: ignore[call-overload]
            for member in tar:
                writer.add(tar, member)
    except tarfile.TarError as exc:
        raise UnsafeArchive(f"the hub's tar stream is broken: {exc}") from None
    finally:
        pipe.reader_done = True


async def _total(
    hub: HubClient, point_id: str, disk_key: int, paths: Sequence[str], partition: int | None
) -> int | None:
    """The bytes to come when every path is a file (a folder's size is not known ahead)."""
    total = 0
    for path in paths:
        entry = await hub.stat_file(point_id, disk_key, path, partition)
        if entry.kind == FileKind.DIRECTORY:
            return None
        total += entry.size_bytes if entry.kind == FileKind.FILE else 0
    return total


async def extract(
    hub: HubClient,
    point_id: str,
    disk_key: int,
    paths: Sequence[str],
    to: Path,
    *,
    partition: int | None = None,
    progress: Callable[[ExtractProgress], None] | None = None,
) -> ExtractResult:
    """Write ``paths`` of the point's disk (and partition) under ``to``, each as its
    basename. ``progress`` is called from the event loop, a few times a second at most."""
    total = await _total(hub, point_id, disk_key, paths, partition)
    to = to.expanduser().absolute()
    to.mkdir(parents=True, exist_ok=True)
    counts = _Counts()
    writer = _Writer(to, counts)
    last = 0.0

    def report(force: bool = False) -> None:
        nonlocal last
        now = time.monotonic()
        if progress is not None and (force or now - last >= PROGRESS_INTERVAL):
            last = now
            progress(ExtractProgress(counts.path, counts.files, counts.bytes_done, total))

    try:
        for path in paths:
            counts.path = path
            writer.folder = PurePosixPath(path).parent
            report(force=True)
            async with hub.file_content(
                point_id, disk_key, path, partition, archive=True
            ) as answer:
                pipe = _Pipe()
                worker = asyncio.ensure_future(asyncio.to_thread(_untar, pipe, writer))
                try:
                    async for chunk in answer.aiter_bytes():
                        if pipe.reader_done:
                            break
                        if chunk and not pipe.try_put(chunk):
                            await asyncio.to_thread(pipe.put, chunk)
                        report()
                    await asyncio.to_thread(pipe.put, _Pipe.END)
                except BaseException:
                    pipe.aborted = True  # the thread stops at its next read
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(worker)
                    raise
                await worker
        writer.finish()
    finally:
        writer.close()
    report(force=True)
    return ExtractResult(
        counts.files, counts.folders, counts.symlinks, counts.bytes_done, counts.skipped
    )
