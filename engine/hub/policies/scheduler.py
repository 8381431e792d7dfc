"""The scheduler: each tick fires the policies' due runs, each scheduled time once.

For an enabled policy the due time is the latest cron time T (in the policy's
timezone, ``schedule``) with ``anchor < T <= now``; the anchor is the policy's
``last_scheduled_for``: the last scheduled time dealt with, or when the policy was made,
enabled or given its schedule. So after a hub was down:

- several times passed: only the latest is dealt with, once;
- T is at most ``scheduler.grace_seconds`` old: it runs now (trigger ``schedule``, or
  ``catch-up`` when it is well in the past: more than two ticks and a minute);
- T is older: a ``missed`` run is recorded for it, with why, and notified.

The run (or missed run) and the new anchor are written in one transaction, the anchor
by compare-and-set: a second tick, a restarted hub or a second hub on the same
database finds T dealt with (and the unique ``(policy_id, scheduled_for)`` refuses a
second row for T whatever happens). An edit of the schedule or an enable moves the
anchor to now (``store``), so neither catches up on what passed before. The run's VMs
are resolved and queued after that commit (vCenter is slow; no transaction waits on it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import clock
from engine.config import Settings
from engine.contract.status import RunTrigger
from engine.db.models import BackupPolicy
from engine.db.session import session_scope
from engine.errors import SendenseError
from engine.hub.policies import store
from engine.hub.policies.resolve import Inventories, read_inventories
from engine.hub.policies.runs import PolicyRuns
from engine.hub.policies.schedule import Schedule

log = logging.getLogger("sendense.hub.policies")

CATCH_UP_SLACK = timedelta(seconds=60)


@dataclass(frozen=True)
class Due:
    """A scheduled time to deal with now: run it (``trigger``) or record it missed."""

    when: datetime
    trigger: RunTrigger | None  # None: missed, past the grace window
    late: timedelta


def anchor_of(policy: BackupPolicy) -> datetime:
    return policy.last_scheduled_for or policy.created_at


def due(
    schedule: Schedule, anchor: datetime, now: datetime, grace_seconds: float, tick_seconds: float
) -> Due | None:
    """The scheduling decision for one policy (pure)."""
    when = schedule.latest_between(anchor, now)
    if when is None:
        return None
    late = now - when
    if late > timedelta(seconds=grace_seconds):
        return Due(when, None, late)
    on_time = late <= timedelta(seconds=2 * tick_seconds) + CATCH_UP_SLACK
    return Due(when, RunTrigger.SCHEDULE if on_time else RunTrigger.CATCH_UP, late)


def next_run(
    schedule: Schedule, anchor: datetime, now: datetime, grace_seconds: float
) -> datetime | None:
    """When the policy runs next: a due time about to fire, else the first time after now."""
    pending = due(schedule, anchor, now, grace_seconds, tick_seconds=0)
    if pending is not None and pending.trigger is not None:
        return pending.when
    return schedule.next_after(max(anchor, now))


def _hours(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{round(seconds / 3600, 1):g} h"


def missed_reason(schedule: Schedule, item: Due, grace_seconds: float) -> str:
    at = schedule.local(item.when)
    return (
        f"missed the run of {at:%Y-%m-%d %H:%M} {schedule.zone.key}: the hub was not running "
        f"then and came back {_hours(item.late)} later, past the grace window of "
        f"{_hours(timedelta(seconds=grace_seconds))}"
    )


class Scheduler:
    def __init__(self, settings: Settings, runs: PolicyRuns) -> None:
        self.settings = settings
        self.runs = runs

    def tick(self) -> list[int]:
        """Fire what is due now, then end the runs whose jobs all ended (in one call, for
        tests); the hub runs the two as separate rounds (``fire``, ``end_finished``) so
        that a long retention merge never delays a run's start."""
        fired = self.fire()
        self.runs.end_finished()
        return fired

    def fire(self) -> list[int]:
        """Fire what is due now; the ids of the runs fired (not the missed ones)."""
        now = clock.utcnow()
        grace = self.settings.scheduler.grace_seconds
        tick = self.settings.scheduler.tick_seconds
        with session_scope(self.settings.db_url) as s:
            policies = list(s.scalars(select(BackupPolicy).where(BackupPolicy.enabled.is_(True))))
        fired: list[int] = []
        missed: list[int] = []
        for policy in policies:
            try:
                schedule = store.schedule(policy)
            except SendenseError as exc:  # a zone gone from the tz database since
                log.warning("policy %s: %s", policy.name, exc)
                continue
            item = due(schedule, anchor_of(policy), now, grace, tick)
            if item is None:
                continue
            reason = None if item.trigger else missed_reason(schedule, item, grace)
            run_id = self._claim(policy, item, reason)
            if run_id is not None:
                (fired if reason is None else missed).append(run_id)
        for run_id in missed:
            self.runs.conclude(run_id, retention=False)
        if fired:
            inventories = self._inventories()
            for run_id in fired:
                self.runs.start(run_id, inventories)
        return fired

    def _inventories(self) -> Inventories | None:
        """The inventories read once for every run fired in this tick; None when they
        cannot be (each run then reads them itself and fails with the reason)."""
        try:
            return read_inventories(self.settings)
        except SendenseError as exc:
            log.warning("policy runs: %s", exc)
            return None

    def _claim(self, policy: BackupPolicy, item: Due, missed: str | None) -> int | None:
        """Record the run for ``item.when`` and move the anchor there, together; None
        when another tick or hub dealt with it first (or the policy changed meanwhile)."""
        try:
            with session_scope(self.settings.db_url) as s:
                if not self._move_anchor(s, policy, item.when):
                    return None
                run = self.runs.record(
                    s, policy, item.trigger or RunTrigger.SCHEDULE, item.when, missed=missed
                )
                return run.id
        except IntegrityError:  # a run for this time exists already: only the anchor moves
            with session_scope(self.settings.db_url) as s:
                self._move_anchor(s, policy, item.when)
            return None

    @staticmethod
    def _move_anchor(s: Session, policy: BackupPolicy, when: datetime) -> bool:
        """Compare-and-set: False when the anchor is no longer the one read (another tick
        or hub fired, an edit re-anchored) or the policy was disabled meanwhile."""
        was = policy.last_scheduled_for
        moved = s.execute(
            update(BackupPolicy)
            .where(
                BackupPolicy.id == policy.id,
                BackupPolicy.enabled.is_(True),
                BackupPolicy.last_scheduled_for == was
                if was is not None
                else BackupPolicy.last_scheduled_for.is_(None),
            )
            # updated_at stays: firing is not an edit.
            .values(last_scheduled_for=when, updated_at=BackupPolicy.updated_at)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(moved, "rowcount", 0))
