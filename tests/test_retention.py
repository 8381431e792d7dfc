"""Retention on real points: a backup of the lab's pgtest1 through the real hub and node,
incrementals on it as real qcow2 overlays (qemu-io writes), attached to a policy's runs
straight in the database with their snapshot times on a timeline the test sets. The
hub's plan (API and CLI) lists what goes and why; the expiry (the service in this
process, on the same database and files) does exactly that; every point that remains
reads byte for byte as it did before (qemu-img compare against raw copies taken first).
A point an instant export reads waits and goes after the export ended; a manual backup
is never expired; the VM's last good point stays whatever is damaged after it; a VM with
a backup queued waits; a failed backup on a point does not keep it. The plan of two
policies on one VM, from rows alone, reads alike on SQLite and MariaDB."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from engine import clock
from engine.config import Settings, get_settings
from engine.contract.policy import RetentionPlan
from engine.contract.status import PolicyRunStatus, RunTrigger
from engine.db.models import BackupJob, BackupPolicy, BackupRepository, PolicyRun, RestoreExport
from engine.db.session import session_scope, upgrade
from engine.errors import NotFound
from engine.hub.events import EventBus
from engine.hub.exports.manager import ExportManager
from engine.hub.jobs.live import LiveJobs
from engine.hub.policies.retention import (
    DAMAGED_NEWEST,
    ELSEWHERE,
    LAST_GOOD,
    MANUAL,
    RetentionService,
)
from engine.hub.restores.manager import RestoreManager
from engine.hub.restores.merge import ChainMerges, Merging, Readers
from tests.fixtures.backups import vm_context
from tests.fixtures.points import Point, add_incremental
from tests.fixtures.services import Services

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Made:
    point_id: str
    disks: dict[int, Path]


def expiry(settings: Settings) -> RetentionService:
    """The hub's retention, made as the hub makes it, in this process."""
    merging = Merging()
    readers = Readers(set, set, lambda points: set(), LiveJobs().claim)
    restores = RestoreManager(
        settings, ExportManager.from_settings(settings), EventBus(), "unused", merging=merging
    )
    return RetentionService(settings, ChainMerges(settings, merging, readers), restores, readers)


def add_policy(settings: Settings, repository_id: int, name: str = "nightly", **keep: int) -> int:
    # Disabled: the hub's scheduler never runs it; only its retention is used here.
    with session_scope(settings.db_url) as s:
        row = BackupPolicy(
            name=name,
            repository_id=repository_id,
            schedule="0 1 * * *",
            timezone="Europe/Berlin",
            includes=json.dumps(["/DatabanxDC/vm/pgtest1"]),
            enabled=False,
            **keep,
        )
        s.add(row)
        s.flush()
        return row.id


def taken(settings: Settings, point_id: str, at: datetime, policy_id: int | None) -> None:
    """The point's snapshot time; made by a run of the policy (none: by hand)."""
    with session_scope(settings.db_url) as s:
        job = s.get(BackupJob, point_id)
        assert job is not None
        job.started_at = at
        if policy_id is not None:
            run = PolicyRun(
                policy_id=policy_id,
                trigger=RunTrigger.SCHEDULE,
                scheduled_for=at,
                status=PolicyRunStatus.COMPLETED,
                started_at=at,
                finished_at=at + timedelta(minutes=5),
            )
            s.add(run)
            s.flush()
            job.policy_run_id = run.id


def incremental(settings: Settings, parent: Made, suffix: str, pattern: int, at: int) -> Made:
    child_id, disks = add_incremental(
        settings, parent.point_id, pattern=pattern, at_mib=at, suffix=suffix
    )
    return Made(child_id, disks)


def raw_copy(qcow2: Path, folder: Path) -> Path:
    raw = folder / f"{qcow2.stem}-{qcow2.parent.name}.raw"  # the disk key's folder
    convert = ["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(qcow2), str(raw)]
    subprocess.run(convert, check=True)
    return raw


def save(points: dict[str, Made], folder: Path) -> dict[Path, Path]:
    """Each point's disks as raw files: what they must read as after any expiry."""
    folder.mkdir(exist_ok=True)
    return {q: raw_copy(q, folder) for p in points.values() for q in p.disks.values()}


def reads_as_saved(point: Made, saved: dict[Path, Path]) -> None:
    for qcow2 in point.disks.values():
        compare = ["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw"]
        done = subprocess.run([*compare, str(qcow2), str(saved[qcow2])], capture_output=True)
        assert done.returncode == 0, (point.point_id, done.stdout, done.stderr)


def remaining(settings: Settings) -> dict[str, BackupJob]:
    with session_scope(settings.db_url) as s:
        rows = s.query(BackupJob).filter(BackupJob.status == "completed").all()
        return {r.id: r for r in rows}


def monday_weeks_ago(weeks: int) -> datetime:
    today = clock.utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=today.weekday() + 7 * weeks)


def plan_of(point: Point, policy: str) -> RetentionPlan:
    with point.services.client() as api:
        answer = api.get("/api/v1/retention/plan", params={"policy": policy})
    assert answer.status_code == 200, answer.text
    return RetentionPlan.model_validate(answer.json())


def expiring(plan: RetentionPlan) -> dict[str, tuple[str, str | None, str | None]]:
    return {d.point_id: (d.action, d.into_point_id, d.blocked) for d in plan.expiring}


def as_lines(plan: RetentionPlan) -> list[str]:
    """The lines ``apply`` says for the plan's expiring points, oldest first."""
    lines = []
    for d in sorted(plan.expiring, key=lambda d: (d.taken_at, d.point_id)):
        if d.blocked:
            lines.append(f"kept for now {d.point_id}: {d.blocked}")
        elif d.action == "merge":
            lines.append(f"merged {d.point_id} into {d.into_point_id}")
        else:
            lines.append(f"deleted {d.point_id}")
    return lines


def test_expiry_does_what_the_plan_says_and_every_kept_point_reads_as_before(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    svc, reg = point.services, point.registration
    policy_id = add_policy(settings, reg.repository_id, keep_last=2, keep_daily=3, keep_weekly=2)
    # full p0 <- p1 <- p2 <- p3 <- p4 <- p5 <- p6 <- p7, and q beside p3 on p2.
    made = {"p0": Made(point.point_id, point.disks)}
    for n, at_mib in enumerate([1, 2, 0, 1, 3, 2, 1], start=1):
        made[f"p{n}"] = incremental(settings, made[f"p{n - 1}"], f"i{n}", 0x10 + n, at_mib)
    made["q"] = incremental(settings, made["p2"], "q", 0x77, 3)
    base = monday_weeks_ago(5)  # 10:00 UTC is 11:00 or 12:00 in Berlin: the same day
    timeline = {
        "p0": base + timedelta(hours=10),  # week 1, Monday
        "p1": base + DAY + timedelta(hours=10),
        "p2": base + 7 * DAY + timedelta(hours=10),  # week 2
        "p3": base + 8 * DAY + timedelta(hours=9),
        "q": base + 8 * DAY + timedelta(hours=12),
        "p4": base + 8 * DAY + timedelta(hours=15),  # the 8th day's newest
        "p5": base + 9 * DAY + timedelta(hours=10),  # week 2's newest
        "p6": base + 14 * DAY + timedelta(hours=10),  # week 3
        "p7": base + 14 * DAY + timedelta(hours=20),
    }
    for name, at in timeline.items():
        taken(settings, made[name].point_id, at, policy_id)
    saved = save(made, tmp_path / "saved")
    pid = {name: m.point_id for name, m in made.items()}

    with svc.client() as api:
        lease = api.post(f"/api/v1/restore-points/{pid['p1']}/exports", json={"disk_key": 2000})
        assert lease.status_code == 201, lease.text
    export = lease.json()["name"]

    plan = plan_of(point, "nightly")
    by_id = {d.point_id: d for d in plan.points}
    assert set(by_id) == set(pid.values())
    day = [f"{(base + n * DAY):%Y-%m-%d}" for n in (8, 9, 14)]
    week = [f"{(base + n * DAY).isocalendar().year}-W{(base + n * DAY).isocalendar().week:02d}"]
    week += [f"{(base + 14 * DAY).isocalendar().year}-W{(base + 14 * DAY).isocalendar().week:02d}"]
    assert by_id[pid["p7"]].reasons == ["last 2", f"daily {day[2]}", f"weekly {week[1]}", LAST_GOOD]
    assert by_id[pid["p6"]].reasons == ["last 2"]
    assert by_id[pid["p5"]].reasons == [f"daily {day[1]}", f"weekly {week[0]}"]
    assert by_id[pid["p4"]].reasons == [f"daily {day[0]}"]
    assert by_id[pid["p3"]].reasons == ["kept by none of last 2, daily 3, weekly 2"]
    assert all(by_id[pid[n]].action == "keep" for n in ("p4", "p5", "p6", "p7"))
    # p2 waits for its two children until q is gone and p3 merged into p4; then it goes
    # into p4, and p1 (still waiting for the export) would go into p4 too.
    assert expiring(plan) == {
        pid["p0"]: ("merge", pid["p1"], f"an instant export reads {pid['p1']}, which builds on it"),
        pid["p1"]: ("merge", pid["p4"], "an instant export reads it"),
        pid["p2"]: ("merge", pid["p4"], None),
        pid["p3"]: ("merge", pid["p4"], None),
        pid["q"]: ("delete", None, None),
    }

    shown = svc.sendense("retention", "plan", "--policy", "nightly")
    assert shown.returncode == 0, shown.stderr
    assert "9 points: 4 kept, 1 deleted, 4 merged (2 must wait)" in shown.stdout
    as_json = svc.sendense("retention", "plan", "--policy", "nightly", "--json")
    assert RetentionPlan.model_validate_json(as_json.stdout) == plan

    lines = expiry(settings).apply(policy_id)
    assert lines == as_lines(plan)
    left = remaining(settings)
    assert set(left) == {pid[n] for n in ("p0", "p1", "p4", "p5", "p6", "p7")}
    assert left[pid["p4"]].parent_backup_id == pid["p1"]
    assert not any(q.exists() for n in ("p2", "p3", "q") for q in made[n].disks.values())
    for name in ("p0", "p1", "p4", "p5", "p6", "p7"):
        reads_as_saved(made[name], saved)

    # The export ends: the rest goes, the full into p1, then p1 into p4 (now the full).
    with svc.client() as api:
        assert api.delete(f"/api/v1/restore-exports/{export}").status_code == 204
    plan = plan_of(point, "nightly")
    assert expiring(plan) == {
        pid["p0"]: ("merge", pid["p1"], None),
        pid["p1"]: ("merge", pid["p4"], None),
    }
    lines = expiry(settings).apply(policy_id)
    assert lines == [f"merged {pid['p0']} into {pid['p1']}", f"merged {pid['p1']} into {pid['p4']}"]
    left = remaining(settings)
    assert set(left) == {pid[n] for n in ("p4", "p5", "p6", "p7")}
    assert left[pid["p4"]].parent_backup_id is None and left[pid["p4"]].backup_type == "full"
    for name in ("p4", "p5", "p6", "p7"):
        reads_as_saved(made[name], saved)
    assert expiry(settings).apply(policy_id) == []  # nothing more to do
    assert plan_of(point, "nightly").expiring == []


def test_manual_backups_stay_the_last_good_point_stays_and_a_busy_vm_waits(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    reg = point.registration
    policy_id = add_policy(settings, reg.repository_id, keep_last=1)
    # p0 (the policy's) <- m1 (by hand) <- p2 <- p3 (damaged, the newest)
    made = {"p0": Made(point.point_id, point.disks)}
    made["m1"] = incremental(settings, made["p0"], "m1", 0x21, 1)
    made["p2"] = incremental(settings, made["m1"], "p2", 0x22, 2)
    made["p3"] = incremental(settings, made["p2"], "p3", 0x23, 0)
    base = monday_weeks_ago(2)
    for n, name in enumerate(made):
        taken(settings, made[name].point_id, base + n * DAY, None if name == "m1" else policy_id)
    point.services.stop()  # the hub would dispatch the queued row; the rest is in-process
    with session_scope(settings.db_url) as s:
        damaged = s.get(BackupJob, made["p3"].point_id)
        assert damaged is not None
        damaged.verification, damaged.verification_detail = "damaged", "disk 2000 at 1 MiB"
        # A backup queued for the VM: nothing of its chain changes until it ran.
        queued = BackupJob(
            id="backup-pgtest1-queued",
            vm_context_id=reg.context_id,
            vm_name="pgtest1",
            repository_id=reg.repository_id,
            status="queued",
        )
        s.add(queued)
    saved = save(made, tmp_path / "saved")
    pid = {name: m.point_id for name, m in made.items()}
    service = expiry(settings)

    plan = service.plan(None)  # every policy, and the points no policy expires
    by_id = {d.point_id: d for d in plan.points}
    assert by_id[pid["m1"]].reasons == [MANUAL] and by_id[pid["m1"]].policy is None
    assert by_id[pid["p3"]].reasons == [DAMAGED_NEWEST]
    assert by_id[pid["p2"]].reasons == ["last 1", LAST_GOOD]
    waiting = "a backup of pgtest1 is queued (backup-pgtest1-queued)"
    assert expiring(plan) == {pid["p0"]: ("merge", pid["m1"], waiting)}
    assert service.apply(policy_id) == [f"kept for now {pid['p0']}: {waiting}"]

    with session_scope(settings.db_url) as s:
        s.delete(s.get(BackupJob, "backup-pgtest1-queued"))
    assert service.apply(policy_id) == [f"merged {pid['p0']} into {pid['m1']}"]
    assert set(remaining(settings)) == {pid["m1"], pid["p2"], pid["p3"]}
    for name in ("m1", "p2", "p3"):
        reads_as_saved(made[name], saved)

    # A good point after the damaged one: the damaged one and p2 go (merged along the
    # chain into it); a backup that failed on p4 builds on nothing it keeps.
    made["p4"] = incremental(settings, made["p3"], "p4", 0x24, 3)
    taken(settings, made["p4"].point_id, base + 4 * DAY, policy_id)
    saved |= save({"p4": made["p4"]}, tmp_path / "saved")
    assert service.apply(policy_id) == [
        f"merged {pid['p2']} into {pid['p3']}",
        f"merged {pid['p3']} into {made['p4'].point_id}",
    ]
    assert set(remaining(settings)) == {pid["m1"], made["p4"].point_id}
    for name in ("m1", "p4"):
        reads_as_saved(made[name], saved)
    assert service.plan("nightly").expiring == []


def test_a_point_with_only_failed_backups_on_it_is_deleted(
    point: Point, settings: Settings
) -> None:
    # p0 <- a (the policy's, on the 1st day) and p0 <- b (on the 2nd, a second child):
    # keep-last 1 keeps b; a has nothing on it but a failed backup, which keeps its
    # history on p0; p0 then has one child, b, and is merged into it.
    reg = point.registration
    policy_id = add_policy(settings, reg.repository_id, keep_last=1)
    p0 = Made(point.point_id, point.disks)
    a = incremental(settings, p0, "a", 0x31, 1)
    b = incremental(settings, p0, "b", 0x32, 2)
    base = monday_weeks_ago(1)
    for n, m in enumerate((p0, a, b)):
        taken(settings, m.point_id, base + n * DAY, policy_id)
    with session_scope(settings.db_url) as s:
        s.add(
            BackupJob(
                id="backup-pgtest1-failed",
                vm_context_id=reg.context_id,
                vm_name="pgtest1",
                repository_id=reg.repository_id,
                parent_backup_id=a.point_id,
                backup_type="incremental",
                status="failed",
                error_message="the node went away",
            )
        )
    assert as_lines(plan_of(point, "nightly")) == [
        f"merged {p0.point_id} into {b.point_id}",
        f"deleted {a.point_id}",
    ]
    assert expiry(settings).apply(policy_id) == [
        f"merged {p0.point_id} into {b.point_id}",
        f"deleted {a.point_id}",
    ]
    with session_scope(settings.db_url) as s:
        failed = s.get(BackupJob, "backup-pgtest1-failed")
        assert failed is not None and failed.parent_backup_id is None
    assert set(remaining(settings)) == {b.point_id}


def test_a_plan_for_an_unknown_policy_or_a_bad_name_is_one_line(services: Services) -> None:
    with services.client() as api:
        unknown = api.get("/api/v1/retention/plan", params={"policy": "nope"})
        bad = api.get("/api/v1/retention/plan", params={"policy": "a\x01b"})
        everything = api.get("/api/v1/retention/plan")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "policy nope does not exist"
    assert bad.status_code == 422
    assert everything.status_code == 200
    assert everything.json() == {"policy": None, "points": []}
    shown = services.sendense("retention", "plan", "--policy", "nope")
    assert shown.returncode == 7
    assert shown.stderr.strip().endswith("policy nope does not exist")
    assert len(shown.stderr.strip().splitlines()) == 1
    assert (
        services.sendense("retention", "plan")
        .stdout.strip()
        .endswith("0 points: 0 kept, 0 deleted, 0 merged")
    )


def job_row(
    point_id: str, ctx: str, vm: str, repo: int, at: datetime, run: int | None, parent: str | None
) -> BackupJob:
    return BackupJob(
        id=point_id,
        vm_context_id=ctx,
        vm_name=vm,
        repository_id=repo,
        parent_backup_id=parent,
        backup_type="incremental" if parent else "full",
        status="completed",
        started_at=at,
        completed_at=at + timedelta(minutes=3),
        policy_run_id=run,
    )


def test_the_plan_of_two_policies_on_one_vm_reads_alike_on_every_database(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pgtest1: a0 (daily's) <- a1 (weekly's) <- a2 <- a3 (daily's), an export on a1, and
    # x, daily's too but in a repository daily no longer uses; web01: b0 <- b1 (daily's)
    # with a backup running. Rows only: the plan reads no file.
    monkeypatch.setenv("SENDENSE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.db_url)
    base = monday_weeks_ago(1)
    with session_scope(settings.db_url) as s:
        repo, old_repo = (
            BackupRepository(name="r1", path="/r1"),
            BackupRepository(name="r0", path="/r0"),
        )
        a = vm_context("/DC/vm/pgtest1", "vc.test", stamp="20260101-000001")
        b = vm_context("/DC/vm/web01", "vc.test", stamp="20260101-000002")
        s.add_all([repo, old_repo, a, b])
        s.flush()
        runs = {}
        for name, keep in (("daily", 1), ("weekly", 1)):
            policy = BackupPolicy(
                name=name,
                repository_id=repo.id,
                schedule="0 1 * * *",
                includes="[]",
                enabled=False,
                keep_last=keep,
            )
            s.add(policy)
            s.flush()
            run = PolicyRun(policy_id=policy.id, trigger="schedule", status="completed")
            s.add(run)
            s.flush()
            runs[name] = run.id
        rows = [
            job_row("a0", a.context_id, "pgtest1", repo.id, base, runs["daily"], None),
            job_row("a1", a.context_id, "pgtest1", repo.id, base + DAY, runs["weekly"], "a0"),
            job_row("a2", a.context_id, "pgtest1", repo.id, base + 2 * DAY, runs["daily"], "a1"),
            job_row("a3", a.context_id, "pgtest1", repo.id, base + 3 * DAY, runs["daily"], "a2"),
            job_row("x", a.context_id, "pgtest1", old_repo.id, base + DAY, runs["daily"], None),
            job_row("b0", b.context_id, "web01", repo.id, base, runs["daily"], None),
            job_row("b1", b.context_id, "web01", repo.id, base + DAY, runs["daily"], "b0"),
        ]
        running = job_row("b2", b.context_id, "web01", repo.id, base + 2 * DAY, None, "b1")
        running.status = "running"
        s.add_all([*rows, running])
        s.flush()
        s.add(RestoreExport(name="exp-a1", backup_job_id="a1", disk_key=2000, expires_at=base))
    service = expiry(settings)

    plan = service.plan()
    assert [(d.point_id, d.policy, d.action) for d in plan.points] == [
        ("a0", "daily", "merge"),
        ("a1", "weekly", "keep"),
        ("x", None, "keep"),
        ("a2", "daily", "merge"),
        ("a3", "daily", "keep"),
        ("b0", "daily", "merge"),
        ("b1", "daily", "keep"),
    ]
    assert expiring(plan) == {
        "a0": ("merge", "a1", "an instant export reads a1, which builds on it"),
        "a2": ("merge", "a3", None),
        "b0": ("merge", "b1", "a backup of web01 is running (b2)"),
    }
    by_id = {d.point_id: d for d in plan.points}
    assert by_id["x"].reasons == [ELSEWHERE]
    assert by_id["a1"].reasons == ["last 1", LAST_GOOD]
    assert by_id["a2"].reasons == ["kept by none of last 1"]
    assert [d.point_id for d in service.plan("weekly").points] == ["a1"]
    assert [d.point_id for d in service.plan("daily").points] == ["a0", "a2", "a3", "b0", "b1"]
    with pytest.raises(NotFound) as unknown:
        service.plan("monthly")
    assert str(unknown.value) == "policy monthly does not exist"
