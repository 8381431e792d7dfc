"""The file routes through the real hub: a restore point written straight in the
database whose disks' qcow2 files are made from fsimages' images."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from engine.config import Settings
from engine.contract.files import HEADER_KIND, HEADER_MODE, HEADER_MTIME, TAR_MEDIA_TYPE
from engine.db.models import BackupDisk, BackupJob
from engine.db.session import session_scope
from engine.lab.fsimages import KNOWN, MIB, build_fat_disk, build_gpt_disk
from tests.fixtures.backups import seed_vm
from tests.fixtures.services import Services
from tests.test_files_engine import untar

POINT = "backup-fsvm-1"
BASE = f"/api/v1/restore-points/{POINT}/disks"


def _seed(settings: Settings, folder: Path) -> None:
    repo_id = seed_vm(settings, credential=False)
    build_gpt_disk(folder / "gpt.img")
    build_fat_disk(folder / "fat.img")
    disks = []
    for key, name in ((2000, "gpt"), (2001, "fat")):
        qcow2 = folder / f"{key}.qcow2"
        convert = ["qemu-img", "convert", "-q", "-O", "qcow2", str(folder / f"{name}.img")]
        subprocess.run([*convert, str(qcow2)], check=True)
        disks.append(
            BackupDisk(
                disk_key=key,
                nbd_export_name=f"fsvm-disk{key}-1",
                qcow2_path=str(qcow2),
                status="completed",
                bytes_total=64 * MIB,
            )
        )
    with session_scope(settings.db_url) as s:
        s.add(
            BackupJob(
                id=POINT,
                vm_context_id="ctx-pgtest1-20251006-203401",
                vm_name="pgtest1",
                repository_id=repo_id,
                status="completed",
                completed_at=datetime(2025, 10, 6, 20, 35),
                disks=disks,
            )
        )


@pytest.fixture
def hub(settings: Settings, services_factory: Callable[..., Services], tmp_path: Path) -> Services:
    _seed(settings, tmp_path)
    return services_factory(node=False)


def test_file_routes_list_stat_stream_and_tar(hub: Services) -> None:
    with hub.client() as api:
        parts = api.get(f"{BASE}/2000/partitions")
        assert parts.status_code == 200, parts.text
        assert [(p["number"], p["filesystem"]) for p in parts.json()] == [(1, "ext4"), (2, "ntfs")]

        listing = api.get(f"{BASE}/2000/files", params={"path": "/", "partition": 1}).json()
        names = {e["name"] for e in listing["entries"]}
        assert {k.path.lstrip("/") for k in KNOWN["ext4"] if k.path.count("/") == 1} <= names
        assert listing["filesystem"] == "ext4" and listing["partition"] == 1

        run = api.get(f"{BASE}/2000/files/stat", params={"path": "/run.sh", "partition": 1})
        assert run.json()["mode"] == 0o755 and run.json()["kind"] == "file"

        known = next(k for k in KNOWN["ext4"] if k.path == "/docs/nested/data.bin")
        got = api.get(f"{BASE}/2000/files/content", params={"path": known.path, "partition": 1})
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == known.sha256
        assert got.headers["content-length"] == str(len(known.data or b""))
        assert got.headers[HEADER_KIND] == "file" and got.headers[HEADER_MODE] == "644"
        assert float(got.headers[HEADER_MTIME]) == known.mtime.timestamp()  # type: ignore[union-attr]

        with api.stream("GET", f"{BASE}/2001/files/content", params={"path": "/Folder One"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == TAR_MEDIA_TYPE
            members = untar(r.read())
        fat = {k.path.lstrip("/"): k for k in KNOWN["fat"] if k.path.startswith("/Folder One")}
        assert set(members) == set(fat)
        for name, k in fat.items():
            assert members[name][1] == k.data


@pytest.mark.parametrize(
    ("url", "params", "status", "words"),
    [
        ("2000/files", {"path": "/nope", "partition": 1}, 404, ["/nope", "ext4", "partition 1"]),
        ("2000/files", {"path": "/", "partition": 3}, 404, ["no partition 3", "1 (ext4)"]),
        ("2000/files", {"path": "/"}, 422, ["several file systems"]),
        ("2009/partitions", {}, 404, ["no disk 2009", "2000, 2001"]),
        ("2000/files/content", {"path": "/x", "partition": 1}, 404, ["/x"]),
        ("2000/files", {"path": "/", "partition": -1}, 422, ["partition"]),
    ],
)
def test_file_route_errors_are_one_line(
    hub: Services, url: str, params: dict, status: int, words: list[str]
) -> None:
    with hub.client() as api:
        answer = api.get(f"{BASE}/{url}", params=params)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert "\n" not in detail and all(w in detail for w in words), detail
