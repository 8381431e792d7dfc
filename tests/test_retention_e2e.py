"""Retention end to end on the lab: a policy keeping the last 2, 3 days and 3 weeks of the
lab's pgtest1, run 12 times over five weeks of the hub's clock (the test moves it), guest
writes before each run. After each run the hub expires by itself (the run's end); what
remains is exactly what GFS keeps of the runs' times (``gfs_keep``, and by hand for
this timeline), every remaining point reads as its source did when it was taken, and
the plan read after a run's backup and before its end says what the run then did."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from engine import clock
from engine.contract.policy import PolicyRun, Retention, RetentionPlan
from engine.hub.policies.retention import Stamp, gfs_keep
from tests.conftest import wait_for
from tests.fixtures.lab import LabRegistration
from tests.fixtures.services import Services
from tests.test_chain_e2e import MiB, Saved, reads_as, save_sources
from tests.test_retention import as_lines

pytestmark = pytest.mark.slow

BERLIN = ZoneInfo("Europe/Berlin")
KEEP = Retention(keep_last=2, keep_daily=3, keep_weekly=3)
# (day from a Monday, hour, minute) in Berlin: two runs on one day, days and weeks
# without one, and a last run at 00:30 on a Thursday (still Wednesday in UTC).
RUNS = [
    (0, 2, 0),  # week 1
    (1, 2, 0),
    (1, 14, 0),
    (3, 2, 0),
    (8, 2, 0),  # week 2
    (10, 2, 0),
    (15, 2, 0),  # week 3
    (16, 2, 0),
    (22, 2, 0),  # week 4
    (29, 2, 0),  # week 5
    (30, 2, 0),
    (31, 0, 30),
]
# By hand: last 2 -> runs 11 and 10; daily 3 -> the 31st (11), 30th (10), 29th (9);
# weekly 3 -> week 5 (11), week 4 (8), week 3 (its newest, 7).
KEPT_BY_HAND = {7, 8, 9, 10, 11}


def next_monday_in_berlin() -> datetime:
    """A Monday a week or two ahead of the real time: a clock only this test moves."""
    now = clock.SystemClock().now().replace(tzinfo=ZoneInfo("UTC")).astimezone(BERLIN)
    day = (now + timedelta(days=7 + (7 - now.weekday()))).date()
    return datetime(day.year, day.month, day.day, tzinfo=BERLIN)


def run_view(api: httpx.Client, run_id: int) -> PolicyRun:
    answer = api.get(f"/api/v1/policy-runs/{run_id}")
    assert answer.status_code == 200, answer.text
    return PolicyRun.model_validate(answer.json())


def points_of(api: httpx.Client) -> dict[str, dict[str, Any]]:
    found = api.get("/api/v1/restore-points", params={"vm": "pgtest1"}).json()
    return {p["point_id"]: p for p in found}


def guest_writes(reg: LabRegistration, n: int) -> None:
    """Run ``n``'s writes: new data on both disks, and zeroes over an earlier run's."""
    reg.lab.write("pgtest1", 2000, n * 256 * 1024, 64 * 1024)
    reg.lab.write("pgtest1", 2001, MiB + n * 128 * 1024 + 4096, 8192)
    if n >= 2:
        reg.lab.write("pgtest1", 2000, (n - 2) * 256 * 1024 + 4096, 4096, zero=True)


def test_after_many_runs_exactly_the_gfs_set_remains_and_reads_as_its_sources(
    services_factory: Any, lab_registered: LabRegistration, tmp_path: Path
) -> None:
    clock_file = tmp_path / "hub-clock"
    hub_clock = clock.FileClock(clock_file)
    base = next_monday_in_berlin()
    hub_clock.set(base)
    # Runs end (and expire) at the scheduler's tick: 3 s leaves a window after each
    # backup to read the plan before the hub acts on it.
    svc: Services = services_factory(
        extra_env={
            "SENDENSE_HUB__CLOCK_FILE": str(clock_file),
            "SENDENSE_SCHEDULER__TICK_SECONDS": "3",
        }
    )
    reg = lab_registered
    added = svc.sendense(
        "policy", "add", "nightly", "--repo", str(reg.repository_id),
        "--schedule", "0 2 * * *", "--timezone", "Europe/Berlin",
        "--include", "/DatabanxDC/vm/pgtest1",
        "--keep-last", "2", "--keep-daily", "3", "--keep-weekly", "3",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    # Disabled: only the test's runs happen, never the schedule's as the clock jumps.
    assert svc.sendense("policy", "disable", "nightly").returncode == 0

    stamps: list[Stamp] = []
    saved: dict[str, Saved] = {}
    compared = 0
    with svc.client() as api:
        for n, (day, hour, minute) in enumerate(RUNS):
            guest_writes(reg, n)
            hub_clock.set(base + timedelta(days=day, hours=hour, minutes=minute))
            run = start_run(svc, api, n)
            point_id = wait_for(
                lambda run=run: done_backup(run_view(api, run.id)), timeout=120, what="a backup"
            )
            plan = RetentionPlan.model_validate(
                api.get("/api/v1/retention/plan", params={"policy": "nightly"}).json()
            )
            before_end = run_view(api, run.id).status == "running"
            saved[point_id] = save_sources(reg, tmp_path, f"run{n}")
            job = api.get(f"/api/v1/backups/{point_id}").json()
            stamps.append(
                Stamp(point_id, datetime.fromisoformat(job["started_at"]).replace(tzinfo=None))
            )
            if before_end:  # the plan was read before the run ended, so before it expired
                assert concluded(api, run.id, as_lines(plan)).retention == as_lines(plan), n
                compared += 1
            expected = set(gfs_keep(stamps, KEEP, BERLIN))
            wait_for(
                lambda expected=expected: set(points_of(api)) == expected,
                timeout=60,
                what=f"run {n}'s expiry",
            )
        assert compared >= 4  # a window of seconds per run: most runs are compared
        remaining = points_of(api)
        runs = api.get("/api/v1/policies/nightly/runs", params={"limit": 100}).json()
    # Every point that went, once, by a run's expiry; none had to wait (nothing read it).
    lines = [line for r in runs for line in PolicyRun.model_validate(r).retention]
    assert len(lines) == len(RUNS) - len(KEPT_BY_HAND), lines
    assert all(line.startswith("merged ") for line in lines), lines  # a linear chain
    ids = [s.point_id for s in stamps]
    assert set(remaining) == {ids[i] for i in KEPT_BY_HAND}
    for point_id, view in remaining.items():
        for disk in view["disks"]:
            reads_as(Path(disk["qcow2_path"]), saved[point_id][disk["disk_key"]])
    newest = remaining[ids[-1]]
    assert newest["chain"] == [ids[i] for i in sorted(KEPT_BY_HAND)]
    shown = svc.sendense("retention", "plan", "--policy", "nightly")
    assert shown.returncode == 0, shown.stderr
    assert "5 points: 5 kept, 0 deleted, 0 merged" in shown.stdout


def start_run(svc: Services, api: httpx.Client, n: int) -> PolicyRun:
    if n == 0:  # the CLI's run, followed to its end (nothing to expire yet)
        ran = svc.sendense("policy", "run", "nightly", "--wait")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        [latest] = api.get("/api/v1/policies/nightly/runs", params={"limit": 1}).json()
        return PolicyRun.model_validate(latest)
    started = api.post("/api/v1/policies/nightly/run")
    assert started.status_code == 202, started.text
    return PolicyRun.model_validate(started.json())


def done_backup(run: PolicyRun) -> str | None:
    """The run's backup once it completed."""
    if not run.vms or run.vms[0].status is None:
        return None
    [vm] = run.vms
    assert vm.status in ("queued", "pending", "running", "completed"), vm
    return vm.backup_id if vm.status == "completed" else None


def concluded(api: httpx.Client, run_id: int, expiring: list[str]) -> PolicyRun:
    """The run once it ended and, when something was to expire, its expiry recorded."""

    def ended() -> PolicyRun | None:
        run = run_view(api, run_id)
        if run.status == "running" or (expiring and not run.retention):
            return None
        return run

    found: PolicyRun = wait_for(ended, timeout=60, what=f"policy run {run_id}'s end")
    return found
