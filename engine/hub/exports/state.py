"""The export manager's memory on disk: one JSON file per export, and a lock file.

State files let a restarted hub find the qemu-nbd processes it started (they outlive it
on purpose) and keep their ports. Each is written atomically (write, fsync, rename), so a
crash leaves the old or the new file, never half of one. An ``flock`` on ``.lock`` keeps
two processes that share a run folder from handing out the same port.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote


class ExportStatus(StrEnum):
    """``starting`` from the port's reservation until the handshake, then ``running``."""

    STARTING = "starting"
    RUNNING = "running"


@dataclass(frozen=True)
class ExportRecord:
    """What the manager remembers about one export.

    ``pid`` is None only between reserving the port and spawning qemu-nbd; ``owner`` is
    the pid of the process whose manager started (or adopted) the export; ``log_offset``
    is where this run's text starts in the log, so errors quote only this run.
    """

    name: str
    port: int
    host: str
    qcow2_path: str
    log_path: str
    pid_file: str
    status: ExportStatus
    owner: int
    pid: int | None = None
    log_offset: int = 0

    def with_(self, **changes: object) -> ExportRecord:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Export:
    name: str
    port: int
    pid: int
    qcow2_path: Path
    log_path: Path
    host: str

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"nbd://{host}:{self.port}/{quote(self.name, safe='')}"


def to_export(record: ExportRecord) -> Export:
    assert record.pid is not None
    return Export(
        name=record.name,
        port=record.port,
        pid=record.pid,
        qcow2_path=Path(record.qcow2_path),
        log_path=Path(record.log_path),
        host=record.host,
    )


class StateStore:
    """``<run_dir>/exports/<name>.json`` files plus ``<run_dir>/exports/.lock``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_path = folder / ".lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes (and across threads: each call opens its own fd)."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the fd drops the flock

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def pid_file(self, name: str) -> Path:
        return self.folder / f"{name}.pid"

    def write(self, record: ExportRecord) -> None:
        target = self.path(record.name)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(asdict(record), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    def read(self, name: str) -> ExportRecord | None:
        try:
            data = json.loads(self.path(name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable state is treated as absent; adopt() removes the file
        try:
            record = ExportRecord(**data)
            return replace(record, status=ExportStatus(record.status))
        except (TypeError, ValueError):
            return None

    def all(self) -> list[ExportRecord]:
        records = []
        for path in sorted(self.folder.glob("*.json")):
            record = self.read(path.name[: -len(".json")])
            if record is not None:
                records.append(record)
        return records

    def names_on_disk(self) -> set[str]:
        """Every export name with a state or pid file, readable or not.

        Temporary files end in ``.tmp`` and the lock in ``.lock``, so neither is taken
        for an export, whatever an export's name starts with.
        """
        return {
            p.name.rsplit(".", 1)[0] for p in self.folder.iterdir() if p.suffix in (".json", ".pid")
        }

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)
        self.pid_file(name).unlink(missing_ok=True)
