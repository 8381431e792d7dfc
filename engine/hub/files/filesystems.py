"""The file systems Sendense reads, behind one small interface over the Dissect parsers:
the children of a folder, an entry as the contract's ``FileEntry``, a file's stream.

What a file system lacks is filled in as the contract says: NTFS and FAT have no POSIX
modes (folders 0o755, files 0o644, 0o444 when read-only); FAT's local times are taken
as UTC (a backup does not know the guest's time zone), as are exFAT's when they carry no
UTC offset. NTFS's metafiles ($MFT, ...) and
FAT's volume-label entry are not files anyone restores and are left out.
"""

from __future__ import annotations

import io
import stat
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from dissect.extfs import ExtFS
from dissect.fat import FATFS
from dissect.fat.exfat import ExFAT
from dissect.ntfs import NTFS
from dissect.util.stream import RunlistStream
from dissect.xfs import XFS

from engine.contract.files import FileEntry, FileKind

Node = Any  # a parser's own object for an entry (inode, MFT record, directory entry)

NTFS_FIRST_USER_RECORD = 24  # records below are NTFS's metafiles and reserved
NTFS_READ_ONLY = 0x1
KINDS = {
    stat.S_IFREG: FileKind.FILE,
    stat.S_IFDIR: FileKind.DIRECTORY,
    stat.S_IFLNK: FileKind.SYMLINK,
}


def _utc(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class FileSystem(ABC):
    name: str
    label: str | None = None
    folds_case = False  # FAT and NTFS find names whatever their case

    @abstractmethod
    def root(self) -> Node: ...

    @abstractmethod
    def children(self, node: Node) -> dict[str, Node]:
        """A folder's entries by name, without ``.`` and ``..``."""

    @abstractmethod
    def kind(self, node: Node) -> FileKind: ...

    @abstractmethod
    def entry(self, path: str, name: str, node: Node) -> FileEntry: ...

    @abstractmethod
    def open(self, node: Node) -> BinaryIO: ...

    def child(self, node: Node, name: str) -> Node | None:
        entries = self.children(node)
        found = entries.get(name)
        if found is None and self.folds_case:
            folded = name.casefold()
            found = next((n for k, n in entries.items() if k.casefold() == folded), None)
        return found


class UnixFS(FileSystem):
    """ext2/3/4 and XFS: Dissect gives both the same inode interface."""

    def __init__(self, name: str, parser: ExtFS | XFS, label: str | None) -> None:
        self.name = name
        self.parser = parser
        self.label = label or None

    def root(self) -> Node:
        return self.parser.get("/")

    def children(self, node: Node) -> dict[str, Node]:
        return {k: v for k, v in node.listdir().items() if k not in (".", "..")}

    def _mode(self, node: Node) -> int:
        raw = node.inode
        return int(raw.i_mode if hasattr(raw, "i_mode") else raw.di_mode)

    def kind(self, node: Node) -> FileKind:
        return KINDS.get(stat.S_IFMT(self._mode(node)), FileKind.OTHER)

    def entry(self, path: str, name: str, node: Node) -> FileEntry:
        raw = node.inode
        kind = self.kind(node)
        return FileEntry(
            path=path,
            name=name,
            kind=kind,
            size_bytes=node.size,
            mode=stat.S_IMODE(self._mode(node)),
            uid=int(raw.i_uid if hasattr(raw, "i_uid") else raw.di_uid),
            gid=int(raw.i_gid if hasattr(raw, "i_gid") else raw.di_gid),
            mtime=_utc(node.mtime),
            atime=_utc(node.atime),
            ctime=_utc(node.ctime),
            symlink_target=node.link if kind is FileKind.SYMLINK else None,
        )

    def open(self, node: Node) -> BinaryIO:
        stream: BinaryIO = node.open()
        return stream


class NtfsFS(FileSystem):
    name = "ntfs"
    folds_case = True

    def __init__(self, fh: BinaryIO) -> None:
        self.parser = NTFS(fh)
        self.label = self.parser.volume_name or None

    def root(self) -> Node:
        return self.parser.mft.get("/")

    def children(self, node: Node) -> dict[str, Node]:
        out = {}
        for name, index_entry in node.listdir(ignore_dos=True).items():
            if name == ".":
                continue
            record = index_entry.dereference()
            if record.segment is not None and record.segment < NTFS_FIRST_USER_RECORD:
                continue
            out[name] = record
        return out

    def kind(self, node: Node) -> FileKind:
        if node.is_symlink():
            return FileKind.SYMLINK
        if node.is_dir():
            return FileKind.DIRECTORY
        return FileKind.FILE if node.is_file() else FileKind.OTHER

    def entry(self, path: str, name: str, node: Node) -> FileEntry:
        kind = self.kind(node)
        info = node.attributes.STANDARD_INFORMATION
        si = info[0] if info else None
        read_only = si is not None and si.file_attributes & NTFS_READ_ONLY
        target = None
        if kind is FileKind.SYMLINK:
            target = node.reparse_point_substitute_name.removeprefix("\\??\\").replace("\\", "/")
        return FileEntry(
            path=path,
            name=name,
            kind=kind,
            size_bytes=node.size() if kind is FileKind.FILE and node.has_stream() else 0,
            mode=0o755 if kind is FileKind.DIRECTORY else (0o444 if read_only else 0o644),
            mtime=_utc(si.last_modification_time) if si else None,
            atime=_utc(si.last_access_time) if si else None,
            ctime=_utc(si.last_change_time) if si else None,
            symlink_target=target,
        )

    def open(self, node: Node) -> BinaryIO:
        stream: BinaryIO = node.open()
        return stream


class FatFS(FileSystem):
    folds_case = True

    def __init__(self, fh: BinaryIO) -> None:
        self.parser = FATFS(fh)
        self.name = self.parser.type.name.lower()  # fat12, fat16, fat32
        self.label = self.parser.volume_label or None

    def root(self) -> Node:
        return self.parser.root

    def children(self, node: Node) -> dict[str, Node]:
        return {
            e.name: e for e in node.iterdir() if e.name not in (".", "..") and not e.is_volume_id()
        }

    def kind(self, node: Node) -> FileKind:
        return FileKind.DIRECTORY if node.is_directory() else FileKind.FILE

    def _time(self, node: Node, what: str) -> datetime | None:
        try:
            return _utc(getattr(node, what))
        except (ValueError, TypeError, AttributeError):  # the root has none, zeros are none
            return None

    def entry(self, path: str, name: str, node: Node) -> FileEntry:
        kind = self.kind(node)
        return FileEntry(
            path=path,
            name=name,
            kind=kind,
            size_bytes=0 if kind is FileKind.DIRECTORY else node.size,
            mode=0o755 if kind is FileKind.DIRECTORY else (0o444 if node.is_readonly() else 0o644),
            mtime=self._time(node, "mtime"),
            atime=self._time(node, "atime"),
            ctime=self._time(node, "ctime"),
        )

    def open(self, node: Node) -> BinaryIO:
        stream: BinaryIO = node.open()
        return stream


def _exfat_time(stamp: int, tens: int, zone: int) -> datetime | None:
    """An exFAT timestamp (a DOS date and time to 2 s), its 10 ms increment and its UTC
    offset byte (bit 7: valid; 7 bits signed, in 15 minutes)."""
    if not stamp:
        return None
    try:
        when = datetime(
            1980 + (stamp >> 25), (stamp >> 21) & 0xF, (stamp >> 16) & 0x1F,
            (stamp >> 11) & 0x1F, (stamp >> 5) & 0x3F, (stamp & 0x1F) * 2, tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        return None
    when += timedelta(milliseconds=10 * tens)
    if zone & 0x80:
        quarters = zone & 0x7F
        when -= timedelta(minutes=15 * (quarters - 128 if quarters >= 64 else quarters))
    return when


class ExFatFS(FileSystem):
    """exFAT over dissect's low-level reader: it parses the whole folder tree when opened;
    a node is its (directory entry set, the folder's entries or None)."""

    name = "exfat"
    folds_case = True

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.parser = ExFAT(fh)
        self.label = self.parser.volume_label or None

    def root(self) -> Node:
        return self.parser.files["/"]

    def children(self, node: Node) -> dict[str, Node]:
        return dict(node[1] or {})

    def kind(self, node: Node) -> FileKind:
        return FileKind.DIRECTORY if node[0].metadata.attributes.directory else FileKind.FILE

    def entry(self, path: str, name: str, node: Node) -> FileEntry:
        kind = self.kind(node)
        meta = node[0].metadata
        return FileEntry(
            path=path,
            name=name,
            kind=kind,
            size_bytes=0 if kind is FileKind.DIRECTORY else int(node[0].stream.data_length),
            mode=0o755
            if kind is FileKind.DIRECTORY
            else (0o444 if meta.attributes.read_only else 0o644),
            mtime=_exfat_time(meta.modified_time, meta.modified_offset, meta.modified_timezone),
            atime=_exfat_time(meta.access_time, 0, meta.access_timezone),
            ctime=_exfat_time(meta.create_time, meta.create_offset, meta.create_timezone),
        )

    def open(self, node: Node) -> BinaryIO:
        stream = node[0].stream
        size = int(stream.data_length)
        if not size:
            return io.BytesIO()
        contiguous = bool(stream.flags.not_fragmented)  # NoFatChain: no chain in the FAT
        runs = self.parser.runlist(stream.location, contiguous, size if contiguous else None)
        opened: BinaryIO = RunlistStream(self.fh, runs, size, self.parser.sector_size)
        return opened


def open_filesystem(name: str, fh: BinaryIO) -> FileSystem:
    """``name`` is what ``volumes.sniff`` found; the parser's own errors propagate."""
    if name in ("ext2", "ext3", "ext4"):
        ext = ExtFS(fh)
        label = bytes(ext.sb.s_volume_name).rstrip(b"\0").decode(errors="replace")
        return UnixFS(name, ext, label)
    if name == "xfs":
        xfs = XFS(fh)
        label = bytes(xfs.sb.sb_fname).rstrip(b"\0").decode(errors="replace")
        return UnixFS(name, xfs, label)
    if name == "ntfs":
        return NtfsFS(fh)
    if name.startswith("fat"):
        return FatFS(fh)
    if name == "exfat":
        return ExFatFS(fh)
    raise ValueError(f"no reader for {name}")
