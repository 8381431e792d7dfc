"""Restore points through a real hub and node on the lab: the completed backups, newest
first, found by a VM's name or path; a failed backup is none; deleting one removes its
files, unless a later point of its chain builds on it."""

from __future__ import annotations

import json
from datetime import timedelta

from engine.config import Settings
from engine.db.models import BackupJob, VMDisk
from engine.db.session import session_scope
from tests.fixtures.points import Point, back_up, chained_point

PGTEST1 = "/DatabanxDC/vm/pgtest1"


def _fail_a_backup(settings: Settings, point: Point) -> str:
    """A failed backup of the same VM, newer than the point (its row as a failure
    leaves it: no files)."""
    with session_scope(settings.db_url) as s:
        done = s.get(BackupJob, point.point_id)
        assert done is not None and done.completed_at is not None
        failed_id = f"{point.point_id}-failed"
        s.add(
            BackupJob(
                id=failed_id,
                vm_context_id=done.vm_context_id,
                vm_name=done.vm_name,
                repository_id=done.repository_id,
                status="failed",
                error_message="the client exited 1",
                created_at=done.completed_at + timedelta(minutes=5),
            )
        )
    return failed_id


def test_points_newest_first_by_name_or_path_and_never_a_failed_backup(
    point: Point, settings: Settings
) -> None:
    svc = point.services
    second = back_up(svc, point.registration)
    failed_id = _fail_a_backup(settings, point)
    with svc.client() as api:
        every = api.get("/api/v1/restore-points").json()
        by_name = api.get("/api/v1/restore-points", params={"vm": "pgtest1"}).json()
        by_path = api.get("/api/v1/restore-points", params={"vm": PGTEST1}).json()
        other = api.get("/api/v1/restore-points", params={"vm": "web 01"}).json()
        one = api.get("/api/v1/restore-points", params={"limit": 1}).json()
        failed = api.get(f"/api/v1/restore-points/{failed_id}")
        unknown = api.get("/api/v1/restore-points/backup-nope-1")
        shown = api.get(f"/api/v1/restore-points/{point.point_id}").json()
    ids = [second.point_id, point.point_id]
    assert [p["point_id"] for p in every] == ids
    assert [p["point_id"] for p in by_name] == ids
    assert [p["point_id"] for p in by_path] == ids
    assert other == []
    assert [p["point_id"] for p in one] == [second.point_id]
    assert failed.status_code == 404
    assert failed.json()["detail"] == f"not a restore point: backup {failed_id} is failed"
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "restore point backup-nope-1 does not exist"

    assert shown["vm_name"] == "pgtest1" and shown["vm_path"] == PGTEST1
    assert shown["backup_type"] == "full" and shown["parent_point_id"] is None
    assert shown["chain"] == [point.point_id]
    assert shown["repository_id"] == point.registration.repository_id
    assert shown["repository_name"] and shown["node_name"] == "local"
    assert shown["verification"] == "unverified" and shown["exports"] == []
    assert [d["disk_key"] for d in shown["disks"]] == [2000, 2001]
    assert {d["disk_key"]: d["qcow2_path"] for d in shown["disks"]} == {
        k: str(v) for k, v in point.disks.items()
    }
    sizes = [p.stat().st_size for p in point.disks.values()]
    assert [d["qcow2_size_bytes"] for d in shown["disks"]] == sizes
    assert shown["size_bytes"] == sum(sizes)
    assert shown["bytes_total"] == sum(d["capacity_bytes"] for d in shown["disks"]) > 0


def test_chain_and_delete_a_point_only_once_nothing_builds_on_it(
    point: Point, settings: Settings
) -> None:
    svc = point.services
    child = chained_point(settings, point)
    with svc.client() as api:
        listed = api.get("/api/v1/restore-points").json()
        view = api.get(f"/api/v1/restore-points/{child.point_id}").json()
        refused = api.delete(f"/api/v1/restore-points/{point.point_id}")
        assert [p["point_id"] for p in listed] == [child.point_id, point.point_id]
        assert view["chain"] == [point.point_id, child.point_id]
        assert view["parent_point_id"] == point.point_id
        assert view["backup_type"] == "incremental"
        assert [d["parent_qcow2_path"] for d in view["disks"]] == [
            str(point.disks[k]) for k in (2000, 2001)
        ]
        assert refused.status_code == 409
        assert refused.json()["detail"] == (
            f"point {point.point_id} is the base of point {child.point_id}: delete that one "
            f"first, or merge it into it (sendense chain merge {point.point_id})"
        )
        assert all(p.exists() for p in point.disks.values())

        assert api.delete(f"/api/v1/restore-points/{child.point_id}").status_code == 204
        assert not any(p.exists() for p in child.disks.values())
        assert all(p.exists() for p in point.disks.values())
        # The VM's change ids are the newest remaining point's: an incremental after
        # this builds on what is there.
        with session_scope(settings.db_url) as s:
            base = s.get(BackupJob, point.point_id)
            assert base is not None
            wanted = {d.disk_key: d.change_id for d in base.disks}
            vm_disks = s.query(VMDisk).filter_by(vm_context_id=base.vm_context_id).all()
            assert {d.disk_key: d.change_id for d in vm_disks} == wanted

        assert api.delete(f"/api/v1/restore-points/{point.point_id}").status_code == 204
        assert not any(p.exists() for p in point.disks.values())
        gone = api.get(f"/api/v1/restore-points/{point.point_id}")
        assert gone.status_code == 404
        again = api.delete(f"/api/v1/restore-points/{point.point_id}")
        assert again.status_code == 404
        assert api.get("/api/v1/restore-points").json() == []


def test_cli_restore_points_list_show_delete(point: Point, settings: Settings) -> None:
    svc = point.services
    failed_id = _fail_a_backup(settings, point)
    listed = svc.sendense("restore-points", "list", "--vm", PGTEST1, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [p["point_id"] for p in json.loads(listed.stdout)] == [point.point_id]
    table = svc.sendense("restore-points", "list")
    assert table.returncode == 0 and point.point_id in table.stdout
    assert failed_id not in table.stdout

    shown = svc.sendense("restore-points", "show", point.point_id)
    assert shown.returncode == 0, shown.stderr
    assert point.point_id in shown.stdout and str(point.disks[2000]) in shown.stdout
    as_json = svc.sendense("restore-points", "show", point.point_id, "--json")
    assert json.loads(as_json.stdout)["point_id"] == point.point_id

    for args in (("show", failed_id), ("show", "backup-nope-1"), ("delete", "backup-nope-1")):
        refused = svc.sendense("restore-points", *args)
        assert refused.returncode == 7, refused.stderr
        assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("error: ")

    deleted = svc.sendense("restore-points", "delete", point.point_id)
    assert deleted.returncode == 0, deleted.stderr
    assert not any(p.exists() for p in point.disks.values())
