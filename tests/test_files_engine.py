"""Single files out of real file system images (built by engine.lab.fsimages, without
mounting; LVM2 volumes by tests.fixtures.lvm_image), read through a private qemu-nbd of
their qcow2 exactly as the hub reads a restore point: partitions, listings, stats, bytes,
tar streams, and the bad inputs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.config import Settings
from engine.contract.files import FileKind, FileQuery
from engine.contract.restore import RestorePoint, RestorePointDisk
from engine.contract.status import BackupType
from engine.errors import BadInput, NotFound
from engine.hub.files.service import FileService
from engine.lab.fsimages import (
    KNOWN,
    MIB,
    MORE_KNOWN,
    XFS_GID,
    XFS_MIB,
    XFS_UID,
    build_exfat_disk,
    build_fat_disk,
    build_gpt_disk,
    build_xfs_disk,
)
from tests.fixtures import lvm_image
from tests.fixtures.exports import qemu_nbd_pids
from tests.fixtures.known_files import assert_entry

GPT, MBR, FAT, ZEROS, SWAP, XFS, LVM, GPT_LVM, EXFAT = 1, 2, 3, 4, 5, 6, 7, 8, 9
MANIFEST = {**KNOWN, **MORE_KNOWN}


@dataclass(frozen=True)
class Disks:
    folder: Path
    qcow2: dict[int, Path]
    built: tuple[datetime, datetime]  # XFS keeps the build's times


def _qcow2(raw: Path) -> Path:
    out = raw.with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> Disks:
    folder = tmp_path_factory.mktemp("fsdisks")
    started = datetime.now(UTC)
    build_xfs_disk(folder / "xfs.img")
    built = (started - timedelta(seconds=1), datetime.now(UTC) + timedelta(seconds=1))
    build_exfat_disk(folder / "exfat.img")
    lvm_image.build_lvm_disk(folder / "lvm.img")
    lvm_image.build_gpt_lvm_disk(folder / "gptlvm.img")
    build_gpt_disk(folder / "gpt.img")
    build_gpt_disk(folder / "mbr.img", table="dos")
    build_fat_disk(folder / "fat.img")
    (folder / "zeros.img").write_bytes(b"")
    with (folder / "zeros.img").open("wb") as f:
        f.truncate(4 * MIB)
    with (folder / "swap.img").open("wb") as f:
        f.truncate(4 * MIB)
    subprocess.run(["mkswap", "-q", str(folder / "swap.img")], check=True)
    names = {GPT: "gpt", MBR: "mbr", FAT: "fat", ZEROS: "zeros", SWAP: "swap", XFS: "xfs",
             LVM: "lvm", GPT_LVM: "gptlvm", EXFAT: "exfat"}  # fmt: skip
    return Disks(folder, {k: _qcow2(folder / f"{n}.img") for k, n in names.items()}, built)


def point_of(disks: Disks) -> RestorePoint:
    return RestorePoint(
        point_id="p1",
        vm_name="fsvm",
        vm_context_id="ctx",
        vm_path=None,
        backup_type=BackupType.FULL,
        snapshot_kind=None,
        created_at=None,
        completed_at=None,
        repository_id=1,
        node_id=None,
        disks=[
            RestorePointDisk(disk_key=k, capacity_bytes=0, qcow2_path=str(q))
            for k, q in disks.qcow2.items()
        ],
    )


@pytest.fixture
def service(disks: Disks, settings: Settings) -> Iterator[FileService]:
    def point(point_id: str) -> RestorePoint:
        if point_id != "p1":
            raise NotFound(f"restore point {point_id} does not exist")
        return point_of(disks)

    svc = FileService(settings, point)
    yield svc
    svc.close_all()
    assert qemu_nbd_pids(str(settings.run)) == []


def _content(svc: FileService, disk: int, path: str, partition: int | None, archive: bool = False):
    async def read() -> tuple[bool, bytes]:
        _, tar, stream = svc.content("p1", disk, FileQuery(path=path, partition=partition), archive)
        return tar, b"".join([chunk async for chunk in stream])

    return asyncio.run(read())


def untar(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    """A tar stream's members by name, with a file's bytes."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = {}
        for m in tar:
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name] = (m, f.read() if f else None)
        return out


CASES = [
    (GPT, 1, "ext4"),
    (GPT, 2, "ntfs"),
    (MBR, 1, "ext4"),
    (MBR, 2, "ntfs"),
    (FAT, None, "fat"),
    (XFS, None, "xfs"),
    (LVM, None, "ext4"),  # the one file system: the LV's
    (GPT_LVM, 3, "ext4"),
    (EXFAT, None, "exfat"),
]


def test_partitions_of_gpt_mbr_and_a_bare_file_system(service: FileService) -> None:
    gpt = service.partitions("p1", GPT)
    assert [(p.number, p.scheme, p.filesystem, p.name) for p in gpt] == [
        (1, "gpt", "ext4", "linux"),
        (2, "gpt", "ntfs", "windows"),
    ]
    assert gpt[0].offset_bytes == MIB and gpt[0].size_bytes == 36 * MIB
    assert [p.label for p in gpt] == ["sendense-ext4", "SENDENSE-NTFS"]
    mbr = service.partitions("p1", MBR)
    assert [(p.number, p.scheme, p.filesystem) for p in mbr] == [
        (1, "mbr", "ext4"),
        (2, "mbr", "ntfs"),
    ]
    (fat,) = service.partitions("p1", FAT)
    assert (fat.number, fat.scheme, fat.filesystem, fat.label) == (0, None, "fat16", "SENDENSEFAT")


@pytest.mark.parametrize(("disk", "partition", "fs"), CASES)
def test_every_known_file_listed_stat_and_read(
    service: FileService, disk: int, partition: int | None, fs: str
) -> None:
    for known in MANIFEST[fs]:
        folder = known.path.rsplit("/", 1)[0] or "/"
        listing = service.listing("p1", disk, FileQuery(path=folder, partition=partition))
        by_path = {e.path: e for e in listing.entries}
        assert known.path in by_path, (known.path, sorted(by_path))
        assert_entry(by_path[known.path], known)
        query = FileQuery(path=known.path, partition=partition)
        assert_entry(service.stat("p1", disk, query), known)
        if known.kind is FileKind.FILE:
            tar, data = _content(service, disk, known.path, partition)
            assert not tar
            assert hashlib.sha256(data).hexdigest() == known.sha256, known.path


def test_a_folder_comes_whole_as_a_tar_with_modes_times_and_symlinks(service: FileService) -> None:
    tar, data = _content(service, GPT, "/docs", 1)
    assert tar
    members = untar(data)
    expected = {k.path.lstrip("/"): k for k in KNOWN["ext4"] if k.path.startswith("/docs")}
    assert set(members) == set(expected)
    for name, known in expected.items():
        m, content = members[name]
        assert m.mtime == known.mtime.timestamp()  # type: ignore[union-attr]
        if known.kind is FileKind.SYMLINK:
            assert m.issym() and m.linkname == known.symlink_target
        elif known.kind is FileKind.DIRECTORY:
            assert m.isdir() and m.mode == known.mode
        else:
            assert m.mode == known.mode
            assert content == known.data
    # One symlink asked alone, archive=true: the link itself.
    _, one = _content(service, GPT, "/link-to-hello", 1, archive=True)
    ((link, _),) = untar(one).values()
    assert link.name == "link-to-hello" and link.issym() and link.linkname == "hello.txt"


def test_the_root_as_a_tar_holds_unicode_names(service: FileService) -> None:
    _, data = _content(service, FAT, "/", None)
    names = set(untar(data))
    assert names == {k.path.lstrip("/") for k in KNOWN["fat"]}
    _, data = _content(service, GPT, "/", 2)
    names = set(untar(data))
    assert names == {k.path.lstrip("/") for k in KNOWN["ntfs"]}


@pytest.mark.parametrize(
    ("disk", "query", "error", "words"),
    [
        (GPT, FileQuery(path="/docs/nope.txt", partition=1), NotFound,
         ["/docs/nope.txt", "ext4", "partition 1", "point p1 disk 1"]),
        (GPT, FileQuery(path="/hello.txt/below", partition=1), NotFound, ["/hello.txt/below"]),
        (GPT, FileQuery(path="/", partition=7), NotFound,
         ["no partition 7", "1 (ext4), 2 (ntfs)"]),
        (GPT, FileQuery(path="/"), BadInput, ["several file systems", "1 (ext4), 2 (ntfs)"]),
        (ZEROS, FileQuery(path="/"), BadInput, ["partition 0", "found zeros"]),
        (SWAP, FileQuery(path="/"), BadInput, ["found swap"]),
        (LVM, FileQuery(path="/", partition=0), BadInput, ["partition 0", "found LVM2 PV"]),
        (GPT_LVM, FileQuery(path="/", partition=4), BadInput, ["partition 4", "found swap"]),
        (GPT_LVM, FileQuery(path="/", partition=5), NotFound,
         ["no partition 5", "1 (LVM2 PV), 2 (swap), 3 (ext4), 4 (swap)"]),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_what_is_there(
    service: FileService, disk: int, query: FileQuery, error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as caught:
        service.listing("p1", disk, query)
    line = str(caught.value)
    assert "\n" not in line and all(w in line for w in words), line


def test_xfs_keeps_owners_and_the_build_times_and_gives_a_folder_as_a_tar(
    service: FileService, disks: Disks
) -> None:
    (whole,) = service.partitions("p1", XFS)
    assert (whole.number, whole.scheme, whole.filesystem, whole.label) == (
        0, None, "xfs", "sendense-xfs",
    )  # fmt: skip
    assert whole.size_bytes == XFS_MIB * MIB
    listing = service.listing("p1", XFS, FileQuery(path="/many"))
    assert len(listing.entries) == sum(k.path.startswith("/many/") for k in MORE_KNOWN["xfs"])
    low, high = disks.built
    for known in MORE_KNOWN["xfs"]:
        entry = service.stat("p1", XFS, FileQuery(path=known.path))
        assert (entry.uid, entry.gid) == (XFS_UID, XFS_GID), known.path
        assert entry.mtime is not None and low <= entry.mtime <= high, known.path
    tar, data = _content(service, XFS, "/docs", None)
    assert tar
    members = untar(data)
    expected = {k.path.lstrip("/"): k for k in MORE_KNOWN["xfs"] if k.path.startswith("/docs")}
    assert set(members) == set(expected)
    for name, known in expected.items():
        m, content = members[name]
        stat = service.stat("p1", XFS, FileQuery(path=known.path))
        assert stat.mtime is not None and abs(m.mtime - stat.mtime.timestamp()) < 1
        if known.kind is FileKind.SYMLINK:
            assert m.issym() and m.linkname == known.symlink_target
        else:
            assert m.mode == known.mode and content == known.data, name
            assert m.isdir() is (known.kind is FileKind.DIRECTORY)


def test_exfat_names_any_case_and_its_folders_come_as_a_tar(service: FileService) -> None:
    (whole,) = service.partitions("p1", EXFAT)
    assert (whole.number, whole.filesystem, whole.label) == (0, "exfat", "SENDENSE-EX")
    deep = next(k for k in MORE_KNOWN["exfat"] if k.path.endswith("Deep data.bin"))
    entry = service.stat("p1", EXFAT, FileQuery(path=deep.path.upper()))
    assert entry.size_bytes == len(deep.data or b"") and entry.mode == 0o644
    tar, data = _content(service, EXFAT, "/Folder", None)
    assert tar
    members = untar(data)
    expected = {k.path.lstrip("/"): k for k in MORE_KNOWN["exfat"] if k.path.startswith("/Folder")}
    assert set(members) == set(expected)
    for name, known in expected.items():
        m, content = members[name]
        assert m.mtime == known.mtime.timestamp()  # type: ignore[union-attr]
        assert m.isdir() is (known.kind is FileKind.DIRECTORY) and content == known.data, name


def test_logical_volumes_come_after_the_table_and_are_read(service: FileService) -> None:
    lv = lvm_image
    root_at = lv.PE_START + lv.SWAP_EXTENTS * lv.EXTENT  # root's extents follow swap's
    whole = service.partitions("p1", LVM)
    assert [(p.number, p.scheme, p.name, p.filesystem, p.found) for p in whole] == [
        (0, None, None, None, "LVM2 PV"),
        (1, "lvm", "vg0/root", "ext4", None),
        (2, "lvm", "vg0/swap", None, "swap"),
    ]
    assert [(p.offset_bytes, p.size_bytes) for p in whole] == [
        (0, lv.PV_BYTES),
        (root_at, lv.ROOT_MIB * MIB),
        (lv.PE_START, lv.SWAP_EXTENTS * lv.EXTENT),
    ]
    assert whole[1].label == "sendense-ext4"
    gpt = service.partitions("p1", GPT_LVM)
    pv_at = MIB
    assert [(p.number, p.scheme, p.name, p.filesystem, p.found, p.offset_bytes) for p in gpt] == [
        (1, "gpt", "pv", None, "LVM2 PV", pv_at),
        (2, "gpt", None, None, "swap", pv_at + lv.PV_BYTES),
        (3, "lvm", "vg0/root", "ext4", None, pv_at + root_at),
        (4, "lvm", "vg0/swap", None, "swap", pv_at + lv.PE_START),
    ]
    assert gpt[0].type and "LVM" in gpt[0].type
    # The LV's file system whole, as a tar, is the manifest (and mke2fs's lost+found).
    _, data = _content(service, GPT_LVM, "/", 3)
    members = untar(data)
    assert set(members) == {k.path.lstrip("/") for k in KNOWN["ext4"]} | {"lost+found"}
    big = next(k for k in KNOWN["ext4"] if k.path == "/docs/nested/data.bin")
    assert members["docs/nested/data.bin"][1] == big.data


def test_the_pv_writes_what_lvm_itself_checks() -> None:
    """The CRCs dissect skips, as LVM computes them (a real LVM would take the PV)."""
    lv = lvm_image
    head = lv.pv_head(lv.PV_BYTES)
    label = head[512:1024]
    assert label[:8] == b"LABELONE" and label[24:32] == b"LVM2 001"
    assert int.from_bytes(label[16:20], "little") == lv.calc_crc(label[20:])
    mda = head[lv.MDA_OFFSET : lv.MDA_OFFSET + 512]
    assert mda[4:20] == lv.MDA_MAGIC
    assert int.from_bytes(mda[:4], "little") == lv.calc_crc(mda[4:])
    # calc_crc is zlib's CRC-32 without its inversions: from 0xffffffff, inverted, zlib's.
    assert lv.calc_crc(b"123456789", 0xFFFFFFFF) ^ 0xFFFFFFFF == 0xCBF43926


def test_an_unknown_disk_names_the_disks_there_are(service: FileService) -> None:
    with pytest.raises(NotFound, match=r"no disk 99 \(disks: 1, 2, 3, 4, 5, 6, 7, 8, 9\)"):
        service.partitions("p1", 99)


def test_sessions_are_reused_swept_when_idle_and_never_under_a_stream(
    service: FileService, settings: Settings
) -> None:
    service.partitions("p1", GPT)
    service.listing("p1", GPT, FileQuery(path="/", partition=1))
    assert len(qemu_nbd_pids(str(settings.run))) == 1  # one qemu-nbd for both
    session = service.sessions.open[("p1", GPT)]
    later = session.last_used + service.sessions.idle_seconds
    _, _, stream = service.content("p1", GPT, FileQuery(path="/docs", partition=1), False)
    assert service.sweep(later) == []  # a stream holds it
    asyncio.run(stream.aclose())  # never started: gives the session back
    assert service.sweep(service.sessions.open[("p1", GPT)].last_used + 1) == []
    assert service.sweep(later + 10**6) == ["file session of point p1 disk 1 closed (idle)"]
    assert qemu_nbd_pids(str(settings.run)) == []
