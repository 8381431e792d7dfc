"""Single files out of a restore point: ``sendense restore files`` on a backup of the lab's
fstest1 (real ext4, NTFS and FAT file systems holding ``fsimages.KNOWN``) through the real
hub and node, and ``engine/extract``'s refusal of hostile tar streams."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath

import httpx
import pytest

from engine.contract.files import FileEntry, FileKind, FolderListing, Partition
from engine.errors import BadInput
from engine.extract import ExtractResult, UnsafeArchive, check_target, extract
from engine.hub_client import HubClient
from engine.lab.fsimages import KNOWN, KnownFile
from tests.fixtures.known_files import assert_entry
from tests.fixtures.points import Point

# Where each file system is on fstest1: (disk key, partition number).
WHERE = {"ext4": (2000, 1), "ntfs": (2000, 2), "fat": (2001, 0)}


def _files(point: Point, fs: str, *args: str, partition: bool = True) -> list[str]:
    disk, number = WHERE[fs]
    extra = ["--partition", str(number)] if partition else []
    return ["restore", "files", point.point_id, "--disk", str(disk), *args, *extra]


def _ok(point: Point, *args: str) -> str:
    done = point.services.sendense(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _one_line_error(point: Point, code: int, *args: str) -> str:
    done = point.services.sendense(*args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def _folders(fs: str) -> set[str]:
    return {str(PurePosixPath(k.path).parent) for k in KNOWN[fs]}


def _assert_extracted(root: Path, known: KnownFile) -> None:
    """The file written under ``root`` for ``known`` (its path relative to the file
    system's root) is what the file system holds."""
    target = root / known.path.lstrip("/")
    st = target.lstat()
    if known.kind is FileKind.SYMLINK:
        assert stat.S_ISLNK(st.st_mode) and os.readlink(target) == known.symlink_target
    elif known.kind is FileKind.DIRECTORY:
        assert stat.S_ISDIR(st.st_mode), known.path
    else:
        assert stat.S_ISREG(st.st_mode), known.path
        assert hashlib.sha256(target.read_bytes()).hexdigest() == known.sha256, known.path
        assert st.st_size == len(known.data or b"")
    if known.mode is not None and known.kind is not FileKind.SYMLINK:
        assert stat.S_IMODE(st.st_mode) == known.mode, known.path
    if known.mtime is not None:
        assert abs(st.st_mtime - known.mtime.timestamp()) < 1e-3, known.path


# ---- against the real hub -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fs", sorted(KNOWN))
def test_every_known_file_is_listed_in_its_folder(fs_point: Point, fs: str) -> None:
    for folder in sorted(_folders(fs)):
        listing = FolderListing.model_validate_json(
            _ok(fs_point, *_files(fs_point, fs, "ls", folder, "--json"))
        )
        assert listing.path == folder
        by_name = {e.name: e for e in listing.entries}
        for known in KNOWN[fs]:
            if str(PurePosixPath(known.path).parent) == folder:
                name = PurePosixPath(known.path).name
                assert name in by_name, f"{known.path} not listed in {folder}: {sorted(by_name)}"
                assert_entry(by_name[name], known)


@pytest.mark.slow
def test_ls_reads_like_ls_l(fs_point: Point) -> None:
    lines = _ok(fs_point, *_files(fs_point, "ext4", "ls", "/")).splitlines()
    run = next(line for line in lines if line.endswith("  run.sh"))
    assert run.startswith("-rwxr-xr-x") and " 19  2024-05-17 " in run
    assert any(line.startswith("drwxr-xr-x") and line.endswith("  docs") for line in lines)
    assert any(
        line.startswith("lrwxrwxrwx") and line.endswith("link-to-hello -> hello.txt")
        for line in lines
    )
    assert any(line.endswith("  café ünïcödé – 日本.txt") for line in lines)  # noqa: RUF001


@pytest.mark.slow
@pytest.mark.parametrize("fs", sorted(KNOWN))
def test_get_extracts_every_known_file_as_it_is(fs_point: Point, fs: str, tmp_path: Path) -> None:
    top = sorted({"/" + k.path.lstrip("/").split("/", 1)[0] for k in KNOWN[fs]})
    out = _ok(fs_point, *_files(fs_point, fs, "get", *top, "--to", str(tmp_path / "out")))
    files = sum(k.kind is FileKind.FILE for k in KNOWN[fs])
    assert out.strip().startswith(f"{files} files, ") and out.strip().endswith(
        str(tmp_path / "out")
    )
    for known in KNOWN[fs]:
        _assert_extracted(tmp_path / "out", known)
    # Folders come back whole and with nothing else: no temporary names left either.
    written = {"/" + str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")}
    assert written == {k.path for k in KNOWN[fs]}


@pytest.mark.slow
def test_a_nested_file_and_a_folder_come_under_their_own_names(
    fs_point: Point, tmp_path: Path
) -> None:
    _ok(
        fs_point,
        *_files(fs_point, "ext4", "get", "/docs/nested", "/docs/up-link", "--to", str(tmp_path)),
    )
    for known in KNOWN["ext4"]:
        if known.path.startswith("/docs/nested/") or known.path == "/docs/nested":
            _assert_extracted(tmp_path, KnownFile(**{**known.__dict__, "path": known.path[5:]}))
    assert os.readlink(tmp_path / "up-link") == "../run.sh"  # untouched, even pointing up


@pytest.mark.slow
def test_partitions_and_a_disk_with_several_file_systems(fs_point: Point, tmp_path: Path) -> None:
    shown = json.loads(
        _ok(fs_point, *_files(fs_point, "ext4", "partitions", "--json", partition=False))
    )
    parts = [Partition.model_validate(p) for p in shown]
    assert [(p.number, p.filesystem) for p in parts] == [(1, "ext4"), (2, "ntfs")]
    fat = [
        Partition.model_validate(p)
        for p in json.loads(
            _ok(fs_point, *_files(fs_point, "fat", "partitions", "--json", partition=False))
        )
    ]
    assert [(p.number, p.scheme, p.filesystem) for p in fat] == [(0, None, fat[0].filesystem)]
    assert fat[0].filesystem and fat[0].filesystem.startswith("fat")
    # ls with neither path nor partition: the partitions to choose from, not a failure.
    done = fs_point.services.sendense(*_files(fs_point, "ext4", "ls", partition=False))
    assert done.returncode == 0, done.stderr
    assert "ext4" in done.stdout and "ntfs" in done.stdout and "--partition" in done.stderr
    # The FAT disk has one file system: no --partition needed.
    assert "HELLO.TXT" in _ok(fs_point, *_files(fs_point, "fat", "ls", partition=False))
    line = _one_line_error(
        fs_point,
        2,
        *_files(
            fs_point, "ext4", "get", "/hello.txt", "--to", str(tmp_path / "x"), partition=False
        ),
    )
    assert "ext4" in line and "ntfs" in line
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_bad_input_is_one_line_each(fs_point: Point, tmp_path: Path) -> None:
    line = _one_line_error(fs_point, 7, *_files(fs_point, "ext4", "ls", "/no such file"))
    assert "/no such file" in line
    line = _one_line_error(
        fs_point, 7, *_files(fs_point, "ext4", "get", "/nope", "--to", str(tmp_path / "o"))
    )
    assert "/nope" in line and not (tmp_path / "o").exists()
    disk = ["restore", "files", fs_point.point_id, "--disk", "2000"]
    line = _one_line_error(fs_point, 7, *disk, "ls", "/", "--partition", "9")
    assert "9" in line
    blocker = tmp_path / "a file"
    blocker.write_text("")
    line = _one_line_error(
        fs_point, 2, *_files(fs_point, "ext4", "get", "/hello.txt", "--to", str(blocker / "sub"))
    )
    assert line.startswith(f"error: --to {blocker / 'sub'}: ")
    assert list(tmp_path.iterdir()) == [blocker]


@pytest.mark.slow
def test_a_disk_without_a_known_file_system_names_what_is_there(point: Point) -> None:
    # pgtest1's disks hold the lab's pseudo-random pattern: no file system at all.
    line = _one_line_error(
        point, 2, "restore", "files", point.point_id, "--disk", "2000", "ls", "/"
    )
    assert "unknown data" in line or "zeros" in line


@pytest.mark.slow
def test_extract_reports_progress_and_totals(fs_point: Point, tmp_path: Path) -> None:
    """What the console calls: a known total for files, a few reports, the last one whole."""
    from engine.extract import ExtractProgress

    seen: list[ExtractProgress] = []
    big = next(k for k in KNOWN["ext4"] if k.path == "/docs/nested/data.bin")

    async def run() -> object:
        async with HubClient(fs_point.services.hub.url, fs_point.services.token) as hub:
            return await extract(
                hub, fs_point.point_id, 2000, [big.path, "/run.sh"], tmp_path,
                partition=1, progress=seen.append,
            )  # fmt: skip

    result = asyncio.run(run())
    total = len(big.data or b"") + 19
    assert result == ExtractResult(files=2, folders=0, symlinks=0, bytes=total, skipped=[])
    assert seen and all(p.bytes_total == total for p in seen)
    assert seen[-1].files == 2 and seen[-1].bytes_done == total
    assert {p.path for p in seen} <= {big.path, "/run.sh"}


# ---- hostile tar streams (a fault the real hub cannot be made to show: a fake answer) ----


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(
    name: str, data: bytes | None = None, link: str | None = None
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
    elif data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size = len(data)
    return info, data


def _fake_hub(body: bytes) -> HubClient:
    """A hub client whose hub answers every stat with a folder and every content with
    ``body``, in small chunks."""

    async def chunks() -> object:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/files/stat"):
            entry = FileEntry(path="/d", name="d", kind=FileKind.DIRECTORY)
            return httpx.Response(200, content=entry.model_dump_json())
        return httpx.Response(200, content=chunks(), headers={"Content-Type": "application/x-tar"})  # type: ignore[arg-type]

    return HubClient("http://hub.invalid", "t", transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(
    ("members", "refused"),
    [
        ([_member("d", None), _member("/tmp/evil", b"x")], "absolute"),
        ([_member("d", None), _member("d/../../evil", b"x")], "'..'"),
        (
            [_member("d", None), _member("d/out", link="{outside}"), _member("d/out/evil", b"x")],
            "through",
        ),
        ([_member("d/link", link="/"), _member("d/link/tmp/evil", b"x")], "through"),
    ],
    ids=["absolute", "dotdot", "under-a-symlink-out", "under-a-symlink-root"],
)
def test_a_hostile_tar_member_is_refused(tmp_path: Path, members: list, refused: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [(m, d) if not m.issym() else (_retarget(m, str(outside)), d) for m, d in members]
    to = tmp_path / "to"

    async def run() -> None:
        async with _fake_hub(_tar(*members)) as hub:
            await extract(hub, "p", 2000, ["/d"], to)

    with pytest.raises(UnsafeArchive, match=refused):
        asyncio.run(run())
    assert list(outside.iterdir()) == []
    assert not [p for p in to.rglob("*") if ".sendense-" in p.name]


def _retarget(info: tarfile.TarInfo, outside: str) -> tarfile.TarInfo:
    info.linkname = info.linkname.format(outside=outside)
    return info


def test_check_target_refuses_what_cannot_be_written_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(BadInput, match="cannot write there"):
        check_target(tmp_path / "file" / "sub")
    with pytest.raises(BadInput, match="not a folder"):
        check_target(tmp_path / "file")
    check_target(tmp_path / "new" / "deeper")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
