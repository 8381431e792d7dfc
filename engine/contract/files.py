"""Requests and answers of the hub's file routes: single files out of a restore point.

The hub reads a point's disk through its qcow2 chain over a private read-only NBD
export, finds its partitions (MBR, GPT, LVM) and reads their file systems (ext2/3/4,
XFS, NTFS, FAT, exFAT) in pure Python: nothing is mounted, nothing needs root. Paths are
absolute inside one file system and use ``/`` whatever the file system's own separator.

Partition numbers: ``0`` is a disk with no partition table (the file system is the whole
disk); ``1``… are the table's entries in its order; logical volumes found on an LVM
physical volume are numbered after the table's entries.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from engine.contract.fields import PathText

PartitionNumber = Annotated[int, Field(ge=0, le=4096)]


class FileKind(StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    OTHER = "other"  # devices, FIFOs, sockets: listed, never extracted


class Partition(BaseModel):
    number: PartitionNumber
    offset_bytes: int
    size_bytes: int
    scheme: str | None = None  # "gpt", "mbr", "lvm"; None: the whole disk
    type: str | None = None  # the partition's type as its table names it
    name: str | None = None  # a GPT partition's name, or "vg/lv" of a logical volume
    # The file system Sendense reads there ("ext4", "xfs", "ntfs", "fat32", "exfat"...);
    # None when there is none it reads, and then ``found`` says what is there instead.
    filesystem: str | None = None
    found: str | None = None
    label: str | None = None  # the file system's volume label


class FileEntry(BaseModel):
    path: str  # absolute, "/"-separated
    name: str
    kind: FileKind
    size_bytes: int = 0
    # Permission bits (``st_mode & 0o7777``); file systems without POSIX modes (NTFS,
    # FAT) report 0o755 for folders and 0o644 for files (0o444 when read-only).
    mode: int = 0
    uid: int | None = None
    gid: int | None = None
    mtime: datetime | None = None
    atime: datetime | None = None
    ctime: datetime | None = None
    symlink_target: str | None = None


class FolderListing(BaseModel):
    point_id: str
    disk_key: int
    partition: int
    filesystem: str
    path: str
    # A folder's entries, sorted by name (``.`` and ``..`` left out); the listing of a
    # path that is not a folder is that one entry, as ``ls`` does.
    entries: list[FileEntry] = Field(default_factory=list)


class FileQuery(BaseModel):
    """Query parameters of the file routes. ``partition`` may be left out when the disk
    holds exactly one file system Sendense reads."""

    model_config = ConfigDict(extra="forbid")

    path: PathText = "/"
    partition: PartitionNumber | None = None


class ContentQuery(FileQuery):
    """``archive``: a folder always comes as a tar stream; a file comes as its bytes
    unless ``archive`` asks for a tar stream (which carries its mode, times and, for a
    symlink, the link itself)."""

    archive: bool = False


# Headers of a file's content answer (its bytes, not a tar stream).
HEADER_KIND = "X-Sendense-Kind"
HEADER_MODE = "X-Sendense-Mode"  # octal permission bits
HEADER_MTIME = "X-Sendense-Mtime"  # seconds since the epoch, a float
TAR_MEDIA_TYPE = "application/x-tar"
