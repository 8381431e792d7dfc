"""Raw disk images holding real file systems with known files, built without mounting
(no root, no loop devices): the lab's file-system VM and the single-file tests read them
back and compare with ``KNOWN``.

A GPT (or MBR) disk: partition 1 ext4 (``mke2fs -d`` from a folder), partition 2 NTFS
(``mkntfs`` + ``ntfscp``). A FAT disk: one FAT file system, no partition table
(``mkfs.vfat`` + ``mmd``/``mcopy -m``). Each file system's manifest holds only what that
file system really keeps: ext4 everything (modes, mtimes, symlinks, folders); NTFS files
in its root and their bytes (ntfscp makes no folders and stamps its own times); FAT
folders, files, long names and mtimes to 2 s (every name mixed-case or long, so that it
has a long-name entry: an all-lowercase 8.3 name is only a case flag, which readers drop).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.contract.files import FileKind

MIB = 1024 * 1024
SECTOR = 512
# Partition 1 starts at 1 MiB, as partitioning tools align it.
EXT4_OFFSET = MIB
EXT4_MIB = 36
GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GPT_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
MBR_LINUX = "83"
MBR_NTFS = "7"
# Even seconds: FAT keeps mtimes to 2 s.
MTIME = datetime(2024, 5, 17, 10, 30, 42, tzinfo=UTC)
LABELS = {"ext4": "sendense-ext4", "ntfs": "SENDENSE-NTFS", "fat": "SENDENSEFAT"}


def _pattern(seed: str, size: int) -> bytes:
    """Bytes that differ all along (a flipped or shifted block shows in their hash)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@dataclass(frozen=True)
class KnownFile:
    path: str  # absolute, "/"-separated, inside its file system
    kind: FileKind
    data: bytes | None = None  # a file's bytes
    mode: int | None = None  # permission bits, where the file system keeps them
    mtime: datetime | None = None  # where the file system keeps what was set
    symlink_target: str | None = None

    @property
    def sha256(self) -> str | None:
        return None if self.data is None else hashlib.sha256(self.data).hexdigest()


def _file(path: str, data: bytes, mode: int | None = 0o644, mtime: datetime | None = MTIME):
    return KnownFile(path, FileKind.FILE, data, mode, mtime)


def _folder(path: str, mode: int | None = 0o755, mtime: datetime | None = MTIME):
    return KnownFile(path, FileKind.DIRECTORY, None, mode, mtime)


KNOWN: dict[str, list[KnownFile]] = {
    "ext4": [
        _file("/hello.txt", b"hello from ext4\n"),
        _file("/empty.txt", b""),
        _file("/name with spaces.txt", b"spaces are fine\n"),
        _file("/café ünïcödé – 日本.txt", b"unicode names survive\n"),  # noqa: RUF001
        _file("/run.sh", b"#!/bin/sh\necho run\n", mode=0o755),
        _folder("/docs"),
        _folder("/docs/nested"),
        _folder("/docs/nested/deeper", mode=0o750),
        _file("/docs/readme.md", b"# docs\n"),
        _file("/docs/nested/data.bin", _pattern("ext4-data", 300 * 1024 + 7)),
        _file("/docs/nested/deeper/leaf.txt", b"the leaf\n", mode=0o600),
        KnownFile("/link-to-hello", FileKind.SYMLINK, None, 0o777, MTIME, "hello.txt"),
        KnownFile("/docs/up-link", FileKind.SYMLINK, None, 0o777, MTIME, "../run.sh"),
    ],
    "ntfs": [
        _file("/hello.txt", b"hello from ntfs\n", mode=None, mtime=None),
        _file("/name with spaces.txt", b"ntfs spaces\n", mode=None, mtime=None),
        _file("/ünïcödé – 日本.txt", b"ntfs unicode\n", mode=None, mtime=None),  # noqa: RUF001
        _file("/big.bin", _pattern("ntfs-big", 200 * 1024 + 3), mode=None, mtime=None),
    ],
    "fat": [
        _file("/HELLO.TXT", b"hello from fat\n", mode=None),
        _file("/A long file name.txt", b"long names on fat\n", mode=None),
        _folder("/Folder One", mode=None),
        _folder("/Folder One/Sub", mode=None),
        _file("/Folder One/Inside folder.txt", b"inside folder one\n", mode=None),
        _file("/Folder One/Sub/Deep data.bin", _pattern("fat-deep", 70 * 1024 + 1), mode=None),
    ],
}


def _run(argv: list[str], **extra: object) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, **extra)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")


def _stamp(path: Path, when: datetime | None) -> None:
    if when is not None:
        os.utime(path, (when.timestamp(), when.timestamp()), follow_symlinks=False)


def write_tree(root: Path, files: Iterable[KnownFile]) -> None:
    """The manifest as a real folder (modes and mtimes set, folders stamped last)."""
    entries = list(files)
    for f in entries:
        target = root / f.path.lstrip("/")
        if f.kind is FileKind.DIRECTORY:
            target.mkdir(parents=True, exist_ok=True)
        elif f.kind is FileKind.SYMLINK:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f.symlink_target or "")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.data or b"")
    for f in sorted(entries, key=lambda e: e.path.count("/"), reverse=True):
        target = root / f.path.lstrip("/")
        if f.kind is not FileKind.SYMLINK and f.mode is not None:
            target.chmod(f.mode)
        _stamp(target, f.mtime)


def make_ext4(image: Path, source: Path, size_mib: int, label: str = LABELS["ext4"]) -> None:
    """An ext4 image file of ``size_mib`` MiB holding a copy of ``source``."""
    image.unlink(missing_ok=True)
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-d", str(source), str(image),
          f"{size_mib}M"])  # fmt: skip


def _make_ntfs(image: Path, size_bytes: int, start_sector: int, files: list[KnownFile]) -> None:
    with image.open("wb") as f:
        f.truncate(size_bytes)
    _run(["mkntfs", "-q", "-F", "-f", "-L", LABELS["ntfs"], "-p", str(start_sector),
          str(image)])  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ntfs-src-") as tmp:
        for n, known in enumerate(files):
            src = Path(tmp) / f"f{n}"
            src.write_bytes(known.data or b"")
            _run(["ntfscp", "-q", "-f", str(image), str(src), known.path])


def _splice(disk: Path, part: Path, offset: int) -> None:
    with disk.open("r+b") as out, part.open("rb") as src:
        out.seek(offset)
        while chunk := src.read(4 * MIB):
            out.write(chunk)


def build_gpt_disk(path: Path, size_mib: int = 64, table: str = "gpt") -> None:
    """A partitioned disk: 1 = ext4 (``KNOWN["ext4"]``), 2 = NTFS (``KNOWN["ntfs"]``)
    filling the rest; ``table`` "gpt" or "dos" (MBR)."""
    if size_mib < EXT4_MIB + 8:
        raise ValueError(f"a partitioned disk needs at least {EXT4_MIB + 8} MiB")
    ntfs_offset = EXT4_OFFSET + EXT4_MIB * MIB
    ntfs_size = (size_mib - 1) * MIB - ntfs_offset  # leave room for the backup GPT
    gpt = table == "gpt"
    layout = "\n".join(
        [
            f"label: {table}",
            f"start={EXT4_OFFSET // SECTOR}, size={EXT4_MIB * MIB // SECTOR}, "
            f"type={GPT_LINUX if gpt else MBR_LINUX}" + (', name="linux"' if gpt else ""),
            f"start={ntfs_offset // SECTOR}, size={ntfs_size // SECTOR}, "
            f"type={GPT_BASIC_DATA if gpt else MBR_NTFS}" + (', name="windows"' if gpt else ""),
            "",
        ]
    )
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(size_mib * MIB)
    _run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(path)], input=layout)
    with tempfile.TemporaryDirectory(prefix="fsimage-", dir=path.parent) as tmp:
        work = Path(tmp)
        tree = work / "tree"
        tree.mkdir()
        write_tree(tree, KNOWN["ext4"])
        make_ext4(work / "ext4.img", tree, EXT4_MIB)
        _splice(path, work / "ext4.img", EXT4_OFFSET)
        _make_ntfs(work / "ntfs.img", ntfs_size, ntfs_offset // SECTOR, KNOWN["ntfs"])
        _splice(path, work / "ntfs.img", ntfs_offset)


def build_fat_disk(path: Path, size_mib: int = 32) -> None:
    """A disk that is one FAT file system (no partition table) holding ``KNOWN["fat"]``."""
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(size_mib * MIB)
    _run(["mkfs.vfat", "-n", LABELS["fat"], str(path)])
    # mtools writes FAT's local times: in UTC they read back as set.
    env = {**os.environ, "TZ": "UTC", "MTOOLS_SKIP_CHECK": "1"}
    with tempfile.TemporaryDirectory(prefix="fsimage-", dir=path.parent) as tmp:
        tree = Path(tmp)
        write_tree(tree, KNOWN["fat"])
        for known in KNOWN["fat"]:
            if known.path.count("/") == 1:
                src = str(tree / known.path.lstrip("/"))
                _run(["mcopy", "-Q", "-m", "-s", "-i", str(path), src, "::/"], env=env)
