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
An XFS disk (``MORE_KNOWN``, for the engine's tests only): one XFS file system populated
by ``mkfs.xfs -p`` from a prototype file, keeping kinds, modes and owners (not times);
an exFAT disk, ``mkfs.exfat`` then its directory entries written in (folders, files,
long names, mtimes to 10 ms in UTC).
"""

from __future__ import annotations

import hashlib
import os
import struct
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
LABELS = {
    "ext4": "sendense-ext4",
    "ntfs": "SENDENSE-NTFS",
    "fat": "SENDENSEFAT",
    "xfs": "sendense-xfs",
    "exfat": "SENDENSE-EX",
}


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


# ---- file systems fstest1 does not carry (the engine's tests read them) -------------------
# Kept out of ``KNOWN``: the lab's tests walk every file system there on fstest1.

XFS_MIB = 16
XFS_UID, XFS_GID = 1000, 1000
XFS_MANY = 40  # entries enough that the folder is a block directory, not one inside its inode


def _xfs_known() -> list[KnownFile]:
    # protofile sets modes, owners and kinds; the times are those of the build. Symlinks
    # stay short, inside their inode: mkfs.xfs 6.1 writes a longer one's block without its
    # v5 header (xfs_db reports the CRC error), which no reader should accept.
    def f(path: str, data: bytes, mode: int = 0o644) -> KnownFile:
        return _file(path, data, mode=mode, mtime=None)

    def d(path: str, mode: int = 0o755) -> KnownFile:
        return _folder(path, mode=mode, mtime=None)

    return [
        f("/hello.txt", b"hello from xfs\n"),
        f("/empty.txt", b""),
        f("/ünïcödé-日本.txt", b"xfs unicode names\n"),
        f("/run.sh", b"#!/bin/sh\necho xfs\n", mode=0o755),
        d("/docs"),
        d("/docs/nested", mode=0o750),
        f("/docs/readme.md", b"# xfs docs\n", mode=0o600),
        f("/docs/nested/data.bin", _pattern("xfs-data", 700 * 1024 + 5)),
        KnownFile("/link-to-hello", FileKind.SYMLINK, None, 0o777, None, "hello.txt"),
        KnownFile("/docs/up-link", FileKind.SYMLINK, None, 0o777, None, "../run.sh"),
        d("/many"),
        *(f(f"/many/entry-number-{n:03d}.txt", f"entry {n}\n".encode()) for n in range(XFS_MANY)),
    ]


MORE_KNOWN: dict[str, list[KnownFile]] = {"xfs": _xfs_known()}


def _proto_mode(known: KnownFile) -> str:
    kind = {FileKind.FILE: "-", FileKind.DIRECTORY: "d", FileKind.SYMLINK: "l"}[known.kind]
    return f"{kind}--{known.mode or 0:03o}"


def _proto(files: list[KnownFile], sources: Path) -> str:
    """A mkfs.xfs prototype file for ``files`` (file bytes read from under ``sources``):
    the root folder, then each folder's entries and a ``$`` to close it."""
    children: dict[str, list[KnownFile]] = {}
    for known in files:
        parent = known.path.rsplit("/", 1)[0] or "/"
        children.setdefault(parent, []).append(known)

    def lines(folder: str, depth: int) -> list[str]:
        out = []
        for known in children.get(folder, []):
            name = known.path.rsplit("/", 1)[1]
            if any(c.isspace() for c in name):
                raise ValueError(f"a prototype file cannot name {known.path!r}")
            head = f"{'  ' * depth}{name} {_proto_mode(known)} {XFS_UID} {XFS_GID}"
            if known.kind is FileKind.DIRECTORY:
                out += [head, *lines(known.path, depth + 1), f"{'  ' * depth}$"]
            elif known.kind is FileKind.SYMLINK:
                out.append(f"{head} {known.symlink_target}")
            else:
                out.append(f"{head} {sources / known.path.lstrip('/')}")
        return out

    return "\n".join(["/dev/null", "0 0", "d--755 0 0", *lines("/", 1), "$", ""])


def build_xfs_disk(path: Path, size_mib: int = XFS_MIB) -> None:
    """A disk that is one XFS file system (no partition table) holding
    ``MORE_KNOWN["xfs"]``, populated by ``mkfs.xfs -p`` from a prototype file. A file
    system this small is one mkfs.xfs makes only for file-system tests (the three
    variables below: xfstests' own); the reader does not mind its size."""
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(size_mib * MIB)
    env = {**os.environ, "TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}
    with tempfile.TemporaryDirectory(prefix="fsimage-", dir=path.parent) as tmp:
        work = Path(tmp)
        sources = work / "tree"
        sources.mkdir()
        write_tree(sources, [k for k in MORE_KNOWN["xfs"] if k.kind is not FileKind.SYMLINK])
        proto = work / "proto"
        proto.write_text(_proto(MORE_KNOWN["xfs"], sources))
        _run(["mkfs.xfs", "-q", "-f", "-L", LABELS["xfs"], "-p", str(proto), str(path)], env=env)


# exFAT: ``mkfs.exfat`` makes it empty (boot region, FAT, allocation bitmap, up-case table,
# root folder); its folders and files are then written in as the exFAT specification lays
# them out (Microsoft's, section 6/7): each a directory entry set — File (0x85), Stream
# Extension (0xC0), File Name (0xC1) entries, with the set's checksum and the name's hash —
# and its bytes in contiguous clusters marked in the bitmap, without FAT chains
# (NoFatChain). ``fsck.exfat -n`` finds the result clean.
EXFAT_MIB = 8
EXFAT_MTIME = datetime(2024, 5, 17, 10, 30, 43, 250000, tzinfo=UTC)  # exFAT keeps 10 ms
MORE_KNOWN["exfat"] = [
    _file("/Hello.txt", b"hello from exfat\n", mode=None, mtime=EXFAT_MTIME),
    _file("/A long exFAT file name, longer than fifteen.txt", b"long\n", mode=None,
          mtime=EXFAT_MTIME),
    _file("/empty.txt", b"", mode=None, mtime=EXFAT_MTIME),
    _folder("/Folder", mode=None, mtime=EXFAT_MTIME),
    _folder("/Folder/Sub", mode=None, mtime=EXFAT_MTIME),
    _file("/Folder/Inside.txt", b"inside the folder\n", mode=None, mtime=EXFAT_MTIME),
    _file("/Folder/Sub/Deep data.bin", _pattern("exfat-deep", 50 * 1024 + 9), mode=None,
          mtime=EXFAT_MTIME),
]  # fmt: skip


def _exfat_rotate_sum(data: bytes, skip: tuple[int, ...] = ()) -> int:
    total = 0
    for n, byte in enumerate(data):
        if n not in skip:
            total = (((total << 15) | (total >> 1)) + byte) & 0xFFFF
    return total


def _exfat_time(when: datetime) -> tuple[int, int]:
    """A timestamp field (local time to 2 s) and its 10 ms increment; the UTC offset
    field says it is UTC."""
    stamp = (
        (when.year - 1980) << 25 | when.month << 21 | when.day << 16
        | when.hour << 11 | when.minute << 5 | when.second // 2
    )  # fmt: skip
    return stamp, (when.second % 2) * 100 + when.microsecond // 10000


def _exfat_entry_set(name: str, folder: bool, cluster: int, length: int, when: datetime) -> bytes:
    utf16 = name.encode("utf-16-le")
    parts = [utf16[i : i + 30] for i in range(0, len(utf16), 30)]
    stamp, tens = _exfat_time(when)
    utc = 0x80  # offset valid, +0
    file = bytearray(32)
    struct.pack_into("<BBHH", file, 0, 0x85, 1 + len(parts), 0, 0x10 if folder else 0x20)
    struct.pack_into("<IIIBBBBB", file, 8, stamp, stamp, stamp, tens, tens, utc, utc, utc)
    stream = bytearray(32)
    name_hash = _exfat_rotate_sum(name.upper().encode("utf-16-le"))
    flags = 0x03 if length else 0x00  # allocation possible, no FAT chain
    struct.pack_into("<BBBBH", stream, 0, 0xC0, flags, 0, len(name), name_hash)
    struct.pack_into("<Q", stream, 8, length)
    struct.pack_into("<IQ", stream, 20, cluster if length else 0, length)
    names = [struct.pack("<BB30s", 0xC1, 0, part) for part in parts]
    entries = bytearray(file + stream + b"".join(names))
    struct.pack_into("<H", entries, 2, _exfat_rotate_sum(bytes(entries), skip=(2, 3)))
    return bytes(entries)


def build_exfat_disk(path: Path, size_mib: int = EXFAT_MIB) -> None:
    """A disk that is one exFAT file system (no partition table) holding
    ``MORE_KNOWN["exfat"]``."""
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(size_mib * MIB)
    _run(["mkfs.exfat", "-L", LABELS["exfat"], str(path)])
    with path.open("r+b") as disk:
        boot = disk.read(SECTOR)
        _, _, heap_sector, cluster_count, root_cluster = struct.unpack_from("<IIIII", boot, 80)
        cluster_size = (1 << boot[108]) << boot[109]

        def at(cluster: int) -> int:
            return heap_sector * (1 << boot[108]) + (cluster - 2) * cluster_size

        disk.seek(at(root_cluster))
        root = disk.read(cluster_size)
        bitmap_entry = next(root[i : i + 32] for i in range(0, cluster_size, 32) if root[i] == 0x81)
        bitmap_cluster, bitmap_bytes = struct.unpack_from("<IQ", bitmap_entry, 20)
        disk.seek(at(bitmap_cluster))
        bitmap = bytearray(disk.read(bitmap_bytes))
        used = [c for c in range(2, cluster_count + 2) if bitmap[(c - 2) // 8] >> ((c - 2) % 8) & 1]
        next_free = max(used) + 1

        def allocate(length: int) -> int:
            nonlocal next_free
            first, count = next_free, -(-length // cluster_size)
            for c in range(first, first + count):
                bitmap[(c - 2) // 8] |= 1 << ((c - 2) % 8)
            next_free += count
            return first

        folders: dict[str, tuple[int, bytearray]] = {"/": (root_cluster, bytearray(root))}
        for known in MORE_KNOWN["exfat"]:  # folders come before what they hold
            parent, name = known.path.rsplit("/", 1)
            if known.kind is FileKind.DIRECTORY:
                length = cluster_size
                cluster = allocate(length)
                folders[known.path] = (cluster, bytearray(cluster_size))
            else:
                data = known.data or b""
                length = len(data)
                cluster = allocate(length) if length else 0
                if length:
                    disk.seek(at(cluster))
                    disk.write(data)
            entries = _exfat_entry_set(name, known.kind is FileKind.DIRECTORY, cluster, length,
                                       known.mtime or MTIME)  # fmt: skip
            table = folders[parent or "/"][1]
            free = next(i for i in range(0, cluster_size, 32) if table[i] == 0)
            table[free : free + len(entries)] = entries
        for cluster, table in folders.values():
            disk.seek(at(cluster))
            disk.write(table)
        disk.seek(at(bitmap_cluster))
        disk.write(bitmap)
