"""Merging a chain through the real hub: chains of real qcow2 overlays (qemu-io writes) on
a real backup of the lab's pgtest1; every point that remains reads byte for byte as
before (qemu-img compare against raw copies taken first); merging the full makes a
synthetic full; merging under a reader, or with nothing to merge into, is refused; a hub
killed mid-merge loses no point and its next start removes the temp file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from engine.config import Settings
from engine.db.session import session_scope
from engine.errors import Conflict
from engine.hub.jobs.live import LiveJobs
from engine.hub.restores.merge import (
    ChainMerges,
    Merging,
    Readers,
    marker_of,
    remove_leftovers,
    temp_of,
)
from engine.hub.restores.points import completed_point, drop_point
from engine.hub.verify.manager import VerifyManager
from engine.hub.verify.table import table_path
from tests.fixtures.held import qemu_img_held
from tests.fixtures.points import Point, chained_point
from tests.fixtures.services import make_services

pytestmark = pytest.mark.slow


def raw_copy(qcow2: Path, folder: Path) -> Path:
    raw = folder / f"{qcow2.stem}-{qcow2.parent.name}.raw"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(qcow2), str(raw)],
        check=True,
    )
    return raw


def reads_as(qcow2: Path, raw: Path) -> bool:
    compare = ["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", str(qcow2), str(raw)]
    return subprocess.run(compare, capture_output=True).returncode == 0


def backing_of(qcow2: Path) -> str | None:
    info = ["qemu-img", "info", "--output=json", "-U", str(qcow2)]
    found = json.loads(subprocess.run(info, check=True, capture_output=True).stdout)
    return found.get("backing-filename")


def snapshot(points: list[Point], folder: Path) -> dict[Path, Path]:
    """Each point's disks as raw files: what they must read as after any merge."""
    folder.mkdir(exist_ok=True)
    return {q: raw_copy(q, folder) for p in points for q in p.disks.values()}


def chain(settings: Settings, point: Point) -> list[Point]:
    """full <- b (1 MiB at 1 MiB) <- c (at 2 MiB) <- d (over b's data again)."""
    b = chained_point(settings, point, pattern=0x11, at_mib=1)
    c = chained_point(settings, b, pattern=0x22, at_mib=2)
    d = chained_point(settings, c, pattern=0x33, at_mib=1)
    return [point, b, c, d]


def test_merging_a_middle_point_then_the_full_keeps_every_later_point_as_it_was(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    svc = point.services
    full, b, c, d = chain(settings, point)
    saved = snapshot([full, b, c, d], tmp_path / "saved")
    with svc.client() as api:
        answer = api.post(f"/api/v1/restore-points/{b.point_id}/merge")
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["merged_point_id"] == b.point_id
        assert result["into_point_id"] == c.point_id
        assert result["chain"] == [full.point_id, c.point_id]
        assert result["bytes_copied"] > 0  # b's writes now live in c
        assert api.get(f"/api/v1/restore-points/{b.point_id}").status_code == 404
        view = api.get(f"/api/v1/restore-points/{c.point_id}").json()
        assert view["parent_point_id"] == full.point_id
        assert view["backup_type"] == "incremental"
        assert {x["disk_key"]: x["parent_qcow2_path"] for x in view["disks"]} == {
            k: str(q) for k, q in full.disks.items()
        }
        assert api.get(f"/api/v1/restore-points/{d.point_id}").json()["chain"] == [
            full.point_id,
            c.point_id,
            d.point_id,
        ]
    assert not any(q.exists() or table_path(q).exists() for q in b.disks.values())
    for k, q in c.disks.items():
        assert backing_of(q) == os.path.relpath(full.disks[k], q.parent)
        assert not temp_of(q).exists()
    for p in (full, c, d):
        assert all(reads_as(q, saved[q]) for q in p.disks.values()), p.point_id

    # The full into c: c stands alone, a synthetic full.
    merged = svc.sendense("chain", "merge", full.point_id)
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout.strip() == (
        f"merged {full.point_id} into {c.point_id}: "
        f"{c.point_id} now stands alone (a synthetic full)"
    )
    with svc.client() as api:
        assert api.get(f"/api/v1/restore-points/{full.point_id}").status_code == 404
        view = api.get(f"/api/v1/restore-points/{c.point_id}").json()
        assert view["backup_type"] == "full" and view["parent_point_id"] is None
        assert view["chain"] == [c.point_id]
        assert all(x["parent_qcow2_path"] is None for x in view["disks"])
    assert not any(q.exists() for q in full.disks.values())
    assert all(backing_of(q) is None for q in c.disks.values())
    for p in (c, d):
        assert all(reads_as(q, saved[q]) for q in p.disks.values()), p.point_id

    shown = svc.sendense("chain", "show", d.point_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert [p["point_id"] for p in json.loads(shown.stdout)] == [c.point_id, d.point_id]


def test_merge_is_refused_with_nothing_to_merge_into_or_under_a_reader(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    svc = point.services
    b = chained_point(settings, point, write_mib=7)  # restored slowly: all data
    c = chained_point(settings, b, pattern=0x22, at_mib=2)
    merge_b = f"/api/v1/restore-points/{b.point_id}/merge"
    with svc.client() as api:
        newest = api.post(f"/api/v1/restore-points/{c.point_id}/merge")
        assert newest.status_code == 409
        assert newest.json()["detail"] == (
            f"nothing to merge into: {c.point_id} is the newest point of its chain"
        )
        unknown = api.post("/api/v1/restore-points/backup-nope-1/merge")
        assert unknown.status_code == 404

        lease = api.post(f"/api/v1/restore-points/{c.point_id}/exports", json={"disk_key": 2000})
        assert lease.status_code == 201, lease.text
        name = lease.json()["name"]
        exported = api.post(merge_b)
        assert exported.status_code == 409
        assert exported.json()["detail"] == (
            f"point {c.point_id} has a live export ({name}): unexport it first"
        )
        assert api.delete(f"/api/v1/restore-exports/{name}").status_code == 204

        body = {
            "point_id": b.point_id,
            "disk_key": 2000,
            "path": str(tmp_path / "b.raw"),
            "max_rate_mib": 0.1,
        }
        restore = api.post("/api/v1/restores/disk", json=body)
        assert restore.status_code == 202, restore.text
        restoring = api.post(merge_b)
        assert restoring.status_code == 409
        assert restoring.json()["detail"] == (
            f"point {b.point_id} is being restored: wait for the restore or cancel it"
        )
        api.delete(f"/api/v1/restores/{restore.json()['restore_id']}")

        base = api.delete(f"/api/v1/restore-points/{point.point_id}")
        assert base.status_code == 409
        assert f"sendense chain merge {point.point_id}" in base.json()["detail"]

        # Nothing is left holding the chain: the merge goes through now.
        assert api.post(merge_b).status_code == 200
    missing = svc.sendense("chain", "merge", "backup-nope-1")
    assert missing.returncode == 7
    assert missing.stderr.strip().endswith("restore point backup-nope-1 does not exist")


def test_merge_is_refused_while_a_later_point_is_verified(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    # The verification is held in its first qemu-img until the test lets go of a lock
    # (as in test_verify); the merge asks the same VerifyManager, in this process.
    b = chained_point(settings, point)
    c = chained_point(settings, b, pattern=0x22, at_mib=2)
    with qemu_img_held(settings, tmp_path) as held:
        merging = Merging()
        verify = VerifyManager(held, refuse=merging.refuse)
        readers = Readers(set, verify.busy_points, lambda points: set(), LiveJobs().claim)
        chains = ChainMerges(settings, merging, readers)
        assert verify.start(c.point_id).running
        with pytest.raises(Conflict) as refused:
            chains.merge(b.point_id)
        assert str(refused.value) == (
            f"point {c.point_id} is being verified: wait for the verification"
        )
        assert merging.points == set()  # a refused merge marks nothing
    verify.shutdown()
    assert chains.merge(b.point_id).into_point_id == c.point_id


def test_a_hub_killed_mid_merge_loses_no_point_and_its_next_start_cleans_up(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    # A real qemu-img cannot be made to fail on demand: this one kills the hub (its
    # parent) when asked to rebase, after the copy and before the rename, as a crash.
    full, b, c, d = chain(settings, point)
    saved = snapshot([full, b, c, d], tmp_path / "saved")
    qemu_img = tmp_path / "qemu-img"
    qemu_img.write_text(
        '#!/bin/sh\nif [ "$1" = rebase ]; then kill -9 $PPID; exit 1; fi\nexec qemu-img "$@"\n'
    )
    qemu_img.chmod(0o755)
    point.services.stop()
    crashing = make_services(
        point.services.home, extra_env={"SENDENSE_NBD__QEMU_IMG": str(qemu_img)}
    )
    crashing.start(crashing.hub)
    try:
        with crashing.client() as api, pytest.raises(httpx.HTTPError):  # the hub died: no answer
            api.post(f"/api/v1/restore-points/{b.point_id}/merge")
        assert crashing.hub.proc is not None and crashing.hub.proc.wait(30) == -9
    finally:
        crashing.stop()
    leftovers = [temp_of(q) for q in c.disks.values() if temp_of(q).exists()]
    assert leftovers  # the crash left the copy

    again = make_services(point.services.home)
    again.start(again.hub)
    try:
        assert not any(temp_of(q).exists() for q in c.disks.values())
        assert "left by a merge that did not finish" in again.hub.log()
        with again.client() as api:
            for p in (full, b, c, d):
                assert api.get(f"/api/v1/restore-points/{p.point_id}").status_code == 200
        for p in (full, b, c, d):
            assert all(reads_as(q, saved[q]) for q in p.disks.values()), p.point_id
        assert again.sendense("chain", "merge", b.point_id).returncode == 0
        for p in (full, c, d):
            assert all(reads_as(q, saved[q]) for q in p.disks.values()), p.point_id
    finally:
        again.stop()


def test_a_crash_after_the_rows_changed_leaves_no_orphan_files(
    point: Point, settings: Settings
) -> None:
    # Nothing real stops between the merge's commit and its removal of the point's
    # files, so the state such a crash leaves is made by hand: the point's row gone, its
    # files still there with their markers. Another point's marker (a merge that died
    # before its commit) must leave that point whole.
    b = chained_point(settings, point)
    c = chained_point(settings, b, pattern=0x22, at_mib=2)
    for q in [*b.disks.values(), *c.disks.values()]:
        marker_of(q).touch()
    with session_scope(settings.db_url) as s:  # what the commit does to the rows
        completed_point(s, c.point_id).parent_backup_id = point.point_id
        s.flush()
        drop_point(s, completed_point(s, b.point_id))
    with session_scope(settings.db_url) as s:
        notes = remove_leftovers(s)
    assert sorted(notes) == sorted(
        f"removed {q}: its point was merged away" for q in b.disks.values()
    )
    assert not any(q.exists() or table_path(q).exists() for q in b.disks.values())
    assert all(q.exists() for q in c.disks.values())
    assert not any(marker_of(q).exists() for q in [*b.disks.values(), *c.disks.values()])


def test_a_backup_asked_for_during_a_merge_says_the_merge_holds_the_vm() -> None:
    live = LiveJobs()
    with (
        live.claim("ctx-1", "pgtest1", "its chain is being merged (backup-b)"),
        pytest.raises(Conflict) as refused,
        live.claim("ctx-1", "pgtest1"),
    ):
        pass
    assert str(refused.value) == "VM pgtest1 is busy: its chain is being merged (backup-b)"
    with live.claim("ctx-1", "pgtest1"):  # released with the merge
        pass


def test_a_point_with_two_points_on_it_is_not_merged(point: Point, settings: Settings) -> None:
    # Two children happen when the newest point was damaged: auto built on an older one.
    b = chained_point(settings, point)
    b2 = chained_point(settings, point, pattern=0x33, suffix="incr2")
    with point.services.client() as api:
        refused = api.post(f"/api/v1/restore-points/{point.point_id}/merge")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"point {point.point_id} has 2 points building on it ({b.point_id}, {b2.point_id})"
    )
    assert all(q.exists() for p in (point, b, b2) for q in p.disks.values())
