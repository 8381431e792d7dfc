"""Retention: which of a policy's points it keeps (GFS), and expiring the rest without
ever breaking a chain.

The points a policy expires: the completed backups its runs made, per VM, in its
repository. A manual backup, or one a run made into a repository the policy no longer
uses, no policy expires. A point's time is its snapshot's (``started_at``; else when its
job was made); its day, ISO week, month and year are those of the policy's timezone.

What a policy keeps (``gfs_keep``, pure): the newest ``keep_last``; the newest point of
each of the ``keep_daily`` most recent days that have one, and likewise per ISO week,
month and year; always the VM's newest good point. A damaged point (``verify`` found bad
bytes) cannot be restored from, so it takes no rule's place (the point a day keeps is
that day's newest good one, not a damaged one taken after it), and it is kept only while
no good point is newer (until a good backup follows it, it is the newest data there is).
With every count empty everything is kept.

How the rest goes, oldest first, each step deciding on the chain as the step before left
it: a point nothing builds on is deleted; a point one point builds on is merged into it
(``ChainMerges``: the child then holds what it read through the point, and a full's child
becomes a full), so no kept point loses its parent. A point two points build on, a point
being read (an instant export, a restore, a verification, a file session: on it, or for
a merge on a point after it, whose file the merge rewrites), and a point whose VM has a
backup queued or running wait for a later run, and say why. Steps repeat while one
frees another (a deleted branch leaves its parent one child to merge into). The plan is
the same walk with every step done on the rows in memory, so it says what ``apply``
then does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, select, true
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.contract.policy import Retention, RetentionDecision, RetentionPlan
from engine.contract.status import OPEN_JOB, BackupType, JobStatus, Verification
from engine.db.models import BackupJob, BackupPolicy, PolicyRun, RestoreExport
from engine.db.session import session_scope
from engine.errors import NotFound
from engine.hub.restores.manager import RestoreManager
from engine.hub.restores.merge import ChainMerges, Readers
from engine.hub.views import _utc

log = logging.getLogger("sendense.hub.retention")

KEEPS_EVERYTHING = "the policy keeps every point"
LAST_GOOD = "the VM's last good point"
DAMAGED_NEWEST = "damaged, but no good point is newer"
DAMAGED_OLD = "damaged, and a good point is newer"
MANUAL = "a manual backup: no policy expires it"
ELSEWHERE = "its policy backs up into another repository now: no policy expires it"

# The periods GFS keeps one point of, and how a local day names its period.
PERIODS: tuple[tuple[str, Callable[[date], str]], ...] = (
    ("daily", lambda d: d.isoformat()),
    ("weekly", lambda d: f"{d.isocalendar().year}-W{d.isocalendar().week:02d}"),
    ("monthly", lambda d: f"{d:%Y-%m}"),
    ("yearly", lambda d: f"{d:%Y}"),
)


# -- which points a policy keeps (pure) ---------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    """A point as GFS sees it: when it was taken, and whether it can be restored from."""

    point_id: str
    taken_at: datetime  # naive UTC
    good: bool = True


def local_day(taken_at: datetime, zone: tzinfo) -> date:
    return taken_at.replace(tzinfo=UTC).astimezone(zone).date()


def gfs_keep(points: Iterable[Stamp], retention: Retention, zone: tzinfo) -> dict[str, list[str]]:
    """The points kept, each with every reason that keeps it; a point absent expires.

    A period's point is its newest good one; the most recent periods are those whose
    points are newest. Ties in time go by point id."""
    newest_first = sorted(points, key=lambda p: (p.taken_at, p.point_id), reverse=True)
    if retention.keeps_everything:
        return {p.point_id: [KEEPS_EVERYTHING] for p in newest_first}
    kept: dict[str, list[str]] = {}
    good = [p for p in newest_first if p.good]
    for p in good[: retention.keep_last or 0]:
        kept.setdefault(p.point_id, []).append(f"last {retention.keep_last}")
    for name, period_of in PERIODS:
        count = getattr(retention, f"keep_{name}") or 0
        seen: set[str] = set()
        for p in good:
            period = period_of(local_day(p.taken_at, zone))
            if period in seen:
                continue
            if len(seen) == count:
                break
            seen.add(period)
            kept.setdefault(p.point_id, []).append(f"{name} {period}")
    if good:
        kept.setdefault(good[0].point_id, []).append(LAST_GOOD)
    for p in newest_first:
        if p.good:
            break
        kept.setdefault(p.point_id, []).append(DAMAGED_NEWEST)
    return kept


def rules_text(retention: Retention) -> str:
    """``last 3, daily 7, weekly 4``: the counts a policy keeps by."""
    counts = [("last", retention.keep_last)] + [
        (name, getattr(retention, f"keep_{name}")) for name, _ in PERIODS
    ]
    return ", ".join(f"{name} {n}" for name, n in counts if n)


# -- the points of one VM, as expiry decides on them --------------------------------------


@dataclass(frozen=True)
class _Point:
    id: str
    vm_name: str
    parent: str | None
    taken_at: datetime
    backup_type: BackupType
    good: bool
    repository_id: int
    run_policy: int | None  # the policy whose run made it (none: a manual backup)


@dataclass
class _Chain:
    """One VM's completed points and what holds them now."""

    context_id: str
    points: dict[str, _Point]
    backup: str | None = None  # a backup of the VM queued or running: "queued (id)"
    exports: dict[str, list[str]] = field(default_factory=dict)  # point -> its instant exports

    def children(self) -> dict[str, list[str]]:
        """Point -> the points that build on it."""
        found: dict[str, list[str]] = {}
        for p in sorted(self.points.values(), key=lambda p: p.id):
            if p.parent is not None:
                found.setdefault(p.parent, []).append(p.id)
        return found

    def copy(self) -> _Chain:
        return replace(self, points=dict(self.points))

    def oldest_first(self) -> list[_Point]:
        return sorted(self.points.values(), key=lambda p: (p.taken_at, p.id))


def _load(s: Session, which: ColumnElement[bool]) -> dict[str, _Chain]:
    """The chains of the VMs ``which`` selects (a condition on ``BackupJob``)."""
    rows = (
        select(
            BackupJob.id,
            BackupJob.vm_context_id,
            BackupJob.vm_name,
            BackupJob.parent_backup_id,
            BackupJob.started_at,
            BackupJob.created_at,
            BackupJob.backup_type,
            BackupJob.verification,
            BackupJob.repository_id,
            PolicyRun.policy_id,
        )
        .outerjoin(PolicyRun, BackupJob.policy_run_id == PolicyRun.id)
        .where(BackupJob.status == JobStatus.COMPLETED, which)
    )
    chains: dict[str, _Chain] = {}
    for row in s.execute(rows):
        chain = chains.setdefault(row.vm_context_id, _Chain(row.vm_context_id, {}))
        chain.points[row.id] = _Point(
            id=row.id,
            vm_name=row.vm_name,
            parent=row.parent_backup_id,
            taken_at=row.started_at or row.created_at,
            backup_type=BackupType(row.backup_type),
            good=row.verification != Verification.DAMAGED,
            repository_id=row.repository_id,
            run_policy=row.policy_id,
        )
    open_jobs = select(BackupJob.vm_context_id, BackupJob.id, BackupJob.status).where(
        BackupJob.status.in_(OPEN_JOB), which
    )
    for context_id, job_id, status in s.execute(open_jobs.order_by(BackupJob.id)):
        if context_id in chains:
            chains[context_id].backup = f"{status} ({job_id})"
    exports = (
        select(BackupJob.vm_context_id, RestoreExport.backup_job_id, RestoreExport.name)
        .join(BackupJob, RestoreExport.backup_job_id == BackupJob.id)
        .where(which)
    )
    for context_id, point_id, name in s.execute(exports.order_by(RestoreExport.name)):
        if context_id in chains:
            chains[context_id].exports.setdefault(point_id, []).append(name)
    return chains


@dataclass(frozen=True)
class _Rules:
    """A policy as retention reads it."""

    policy_id: int
    name: str
    repository_id: int
    retention: Retention
    zone: tzinfo

    @classmethod
    def of(cls, row: BackupPolicy) -> _Rules:
        retention = Retention(
            keep_last=row.keep_last,
            keep_daily=row.keep_daily,
            keep_weekly=row.keep_weekly,
            keep_monthly=row.keep_monthly,
            keep_yearly=row.keep_yearly,
        )
        return cls(row.id, row.name, row.repository_id, retention, ZoneInfo(row.timezone))

    def governs(self, point: _Point) -> bool:
        return point.run_policy == self.policy_id and point.repository_id == self.repository_id

    def kept(self, chain: _Chain) -> dict[str, list[str]]:
        mine = [p for p in chain.points.values() if self.governs(p)]
        stamps = [Stamp(p.id, p.taken_at, p.good) for p in mine]
        return gfs_keep(stamps, self.retention, self.zone)

    def expired(self, chain: _Chain, kept: dict[str, list[str]]) -> list[str]:
        """The points the policy lets go, oldest first."""
        return [p.id for p in chain.oldest_first() if self.governs(p) and p.id not in kept]

    def why_expired(self, point: _Point) -> str:
        if not point.good:
            return DAMAGED_OLD
        return f"kept by none of {rules_text(self.retention)}"


def _made_by(policy_ids: list[int]) -> ColumnElement[bool]:
    """The VMs some of whose points the policies' runs made."""
    contexts = (
        select(BackupJob.vm_context_id)
        .join(PolicyRun, BackupJob.policy_run_id == PolicyRun.id)
        .where(PolicyRun.policy_id.in_(policy_ids))
        .correlate(None)  # its own backup_jobs, never the query's it sits in
    )
    return BackupJob.vm_context_id.in_(contexts)


# -- the walk: what goes, in which order, and what waits ----------------------------------


@dataclass(frozen=True)
class _Reading:
    """What reads points now."""

    restoring: set[str]
    verifying: set[str]
    merging: set[str]
    browsing: Callable[[set[str]], set[str]]  # closes idle file sessions, as a merge does


@dataclass(frozen=True)
class _Step:
    point_id: str
    action: Literal["delete", "merge"]
    into: str | None = None
    blocked: str | None = None

    @property
    def line(self) -> str:
        if self.blocked:
            return f"kept for now {self.point_id}: {self.blocked}"
        if self.into:
            return f"merged {self.point_id} into {self.into}"
        return f"deleted {self.point_id}"


def _blocker(chain: _Chain, point_id: str, touched: set[str], reading: _Reading) -> str | None:
    """Why the step cannot be done now; ``touched``: the points whose files it changes
    or removes (for a merge, the point and every point after it)."""
    if chain.backup:
        return f"a backup of {chain.points[point_id].vm_name} is {chain.backup}"

    def whose(hit: set[str]) -> str:
        return "it" if point_id in hit else f"{min(hit)}, which builds on it"

    if hit := touched & reading.merging:
        return f"a merge rewrites {whose(hit)}"
    if hit := {p for p in touched if chain.exports.get(p)}:
        return f"an instant export reads {whose(hit)}"
    if hit := touched & reading.restoring:
        return f"a restore reads {whose(hit)}"
    if hit := touched & reading.verifying:
        return f"a verification reads {whose(hit)}"
    if hit := reading.browsing(touched):
        return f"a file session reads {whose(hit)}"
    return None


def _next_step(chain: _Chain, point_id: str, reading: _Reading) -> _Step:
    children = chain.children()
    mine = children.get(point_id, [])
    if len(mine) > 1:
        names = ", ".join(mine)
        return _Step(point_id, "merge", blocked=f"{len(mine)} points build on it ({names})")
    if mine:
        touched, todo = {point_id}, [point_id]  # the point and every point after it
        while todo:
            later = [c for c in children.get(todo.pop(), []) if c not in touched]
            touched.update(later)
            todo += later
        return _Step(point_id, "merge", mine[0], _blocker(chain, point_id, touched, reading))
    return _Step(point_id, "delete", blocked=_blocker(chain, point_id, {point_id}, reading))


# Does a step; the chain after it, re-read, and why it failed (none: done).
Perform = Callable[[_Chain, _Step], tuple[_Chain, str | None]]


def _walk(
    chain: _Chain, expired: list[str], reading: Callable[[], _Reading], perform: Perform
) -> tuple[_Chain, dict[str, _Step]]:
    """The expired points, oldest first, each decided on the chain as it is then; again
    while a pass did something (it may have freed a point that waited). The chain at the
    end, and each point's last step."""
    outcome: dict[str, _Step] = {}
    pending = list(expired)
    moved = True
    while moved and pending:
        moved = False
        for point_id in list(pending):
            if point_id not in chain.points:  # gone meanwhile (deleted by hand)
                pending.remove(point_id)
                outcome.pop(point_id, None)
                continue
            step = _next_step(chain, point_id, reading())
            outcome[point_id] = step
            if step.blocked:
                continue
            pending.remove(point_id)
            chain, failed = perform(chain, step)
            if failed:
                outcome[point_id] = replace(step, blocked=failed)
            else:
                moved = True
    return chain, {p: outcome[p] for p in expired if p in outcome}


def _as_if_done(chain: _Chain, step: _Step) -> tuple[_Chain, str | None]:
    """The step done on the rows in memory, as a merge and a delete change them."""
    gone = chain.points.pop(step.point_id)
    if step.into is not None:
        child = chain.points[step.into]
        full = BackupType.FULL if gone.parent is None else child.backup_type
        chain.points[step.into] = replace(child, parent=gone.parent, backup_type=full)
    return chain, None


# -- the service --------------------------------------------------------------------------


class RetentionService:
    def __init__(
        self, settings: Settings, chains: ChainMerges, restores: RestoreManager, readers: Readers
    ) -> None:
        self.settings = settings
        self.chains = chains
        self.restores = restores
        self.readers = readers

    def plan(self, policy: str | None = None) -> RetentionPlan:
        """What expiring would do now, for one policy or every one (each in turn, as
        their runs would): every point of theirs with what becomes of it and why (with
        every policy, the points no policy expires too). Nothing is done, but for the
        idle file sessions of points it would expire: closed as the expiry closes them
        (a cache; the next read opens one again)."""
        with session_scope(self.settings.db_url) as s:
            rules = self._policies(s, policy)
            which = _made_by([r.policy_id for r in rules]) if policy else true()
            chains = _load(s, which)
        reading = self._reading()
        decisions = []
        for chain in sorted(chains.values(), key=lambda c: (_vm_of(c), c.context_id)):
            decisions += self._decide(chain, rules, lambda: reading, with_manual=policy is None)
        return RetentionPlan(policy=policy, points=decisions)

    def apply(self, policy_id: int) -> list[str]:
        """Expire what the policy's retention lets go; one line per point expired, or
        left for a later run with why. A step that fails is a line too; the rest goes on."""
        with session_scope(self.settings.db_url) as s:
            row = s.get(BackupPolicy, policy_id)
            if row is None:
                raise NotFound(f"policy {policy_id} does not exist")
            rules = _Rules.of(row)
            chains = _load(s, _made_by([policy_id]))
        lines = []
        for chain in sorted(chains.values(), key=lambda c: (_vm_of(c), c.context_id)):
            expired = rules.expired(chain, rules.kept(chain))
            if expired:
                _, outcome = _walk(chain, expired, self._reading, self._perform)
                lines += [step.line for step in outcome.values()]
        for line in lines:
            log.info("retention of policy %s: %s", rules.name, line)
        return lines

    # -- parts ----------------------------------------------------------------------------

    def _policies(self, s: Session, name: str | None) -> list[_Rules]:
        rows = select(BackupPolicy).order_by(BackupPolicy.id)
        if name is not None:
            rows = rows.where(BackupPolicy.name == name)
        found = [_Rules.of(row) for row in s.scalars(rows)]
        if name is not None and not found:
            raise NotFound(f"policy {name} does not exist")
        return found

    def _reading(self) -> _Reading:
        with self.chains.merging.lock:
            merging = set(self.chains.merging.points)
        return _Reading(
            self.readers.restoring(), self.readers.verifying(), merging, self.readers.browsing
        )

    def _decide(
        self,
        chain: _Chain,
        rules: list[_Rules],
        reading: Callable[[], _Reading],
        *,
        with_manual: bool,
    ) -> list[RetentionDecision]:
        """Each point of the VM and what the policies' expiries, one after the other, do
        with it."""
        points = chain.oldest_first()
        kept: dict[str, tuple[_Rules, list[str]]] = {}
        steps: dict[str, tuple[_Rules, _Step]] = {}
        walked = chain.copy()
        for r in rules:
            mine = r.kept(chain)
            kept |= {p: (r, why) for p, why in mine.items()}
            walked, outcome = _walk(walked, r.expired(chain, mine), reading, _as_if_done)
            steps |= {p: (r, step) for p, step in outcome.items()}
        decisions = []
        for p in points:
            if p.id in steps:
                r, step = steps[p.id]
                decisions.append(
                    _decision(p, r.name, step.action, [r.why_expired(p)], step.into, step.blocked)
                )
            elif p.id in kept:
                r, reasons = kept[p.id]
                decisions.append(_decision(p, r.name, "keep", reasons))
            elif with_manual:
                unruled = MANUAL if p.run_policy is None else ELSEWHERE
                decisions.append(_decision(p, None, "keep", [unruled]))
        return decisions

    def _perform(self, chain: _Chain, step: _Step) -> tuple[_Chain, str | None]:
        """The step done: the merge, or the delete (holding the VM, so that no backup
        starts on the chain meanwhile); the VM's chain read again."""
        point = chain.points[step.point_id]
        try:
            if step.into is not None:
                self.chains.merge(step.point_id)
            else:
                holder = f"retention deletes {step.point_id}"
                with self.readers.claim_vm(chain.context_id, point.vm_name, holder):
                    self.restores.delete_point(step.point_id)
            failed = None
        except Exception as exc:
            log.warning("retention could not expire %s", step.point_id, exc_info=True)
            doing = f"merging it into {step.into}" if step.into else "deleting it"
            failed = f"{doing} failed: {exc}"
        with session_scope(self.settings.db_url) as s:
            fresh = _load(s, BackupJob.vm_context_id == chain.context_id)
        return fresh.get(chain.context_id, _Chain(chain.context_id, {})), failed


def _vm_of(chain: _Chain) -> str:
    return min((p.vm_name for p in chain.points.values()), default="")


def _decision(
    point: _Point,
    policy: str | None,
    action: Literal["keep", "delete", "merge"],
    reasons: list[str],
    into: str | None = None,
    blocked: str | None = None,
) -> RetentionDecision:
    return RetentionDecision(
        point_id=point.id,
        vm_name=point.vm_name,
        policy=policy,
        taken_at=_utc(point.taken_at),
        backup_type=point.backup_type,
        action=action,
        reasons=reasons,
        into_point_id=into,
        blocked=blocked,
    )
