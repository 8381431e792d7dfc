"""What the file routes call: a point's disk checked against the point, its session,
the partition asked (or the one file system), and a path looked up in it.

Errors are one line naming what is needed to act: the path, the partition, the file
system, the point and the disk.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from engine.config import Settings
from engine.contract.files import FileEntry, FileKind, FileQuery, FolderListing, Partition
from engine.contract.restore import RestorePoint
from engine.errors import BadInput, NotFound
from engine.hub.files.filesystems import FileSystem, Node
from engine.hub.files.sessions import DiskSession, Sessions
from engine.hub.files.tarstream import Stream, copy_file, write_tar
from engine.hub.files.volumes import Volume
from engine.hub.restores.reading import PrivateExport


def _describe(v: Volume) -> str:
    p = v.partition
    return f"{p.number} ({p.filesystem or p.found})"


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


class FileService:
    def __init__(
        self,
        settings: Settings,
        point: Callable[[str], RestorePoint],
        refuse: Callable[[str], None] | None = None,
    ) -> None:
        self.point = point  # the restore manager's: NotFound for what is not a point
        runtime = settings.run / "readers"
        self.sessions = Sessions(
            lambda qcow2: PrivateExport(settings.nbd.qemu_nbd, qcow2, runtime), refuse=refuse
        )

    def _qcow2(self, point_id: str, disk_key: int) -> Path:
        point = self.point(point_id)
        for disk in point.disks:
            if disk.disk_key == disk_key:
                return Path(disk.qcow2_path)
        keys = ", ".join(str(d.disk_key) for d in point.disks) or "none"
        raise NotFound(f"point {point_id} has no disk {disk_key} (disks: {keys})")

    def _acquire(self, point_id: str, disk_key: int) -> DiskSession:
        return self.sessions.acquire((point_id, disk_key), self._qcow2(point_id, disk_key))

    def _volume(self, session: DiskSession, number: int | None) -> Volume:
        volumes = session.volumes()
        if number is not None:
            for v in volumes:
                if v.partition.number == number:
                    chosen = v
                    break
            else:
                there = ", ".join(_describe(v) for v in volumes)
                raise NotFound(f"{session.where} has no partition {number} (partitions: {there})")
        else:
            readable = [v for v in volumes if v.partition.filesystem]
            if len(readable) > 1:
                there = ", ".join(_describe(v) for v in readable)
                raise BadInput(
                    f"{session.where} holds several file systems, choose one with "
                    f"partition: {there}"
                )
            if not readable:
                if len(volumes) == 1:
                    chosen = volumes[0]
                else:
                    there = ", ".join(_describe(v) for v in volumes)
                    raise BadInput(f"{session.where} holds no file system Sendense reads: {there}")
            else:
                chosen = readable[0]
        if not chosen.partition.filesystem:
            p = chosen.partition
            kind = f" (partition type {p.type})" if p.type else ""
            raise BadInput(
                f"partition {p.number}{kind} of {session.where} holds no file system "
                f"Sendense reads: found {p.found}"
            )
        return chosen

    def _lookup(
        self, session: DiskSession, query: FileQuery
    ) -> tuple[Volume, FileSystem, str, str, Node]:
        volume = self._volume(session, query.partition)
        fs = session.filesystem(volume)
        node = fs.root()
        parts = _parts(query.path)
        for n, name in enumerate(parts):
            found = fs.child(node, name) if fs.kind(node) is FileKind.DIRECTORY else None
            if found is None:
                missing = "/" + "/".join(parts[: n + 1])
                raise NotFound(
                    f"{missing} is not in the {fs.name} file system of partition "
                    f"{volume.partition.number} ({session.where})"
                )
            node = found
        path = "/" + "/".join(parts)
        return volume, fs, path, (parts[-1] if parts else ""), node

    # -- the routes' calls (in worker threads) -------------------------------------------

    def partitions(self, point_id: str, disk_key: int) -> list[Partition]:
        session = self._acquire(point_id, disk_key)
        try:
            with session.lock:
                out = []
                for v in session.volumes():
                    if v.partition.filesystem:
                        with suppress(BadInput):
                            session.filesystem(v)  # fills in its label
                    out.append(v.partition.model_copy())
                return out
        finally:
            self.sessions.release(session)

    def listing(self, point_id: str, disk_key: int, query: FileQuery) -> FolderListing:
        session = self._acquire(point_id, disk_key)
        try:
            with session.lock:
                volume, fs, path, name, node = self._lookup(session, query)
                if fs.kind(node) is FileKind.DIRECTORY:
                    children = fs.children(node)
                    prefix = path.rstrip("/")
                    entries = [fs.entry(f"{prefix}/{k}", k, children[k]) for k in sorted(children)]
                else:
                    entries = [fs.entry(path, name, node)]
                return FolderListing(
                    point_id=point_id,
                    disk_key=disk_key,
                    partition=volume.partition.number,
                    filesystem=fs.name,
                    path=path,
                    entries=entries,
                )
        finally:
            self.sessions.release(session)

    def stat(self, point_id: str, disk_key: int, query: FileQuery) -> FileEntry:
        session = self._acquire(point_id, disk_key)
        try:
            with session.lock:
                _, fs, path, name, node = self._lookup(session, query)
                return fs.entry(path, name, node)
        finally:
            self.sessions.release(session)

    def content(
        self, point_id: str, disk_key: int, query: FileQuery, archive: bool
    ) -> tuple[FileEntry, bool, Stream]:
        """The entry, whether the stream is a tar, and the stream (which gives the
        session back when it ends)."""
        session = self._acquire(point_id, disk_key)
        try:
            with session.lock:
                _, fs, path, name, node = self._lookup(session, query)
                entry = fs.entry(path, name, node)
            if entry.kind is FileKind.OTHER:
                raise BadInput(f"{path} is a device, FIFO or socket: nothing to stream")
            tar = archive or entry.kind is not FileKind.FILE
            work = (
                write_tar(fs, path, node, session.lock)
                if tar
                else copy_file(fs, node, session.lock)
            )
        except BaseException:
            self.sessions.release(session)
            raise
        return entry, tar, Stream(work, lambda: self.sessions.release(session))

    def sweep(self, now: float | None = None) -> list[str]:
        return self.sessions.sweep(now)

    def close_all(self) -> None:
        self.sessions.close_all()
