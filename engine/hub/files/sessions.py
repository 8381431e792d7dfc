"""Open point disks, kept for a browser's many requests: one private qemu-nbd, one
reader and its cache, and the volumes and file systems parsed once, per (point, disk).

A session not used for ``idle_seconds`` is closed by ``sweep`` (the hub's restore watch
round calls it with its clock); one in use by a stream is never closed under it.
``close_all`` at hub shutdown. Each session has one lock: the Dissect objects and the
reader are not thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, cast

from engine.errors import BadInput
from engine.hub.files.filesystems import FileSystem, open_filesystem
from engine.hub.files.reader import NbdReader
from engine.hub.files.volumes import Volume, find_volumes
from engine.hub.restores.reading import PrivateExport

IDLE_SECONDS = 300.0
Key = tuple[str, int]


class DiskSession:
    def __init__(self, key: Key, export: PrivateExport, now: float) -> None:
        self.key = key
        self.export = export
        self.lock = threading.RLock()
        self.users = 0
        self.last_used = now
        self.reader = NbdReader(export.uri, self.where)
        self._volumes: list[Volume] | None = None
        self._filesystems: dict[int, FileSystem] = {}

    @property
    def where(self) -> str:
        return f"point {self.key[0]} disk {self.key[1]}"

    def volumes(self) -> list[Volume]:
        """Call with the lock held."""
        if self._volumes is None:
            self._volumes = find_volumes(cast(BinaryIO, self.reader), self.reader.size)
        return self._volumes

    def filesystem(self, volume: Volume) -> FileSystem:
        """The volume's parsed file system (once); call with the lock held."""
        number = volume.partition.number
        fs = self._filesystems.get(number)
        if fs is None:
            name = volume.partition.filesystem or ""
            try:
                fs = open_filesystem(name, volume.open())
            except Exception as exc:
                raise BadInput(
                    f"partition {number} of {self.where} looks like {name} "
                    f"but cannot be read: {exc}"
                ) from None
            volume.partition.label = fs.label
            volume.partition.filesystem = fs.name  # "fat" becomes fat12/16/32
            self._filesystems[number] = fs
        return fs

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.export.close()


class Sessions:
    def __init__(
        self,
        opener: Callable[[Path], PrivateExport],
        idle_seconds: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        refuse: Callable[[str], None] | None = None,
    ) -> None:
        self.opener = opener
        self.refuse = refuse  # Merging.refuse: no session opens on a point being merged
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.lock = threading.Lock()
        self.open: dict[Key, DiskSession] = {}

    def acquire(self, key: Key, qcow2: Path) -> DiskSession:
        """The session of that disk, opened if need be; give it back with ``release``."""
        with self.lock:
            session = self.open.get(key)
            if session is not None and not session.export.alive:
                self.open.pop(key)
                session.close()
                session = None
            if session is None:
                if self.refuse is not None:
                    self.refuse(key[0])
                export = self.opener(qcow2)
                try:
                    session = DiskSession(key, export, self.clock())
                except BaseException:
                    export.close()
                    raise
                self.open[key] = session
            session.users += 1
            return session

    def release(self, session: DiskSession) -> None:
        with self.lock:
            session.users -= 1
            session.last_used = self.clock()

    @contextmanager
    def use(self, key: Key, qcow2: Path) -> Iterator[DiskSession]:
        session = self.acquire(key, qcow2)
        try:
            with session.lock:
                yield session
        finally:
            self.release(session)

    def sweep(self, now: float | None = None) -> list[str]:
        """Close sessions idle for ``idle_seconds``; what was closed."""
        now = self.clock() if now is None else now
        with self.lock:
            idle = [
                k
                for k, s in self.open.items()
                if s.users == 0 and now - s.last_used >= self.idle_seconds
            ]
            closing = [self.open.pop(k) for k in idle]
        for session in closing:
            session.close()
        return [f"file session of {s.where} closed (idle)" for s in closing]

    def close_points(self, point_ids: set[str]) -> set[str]:
        """Close the idle sessions of these points (a merge is about to change their
        files); the points whose sessions are in use, left open."""
        with self.lock:
            idle = [k for k, s in self.open.items() if k[0] in point_ids and s.users == 0]
            closing = [self.open.pop(k) for k in idle]
            busy = {k[0] for k in self.open if k[0] in point_ids}
        for session in closing:
            session.close()
        return busy

    def close_all(self) -> None:
        with self.lock:
            closing = list(self.open.values())
            self.open.clear()
        for session in closing:
            session.close()
