"""The scheduler on a real database (SQLite and MariaDB), the lab's inventory and the
hub's own wiring (``create_app``: the real dispatcher, retention and notifier), with a
FixedClock for the hub's time. No node is enabled, so the jobs a run queues stay
queued: what these tests look at is which runs fire, when, and with which VMs.

Times: the tests start from tomorrow 01:00 UTC of the real date (no absolute time),
except the daylight-saving test, which needs Berlin's fall-back night.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from engine import clock
from engine.config import Settings, get_settings
from engine.contract.policy import PolicyEdit, PolicyIn
from engine.contract.status import JobStatus, PolicyRunStatus, RunTrigger
from engine.db.models import BackupJob, BackupPolicy, Node, PolicyRun
from engine.db.session import session_scope
from engine.hub.app import create_app
from engine.hub.policies.service import PolicyService
from tests.fixtures.lab import LabRegistration
from tests.fixtures.notify_sink import NotifySink

CLUSTER = "/DC0/host/DC0_C0"  # DC0_C0_RP0_VM0, DC0_C0_RP0_VM1
STANDALONE = "/DC0/host/DC0_H0"  # DC0_H0_VM0, DC0_H0_VM1


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite, or MariaDB for the tests marked ``BOTH`` (what a database's own rules
    decide: the unique run per time, DATETIME without fractions, compare-and-set)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("mariadb").new_database())


BOTH = pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)], indirect=True
)


@pytest.fixture
def settings(sendense_home: Path, database: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """This module's settings, on ``database`` (overrides conftest's)."""
    monkeypatch.setenv("SENDENSE_DATABASE_URL", database)
    monkeypatch.setenv("SENDENSE_SCHEDULER__GRACE_SECONDS", str(6 * 3600))
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def fixed() -> Iterator[clock.FixedClock]:
    tomorrow = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)
    hub_clock = clock.FixedClock(tomorrow.replace(hour=1, minute=0, second=0, microsecond=0))
    clock.install(hub_clock)
    yield hub_clock
    clock.install(clock.SystemClock())


def a_hub(settings: Settings) -> PolicyService:
    """The policy service of a freshly made hub (a restart, when called again); its
    nodes disabled, so queued jobs stay queued."""
    service: PolicyService = create_app(settings).state.policies
    with session_scope(settings.db_url) as s:
        s.execute(update(Node).values(enabled=False))
    return service


@pytest.fixture
def hub(
    settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> PolicyService:
    return a_hub(settings)


def nightly(reg: LabRegistration, **fields: object) -> PolicyIn:
    return PolicyIn.model_validate(
        {
            "name": "nightly",
            "repository_id": reg.repository_id,
            "schedule": "0 2 * * *",
            "include": [CLUSTER],
            **fields,
        }
    )


def runs(settings: Settings) -> list[PolicyRun]:
    with session_scope(settings.db_url) as s:
        return list(s.scalars(select(PolicyRun).order_by(PolicyRun.id)))


def at(fixed: clock.FixedClock, hour: int, minute: int = 0, second: int = 0, days: int = 0) -> None:
    day = fixed.now().replace(hour=0, minute=0, second=0, microsecond=0)
    fixed.when = day + timedelta(days=days, hours=hour, minutes=minute, seconds=second)


@BOTH
def test_a_due_run_fires_once_across_ticks_and_a_restart(
    hub: PolicyService, settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> None:
    hub.add(nightly(lab_registered))
    hub.tick()
    assert runs(settings) == []  # 01:00: nothing due
    at(fixed, 2, 0, 1)
    hub.tick()
    hub.tick()
    a_hub(settings).tick()  # the hub restarted: the same time is not fired again
    fired = runs(settings)
    assert len(fired) == 1
    assert fired[0].trigger == RunTrigger.SCHEDULE
    assert fired[0].scheduled_for == fixed.now().replace(second=0)
    view = hub.run_view(fired[0].id)
    assert view.status == PolicyRunStatus.RUNNING
    assert sorted(v.vm_name for v in view.vms) == ["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"]
    assert {v.status for v in view.vms} == {JobStatus.QUEUED}
    assert sorted(v.queue_position or 0 for v in view.vms) == [1, 2]
    policy = hub.get("nightly")
    assert policy.last_run is not None and policy.last_run.id == view.id
    assert policy.next_run_at == fixed.now().replace(hour=2, second=0) + timedelta(days=1)


@BOTH
def test_a_run_missed_while_the_hub_was_down_runs_once_inside_the_grace_window(
    hub: PolicyService, settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> None:
    hub.add(nightly(lab_registered))
    at(fixed, 5)  # down from 01:00 to 05:00: 02:00 is 3 h late, the grace is 6 h
    restarted = a_hub(settings)
    restarted.tick()
    restarted.tick()
    (run,) = runs(settings)
    assert run.trigger == RunTrigger.CATCH_UP
    assert run.scheduled_for == fixed.now().replace(hour=2)
    assert run.status == PolicyRunStatus.RUNNING


@BOTH
def test_a_run_missed_past_the_grace_window_is_recorded_missed_and_the_next_one_runs(
    settings: Settings,
    lab_registered: LabRegistration,
    fixed: clock.FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENDENSE_SCHEDULER__GRACE_SECONDS", "3600")
    get_settings.cache_clear()
    settings = get_settings()
    hub = a_hub(settings)
    with NotifySink() as sink:
        hub.add(nightly(lab_registered, notify=[sink.url()]))
        at(fixed, 5)  # 3 h late, the grace is 1 h
        hub.tick()
        hub.tick()
    (told,) = sink.received  # a missed run is told of, like a failure
    assert "missed" in told.body["title"] + told.body["message"]
    (missed,) = runs(settings)
    assert missed.status == PolicyRunStatus.MISSED
    assert missed.error is not None
    assert (
        "the hub was not running" in missed.error
        and "came back 3 h later, past the grace window of 1 h" in missed.error
    )
    assert missed.finished_at is not None
    with session_scope(settings.db_url) as s:
        assert s.scalar(select(func.count()).select_from(BackupJob)) == 0
    assert hub.run_view(missed.id).vms == []
    at(fixed, 2, 0, 5, days=1)
    hub.tick()
    latest = runs(settings)[-1]
    assert (latest.trigger, latest.status) == (RunTrigger.SCHEDULE, PolicyRunStatus.RUNNING)
    assert len(runs(settings)) == 2


def test_several_missed_times_run_only_the_latest_once(
    hub: PolicyService, settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> None:
    hub.add(nightly(lab_registered, schedule="0 * * * *"))
    at(fixed, 5, 30)  # 02:00, 03:00, 04:00 and 05:00 passed
    hub.tick()
    hub.tick()
    (run,) = runs(settings)
    assert run.scheduled_for == fixed.now().replace(minute=0)
    assert run.trigger == RunTrigger.CATCH_UP


def test_a_disabled_policy_fires_nothing_and_enabling_does_not_catch_up(
    hub: PolicyService, settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> None:
    hub.add(nightly(lab_registered))
    assert hub.set_enabled("nightly", False).next_run_at is None
    at(fixed, 2, 0, 1)
    hub.tick()
    at(fixed, 3)
    policy = hub.set_enabled("nightly", True)
    hub.tick()
    assert runs(settings) == []  # 02:00 passed while disabled: not caught up
    assert policy.next_run_at == fixed.now().replace(hour=2) + timedelta(days=1)
    at(fixed, 2, 0, 1, days=1)
    hub.tick()
    assert len(runs(settings)) == 1


def test_a_policy_added_disabled_fires_nothing(
    hub: PolicyService, settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> None:
    hub.add(nightly(lab_registered, enabled=False))
    at(fixed, 2, 0, 1)
    hub.tick()
    assert runs(settings) == []


def test_editing_the_schedule_re_anchors_it(
    hub: PolicyService, settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> None:
    hub.add(nightly(lab_registered, schedule="0 4 * * *"))
    at(fixed, 3)
    # 02:30 passed before the edit: within the grace window, yet not this schedule's.
    policy = hub.edit("nightly", PolicyEdit(schedule="30 2 * * *"))
    hub.tick()
    assert runs(settings) == []
    assert policy.next_run_at == fixed.now().replace(hour=2, minute=30) + timedelta(days=1)
    at(fixed, 2, 30, 1, days=1)
    hub.tick()
    (run,) = runs(settings)
    assert run.scheduled_for == fixed.now().replace(second=0)


def test_a_policy_edited_while_its_run_runs_keeps_that_runs_vms_and_the_next_run_takes_the_edit(
    hub: PolicyService, settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> None:
    hub.add(nightly(lab_registered))
    at(fixed, 2, 0, 1)
    hub.tick()
    (first,) = runs(settings)
    hub.edit("nightly", PolicyEdit(include=[STANDALONE], exclude=["/DC0/vm/DC0_H0_VM1"]))
    hub.tick()
    view = hub.run_view(first.id)
    assert view.status == PolicyRunStatus.RUNNING
    assert sorted(v.vm_name for v in view.vms) == ["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"]
    second = hub.run("nightly")
    assert [v.vm_name for v in second.vms] == ["DC0_H0_VM0"]
    assert second.trigger == RunTrigger.MANUAL and second.scheduled_for is None


def test_a_run_over_vms_whose_jobs_run_already_skips_them_with_the_reason(
    hub: PolicyService, settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> None:
    first = hub.run(nightly_added(hub, lab_registered))
    second = hub.run("nightly")
    assert [v.backup_id is not None for v in first.vms] == [True, True]
    assert [v.backup_id for v in second.vms] == [None, None]
    assert all(v.error and "queued" in v.error for v in second.vms)
    hub.tick()
    assert hub.run_view(second.id).status == PolicyRunStatus.FAILED
    assert hub.run_view(second.id).error == "2 of 2 VMs were not backed up"
    assert hub.run_view(first.id).status == PolicyRunStatus.RUNNING


def nightly_added(hub: PolicyService, reg: LabRegistration) -> str:
    return hub.add(nightly(reg)).name


def test_a_run_ends_when_its_jobs_ended_and_retention_follows(
    hub: PolicyService, settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> None:
    run = hub.run(nightly_added(hub, lab_registered))
    jobs = hub.dispatcher.jobs
    jobs.cancel(run.vms[0].backup_id or "")
    hub.tick()
    assert hub.run_view(run.id).status == PolicyRunStatus.RUNNING  # one job still queued
    jobs.cancel(run.vms[1].backup_id or "")
    fixed.advance(minutes=1)
    hub.tick()
    ended = hub.run_view(run.id)
    assert ended.status == PolicyRunStatus.CANCELLED
    assert ended.finished_at == fixed.now()
    assert {v.status for v in ended.vms} == {JobStatus.CANCELLED}
    assert not any(line.startswith("retention failed") for line in ended.retention)


def test_a_run_whose_include_path_is_gone_fails_with_that_line(
    hub: PolicyService, settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> None:
    with NotifySink() as sink:
        hub.add(nightly(lab_registered, notify=[sink.url()]))
        with session_scope(settings.db_url) as s:  # the folder was deleted in vCenter since
            s.execute(update(BackupPolicy).values(includes='["/DC0/vm/gone"]'))
        at(fixed, 2, 0, 1)
        hub.tick()
    (told,) = sink.received
    assert "/DC0/vm/gone" in told.body["message"]
    (run,) = runs(settings)
    assert run.status == PolicyRunStatus.FAILED
    assert run.error == "include path '/DC0/vm/gone' is in no registered vCenter's inventory"
    assert run.finished_at is not None


@BOTH
def test_fall_back_night_a_berlin_0230_policy_fires_once(
    settings: Settings, lab_registered: LabRegistration, fixed: clock.FixedClock
) -> None:
    # Berlin's fall-back night 2026-10-25: 02:30 happens at 00:30 and again at 01:30 UTC.
    fixed.when = datetime(2026, 10, 24, 20)
    hub = a_hub(settings)
    hub.add(nightly(lab_registered, schedule="30 2 * * *", timezone="Europe/Berlin"))
    for _ in range(12):  # every 30 minutes until 02:00 UTC
        fixed.advance(minutes=30)
        hub.tick()
    (run,) = runs(settings)
    assert run.scheduled_for == datetime(2026, 10, 25, 0, 30)
    assert run.trigger == RunTrigger.SCHEDULE
