"""Backup repositories: folders that hold restore points, one qcow2 per disk per backup.

Layout: ``<repo>/<vm name>/<disk key>/<backup id>.qcow2``. Files are never overwritten;
VM names are made safe for a file system without losing their identity.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.config import Settings, get_settings
from engine.db.models import BackupRepository
from engine.errors import BadInput

MAX_COMPONENT_BYTES = 200
# The system's own trees: restore points must never mix into them, nor into a folder inside.
SYSTEM_TREES = tuple(
    map(
        Path,
        [
            "/etc",
            "/usr",
            "/bin",
            "/sbin",
            "/lib",
            "/lib32",
            "/lib64",
            "/libx32",
            "/boot",
            "/dev",
            "/proc",
            "/sys",
            "/run",
        ],
    )
)
# Folders of folders: a folder inside one is a fine repository, the folder itself is not.
SYSTEM_FOLDERS = tuple(
    map(Path, ["/", "/var", "/var/lib", "/root", "/home", "/srv", "/opt", "/mnt", "/media", "/tmp"])
)


class RepositoryError(BadInput):
    """A repository that cannot be used; the message says why (exit code 2: bad input)."""


@dataclass(frozen=True)
class RepositoryUsage:
    used_bytes: int
    free_bytes: int
    total_bytes: int


def _unsafe(ch: str) -> bool:
    """Separators, control characters, and lone surrogates (which no file system stores)."""
    code = ord(ch)
    return ch in "/\\" or code < 32 or code == 127 or 0xD800 <= code <= 0xDFFF


def safe_component(name: str) -> str:
    """One path component for any VM name: spaces and unicode kept, ``/`` and NUL not.

    A name that had to change gets a short hash of the original, so two VMs whose names
    differ only in unsafe characters never share a folder.
    """
    normal = unicodedata.normalize("NFC", name)
    cleaned = "".join("_" if _unsafe(ch) else ch for ch in normal).strip()
    if cleaned in ("", ".", ".."):
        cleaned = "_" + cleaned
    # File names are limited to 255 bytes, not characters: cut the UTF-8 form, dropping
    # a character split by the cut, and leave room for the hash and a ".qcow2" suffix.
    cleaned = cleaned.encode()[:MAX_COMPONENT_BYTES].decode(errors="ignore")
    if cleaned != name:
        cleaned += "-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return cleaned


def restore_point_path(repo_path: Path, vm_name: str, disk_key: int, backup_id: str) -> Path:
    return (
        repo_path / safe_component(vm_name) / str(disk_key) / f"{safe_component(backup_id)}.qcow2"
    )


def usage(path: Path) -> RepositoryUsage:
    """Bytes the repository's files occupy on disk, and the file system's free space."""
    used = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                used += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    disk = shutil.disk_usage(path)
    return RepositoryUsage(used_bytes=used, free_bytes=disk.free, total_bytes=disk.total)


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _refuse_place(path: Path, settings: Settings) -> None:
    """A system folder, or the data folder (but for its own default repository), is no
    place for restore points: one line that says which."""
    for tree in SYSTEM_TREES:
        if _is_within(path, tree) or _is_within(path, tree.resolve()):
            raise RepositoryError(f"{path} is a system folder ({tree}): choose another")
    if path in SYSTEM_FOLDERS:
        raise RepositoryError(f"{path} is a system folder: choose a folder inside it")
    home = settings.home.expanduser().resolve()
    default = settings.repository_default.expanduser().resolve()
    if _is_within(path, home) and path != default:
        raise RepositoryError(f"{path} is in Sendense's data folder {home}: choose another")


def check_path(path: Path, existing: list[BackupRepository], settings: Settings) -> Path:
    """The resolved folder, made if need be, writable, in no system or data folder, and
    not nested in or around another repository."""
    path = path.expanduser().resolve()
    _refuse_place(path, settings)
    for repo in existing:
        other = Path(repo.path).resolve()
        if _is_within(path, other) or _is_within(other, path):
            raise RepositoryError(f"{path} overlaps repository {repo.id} ({repo.name}) at {other}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepositoryError(f"cannot create repository folder {path}: {exc.strerror}") from None
    if not path.is_dir():
        raise RepositoryError(f"{path} is not a folder")
    probe = path / f".sendense-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RepositoryError(f"repository folder {path} is not writable: {exc.strerror}") from None
    return path


def add_repository(
    session: Session, name: str, path: Path, settings: Settings | None = None
) -> BackupRepository:
    """Register ``path`` (checked by ``check_path``); ``settings`` name the data folder,
    the process's own settings when not given."""
    name = name.strip()
    if not name:
        raise RepositoryError("the repository name is empty")
    existing = list(session.scalars(select(BackupRepository)))
    if any(r.name == name for r in existing):
        raise RepositoryError(f"a repository named {name!r} already exists")
    resolved = check_path(path, existing, settings or get_settings())
    repo = BackupRepository(name=name, path=str(resolved))
    session.add(repo)
    session.flush()
    return repo


def list_repositories(session: Session) -> list[BackupRepository]:
    return list(session.scalars(select(BackupRepository).order_by(BackupRepository.id)))


def ensure_default_repository(
    session: Session, path: Path, settings: Settings | None = None
) -> BackupRepository:
    """The embedded default repository (``default``), registered on first use."""
    repo = session.scalar(select(BackupRepository).where(BackupRepository.name == "default"))
    return repo or add_repository(session, "default", path, settings)
