"""Instant access: a point's disk as a read-only qemu-nbd export, through a real hub (and
in-process, where the clock is the test's). Byte-identical to the lab's disk, refusing
writes, one qemu-nbd per disk however often it is asked for, ended on its TTL, and kept
or ended as its lease says across a hub restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbd
import pytest

from engine.cli.launcher import _end_instant_exports
from engine.cli.restore import duration_seconds
from engine.config import Settings
from engine.contract.restore import ExportRequest
from engine.db.models import BackupDisk, BackupJob
from engine.db.models import RestoreExport as Lease
from engine.db.session import session_scope
from engine.errors import BadInput, NotFound
from engine.hub.exports.manager import ExportManager
from engine.hub.restores.instant import InstantExports
from engine.hub_client import HubClient
from tests.conftest import wait_for
from tests.fixtures.backups import running, seed_vm
from tests.fixtures.exports import qemu_nbd_pids
from tests.fixtures.points import Point, chained_point
from tests.fixtures.services import Services, processes_mentioning

MiB = 1024 * 1024


def compare(a: str, b: str, fmt_a: str = "raw", fmt_b: str = "raw") -> None:
    done = subprocess.run(
        ["qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, a, b], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def export(svc: Services, point_id: str, disk_key: int, ttl: int = 600) -> dict:
    with svc.client() as api:
        answer = api.post(
            f"/api/v1/restore-points/{point_id}/exports",
            json={"disk_key": disk_key, "ttl_seconds": ttl},
        )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def no_qemu_nbd(svc: Services) -> bool:
    return processes_mentioning(str(svc.home), "qemu-nbd") == []


def test_export_is_identical_read_only_one_per_disk_and_holds_its_point(
    point: Point, tmp_path: Path
) -> None:
    svc, flat = point.services, point.registration.pgtest1.flat
    first = export(svc, point.point_id, 2000)
    assert first["name"].startswith("point-pgtest1-disk2000-")
    assert first["uri"] == f"nbd://127.0.0.1:{first['port']}/{first['name']}"
    assert first["port"] in svc.nbd_ports and running(first["pid"])
    assert first["point_id"] == point.point_id and first["vm_name"] == "pgtest1"
    compare(first["uri"], str(flat[2000]))

    h = nbd.NBD()
    h.connect_uri(first["uri"])
    try:
        assert h.is_read_only()
        with pytest.raises(nbd.Error):
            h.pwrite(b"\xff" * 4096, 0)
    finally:
        h.shutdown()
    compare(first["uri"], str(flat[2000]))

    # Asked again: the same export, its lease extended; no second qemu-nbd.
    again = export(svc, point.point_id, 2000, ttl=3600)
    assert (again["name"], again["pid"], again["port"]) == (
        first["name"],
        first["pid"],
        first["port"],
    )
    assert datetime.fromisoformat(again["expires_at"]) > datetime.fromisoformat(first["expires_at"])
    assert len(processes_mentioning(first["name"], "qemu-nbd")) == 1
    second = export(svc, point.point_id, 2001)
    assert second["name"] != first["name"]
    compare(second["uri"], str(flat[2001]))
    # An exported disk can be restored meanwhile (both only read the chain).
    with svc.client() as api:
        body = {"point_id": point.point_id, "disk_key": 2001, "path": str(tmp_path / "d.raw")}
        restore_id = api.post("/api/v1/restores/disk", json=body).json()["restore_id"]
        wait_for(
            lambda: api.get(f"/api/v1/restores/{restore_id}").json()["status"] == "completed",
            what="the restore of an exported disk",
        )
    compare(str(tmp_path / "d.raw"), str(flat[2001]))

    with svc.client() as api:
        listed = api.get("/api/v1/restore-exports").json()
        assert [e["name"] for e in listed] == [second["name"], first["name"]]  # soonest first
        shown = api.get(f"/api/v1/restore-points/{point.point_id}").json()
        assert shown["exports"] == sorted([first["name"], second["name"]])
        refused = api.delete(f"/api/v1/restore-points/{point.point_id}")
        assert refused.status_code == 409
        assert first["name"] in refused.json()["detail"]
        assert all(p.exists() for p in point.disks.values())

        for name in (first["name"], second["name"]):
            assert api.delete(f"/api/v1/restore-exports/{name}").status_code == 204
        assert not running(first["pid"]) and not running(second["pid"])
        assert no_qemu_nbd(svc)
        unknown = api.delete(f"/api/v1/restore-exports/{first['name']}")
        assert unknown.status_code == 404
        assert unknown.json()["detail"] == f"there is no instant export named {first['name']}"
        assert api.get("/api/v1/restore-exports").json() == []
        assert api.delete(f"/api/v1/restore-points/{point.point_id}").status_code == 204


def test_export_of_an_incremental_reads_through_its_chain(point: Point, settings: Settings) -> None:
    svc = point.services
    child = chained_point(settings, point)
    answer = export(svc, child.point_id, 2000)
    compare(answer["uri"], str(child.disks[2000]), fmt_b="qcow2")
    with svc.client() as api:
        assert api.delete(f"/api/v1/restore-exports/{answer['name']}").status_code == 204
    assert no_qemu_nbd(svc)


def test_bad_exports_are_one_line_and_start_nothing(point: Point) -> None:
    svc = point.services
    path = f"/api/v1/restore-points/{point.point_id}/exports"
    with svc.client() as api:
        no_disk = api.post(path, json={"disk_key": 2002})
        no_point = api.post("/api/v1/restore-points/backup-nope-1/exports", json={"disk_key": 1})
        short = api.post(path, json={"disk_key": 2000, "ttl_seconds": 10})
        long = api.post(path, json={"disk_key": 2000, "ttl_seconds": 8 * 86400})
    assert no_disk.status_code == 404
    assert no_disk.json()["detail"] == (
        f"point {point.point_id} has no disk 2002 (disks: 2000, 2001)"
    )
    assert no_point.status_code == 404
    assert short.status_code == 422 and long.status_code == 422
    assert no_qemu_nbd(svc)


def test_cli_restore_export_exports_unexport(point: Point) -> None:
    svc = point.services
    made = svc.sendense("restore", "export", point.point_id, "--disk", "2000", "--ttl", "30m")
    assert made.returncode == 0, made.stderr
    uri = made.stdout.strip()
    assert uri.startswith("nbd://127.0.0.1:") and "\n" not in uri
    compare(uri, str(point.registration.pgtest1.flat[2000]))

    listed = svc.sendense("restore", "exports", "--json")
    exports = json.loads(listed.stdout)
    assert [e["uri"] for e in exports] == [uri]
    expires = datetime.fromisoformat(exports[0]["expires_at"])
    assert timedelta(minutes=29) < expires - datetime.now(UTC) <= timedelta(minutes=30)
    table = svc.sendense("restore", "exports")
    assert exports[0]["name"] in table.stdout

    as_json = svc.sendense(
        "restore", "export", point.point_id, "--disk", "2000", "--ttl", "2d", "--json"
    )
    assert json.loads(as_json.stdout)["name"] == exports[0]["name"]

    for ttl in ("abc", "10s"):
        bad = svc.sendense("restore", "export", point.point_id, "--disk", "2000", "--ttl", ttl)
        assert bad.returncode == 2, (ttl, bad.stderr)
        assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: --ttl")
    no_disk = svc.sendense("restore", "export", point.point_id, "--disk", "2002")
    assert no_disk.returncode == 7
    assert no_disk.stderr == f"error: point {point.point_id} has no disk 2002 (disks: 2000, 2001)\n"
    no_point = svc.sendense("restore", "export", "backup-nope-1", "--disk", "2000")
    assert no_point.returncode == 7 and no_point.stderr.count("\n") == 1

    ended = svc.sendense("restore", "unexport", exports[0]["name"])
    assert ended.returncode == 0, ended.stderr
    again = svc.sendense("restore", "unexport", exports[0]["name"])
    assert again.returncode == 7 and again.stderr.count("\n") == 1
    assert no_qemu_nbd(svc)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("4h", 14400), ("2d", 172800), ("600", 600)]
)
def test_ttl_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["abc", "10s", "8d", "5x", "", "-1m", "1.5h"])
def test_bad_ttl_durations_are_one_line(text: str) -> None:
    with pytest.raises(BadInput, match=r"^--ttl .*(duration like|lives from)") as refused:
        duration_seconds(text)
    assert "\n" not in str(refused.value)


def _lease_ends_at(settings: Settings, name: str, when: datetime) -> None:
    with session_scope(settings.db_url) as s:
        lease = s.get(Lease, name)
        assert lease is not None
        lease.expires_at = when.astimezone(UTC).replace(tzinfo=None)


def test_exports_across_a_hub_crash_kept_while_leased_and_swept_after(
    point: Point, settings: Settings
) -> None:
    svc = point.services
    kept = export(svc, point.point_id, 2000)
    lapsed = export(svc, point.point_id, 2001)
    svc.hub.stop(signal.SIGKILL)
    assert running(kept["pid"]) and running(lapsed["pid"])  # exports outlive the hub
    _lease_ends_at(settings, lapsed["name"], datetime.now(UTC) - timedelta(seconds=1))
    svc.start(svc.hub)

    assert not running(lapsed["pid"])  # its lease ran out while the hub was down
    assert running(kept["pid"])
    with svc.client() as api:
        listed = api.get("/api/v1/restore-exports").json()
    assert [(e["name"], e["pid"]) for e in listed] == [(kept["name"], kept["pid"])]
    compare(kept["uri"], str(point.registration.pgtest1.flat[2000]))

    # The restarted hub's watch still ends it when its lease runs out.
    _lease_ends_at(settings, kept["name"], datetime.now(UTC))
    wait_for(lambda: not running(kept["pid"]), timeout=10, what="the lapsed export to end")
    with svc.client() as api:
        assert api.get("/api/v1/restore-exports").json() == []
    assert no_qemu_nbd(svc)


# ---- leases in-process, on the test's clock ------------------------------------------


def _seed_point(settings: Settings, folder: Path) -> str:
    """A completed point of pgtest1 straight in the database, its qcow2 holding 1 MiB."""
    repo_id = seed_vm(settings, credential=False)
    qcow2 = folder / "2000.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "4M"], check=True)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 1M", str(qcow2)],
        check=True,
        capture_output=True,
    )
    with session_scope(settings.db_url) as s:
        s.add(
            BackupJob(
                id="backup-pgtest1-1",
                vm_context_id="ctx-pgtest1-20251006-203401",
                vm_name="pgtest1",
                repository_id=repo_id,
                status="completed",
                completed_at=datetime(2025, 10, 6, 20, 35),
                disks=[
                    BackupDisk(
                        disk_key=2000,
                        nbd_export_name="pgtest1-disk2000-1",
                        qcow2_path=str(qcow2),
                        status="completed",
                        bytes_total=4 * MiB,
                    )
                ],
            )
        )
    return "backup-pgtest1-1"


T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_ttl_on_a_controlled_clock_and_across_a_restart(
    settings: Settings, make_export_manager, tmp_path: Path
) -> None:
    point_id = _seed_point(settings, tmp_path)
    leases = InstantExports(settings, make_export_manager())
    one = leases.export(point_id, ExportRequest(disk_key=2000, ttl_seconds=60), T0)
    assert one.expires_at == T0 + timedelta(seconds=60)
    assert leases.sweep(T0 + timedelta(seconds=59)) == []
    # Asked again at T0+30s for a minute: the lease runs to T0+90s, same process.
    two = leases.export(
        point_id, ExportRequest(disk_key=2000, ttl_seconds=60), T0 + timedelta(seconds=30)
    )
    assert (two.name, two.pid) == (one.name, one.pid)
    assert two.expires_at == T0 + timedelta(seconds=90)
    # A shorter ask never shortens it.
    three = leases.export(point_id, ExportRequest(disk_key=2000, ttl_seconds=60), T0)
    assert three.expires_at == two.expires_at
    assert leases.sweep(T0 + timedelta(seconds=61)) == []

    # A restarted hub: a new manager adopts the export, the lease still runs.
    restarted_manager = make_export_manager()
    restarted_manager.adopt()
    restarted = InstantExports(settings, restarted_manager)
    assert restarted.sweep(T0 + timedelta(seconds=89)) == []
    assert [e.name for e in restarted.leased()] == [one.name]
    assert restarted.sweep(T0 + timedelta(seconds=90)) == [one.name]
    assert not running(one.pid) and qemu_nbd_pids(str(settings.run)) == []
    assert restarted.leased() == []
    with pytest.raises(NotFound):
        restarted.unexport(one.name)


def _kill(pid: int) -> None:
    """SIGKILL a qemu-nbd this process started, and wait until it can be reaped (its
    threads gone too), leaving the reaping to its manager."""
    os.kill(pid, signal.SIGKILL)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def test_a_dead_qemu_nbd_is_forgotten_and_asked_again_started_anew(
    settings: Settings, export_manager: ExportManager, tmp_path: Path
) -> None:
    point_id = _seed_point(settings, tmp_path)
    leases = InstantExports(settings, export_manager)
    one = leases.export(point_id, ExportRequest(disk_key=2000), T0)
    _kill(one.pid)
    again = leases.export(point_id, ExportRequest(disk_key=2000), T0)
    assert again.name == one.name and again.pid != one.pid and running(again.pid)
    _kill(again.pid)
    assert leases.sweep(T0) == [one.name]
    assert leases.leased() == []


def test_stopping_the_hub_for_good_ends_its_instant_exports(point: Point) -> None:
    """`sendense stop` ends the leases first: a restarted hub would keep them, but a hub
    stopped for good could never end them on their TTL."""
    svc = point.services
    pids = [export(svc, point.point_id, key)["pid"] for key in (2000, 2001)]

    async def end() -> int:
        async with HubClient(svc.hub.url, svc.token) as hub:
            return await _end_instant_exports(hub)

    assert asyncio.run(end()) == 2
    wait_for(lambda: not any(running(pid) for pid in pids), what="the exports' qemu-nbd to end")
    with svc.client() as api:
        assert api.get("/api/v1/restore-exports").json() == []
