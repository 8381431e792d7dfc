"""Policies in the ``backup_policies`` table: added, edited and enabled only when whole.

Everything a request carries is checked before anything is written, in the caller's
transaction, so a refused policy leaves no row: the name (unique, one URL segment),
the repository (there, enabled), the schedule and timezone (``schedule``), and the
include and exclude paths (each in some vCenter's inventory, the includes selecting at
least one VM: the ``Selector`` the service hands in, so this module talks to no vCenter).
Notification URLs are stored sealed with the master key.

``last_scheduled_for`` is the scheduler's anchor: nothing at or before it fires. A new
policy, an enabled one and one whose schedule changed are anchored at now, so none
catches up on times that passed before (or while disabled).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.contract.policy import PolicyEdit, PolicyIn, Retention
from engine.contract.status import BackupType
from engine.credentials import load_or_create_key
from engine.db.models import BackupPolicy, BackupRepository
from engine.errors import BadInput, Conflict, NotFound, SendenseError
from engine.hub.policies import notify
from engine.hub.policies.resolve import Resolution
from engine.hub.policies.schedule import Schedule

# Checks include and exclude paths; raises the one-line error when they are unusable.
Selector = Callable[[Sequence[str], Sequence[str]], Resolution]

RETENTION_FIELDS = tuple(Retention.model_fields)


def anchor_time(now: datetime) -> datetime:
    """``now`` to the second: MariaDB's DATETIME keeps no fraction, and an anchor must
    read back as written for the scheduler's compare-and-set."""
    return now.replace(microsecond=0)


def includes(row: BackupPolicy) -> list[str]:
    return list(json.loads(row.includes))


def excludes(row: BackupPolicy) -> list[str]:
    return list(json.loads(row.excludes or "[]"))


def retention(row: BackupPolicy) -> Retention:
    return Retention(**{f: getattr(row, f) for f in RETENTION_FIELDS})


def backup_type(row: BackupPolicy) -> BackupType:
    return BackupType(row.backup_type)


def schedule(row: BackupPolicy) -> Schedule:
    return Schedule(row.schedule, row.timezone)


def row_of(s: Session, name: str) -> BackupPolicy:
    row = s.scalar(select(BackupPolicy).where(BackupPolicy.name == name))
    if row is None:
        raise NotFound(f"policy {name!r} does not exist")
    return row


class PolicyStore:
    def __init__(self, key_path: Path, select_vms: Selector) -> None:
        self.key_path = key_path
        self.select_vms = select_vms

    @property
    def key(self) -> bytes:
        return load_or_create_key(self.key_path)

    def notify_urls(self, row: BackupPolicy) -> list[str]:
        """The policy's Apprise URLs in clear: for sending only, never for an answer."""
        return notify.open_urls(self.key, row.notify_sealed)

    def shown_urls(self, row: BackupPolicy) -> list[str]:
        """The URLs with their secrets hidden; a seal that does not open says so in the
        list rather than failing every view of the policy."""
        try:
            return [notify.redact(url) for url in self.notify_urls(row)]
        except SendenseError as exc:
            return [f"<{exc}>"]

    def add(self, s: Session, request: PolicyIn, now: datetime) -> BackupPolicy:
        self._check_name(s, request.name)
        self._check_repository(s, request.repository_id)
        Schedule(request.schedule, request.timezone)
        sealed = self._seal(request.notify)
        self.select_vms(request.include, request.exclude)
        row = BackupPolicy(
            name=request.name,
            repository_id=request.repository_id,
            schedule=request.schedule,
            timezone=request.timezone,
            includes=json.dumps(request.include),
            excludes=json.dumps(request.exclude),
            backup_type=request.backup_type.value,
            notify_sealed=sealed,
            notify_on_success=request.notify_on_success,
            enabled=request.enabled,
            last_scheduled_for=anchor_time(now),
        )
        self._set_retention(row, request.retention)
        s.add(row)
        self._flush(s, request.name)
        return row

    def edit(self, s: Session, name: str, request: PolicyEdit, now: datetime) -> BackupPolicy:
        row = row_of(s, name)
        if request.name is not None and request.name != row.name:
            self._check_name(s, request.name)
            row.name = request.name
        if request.repository_id is not None:
            self._check_repository(s, request.repository_id)
            row.repository_id = request.repository_id
        new_schedule = request.schedule or row.schedule
        new_zone = request.timezone or row.timezone
        Schedule(new_schedule, new_zone)
        re_anchor = (new_schedule, new_zone) != (row.schedule, row.timezone)
        row.schedule, row.timezone = new_schedule, new_zone
        if request.notify is not None:
            row.notify_sealed = self._seal(request.notify)
        if request.include is not None or request.exclude is not None:
            include = request.include if request.include is not None else includes(row)
            exclude = request.exclude if request.exclude is not None else excludes(row)
            self.select_vms(include, exclude)
            row.includes, row.excludes = json.dumps(include), json.dumps(exclude)
        if request.backup_type is not None:
            row.backup_type = request.backup_type.value
        if request.retention is not None:
            self._set_retention(row, request.retention)
        if request.notify_on_success is not None:
            row.notify_on_success = request.notify_on_success
        if request.enabled is not None:
            re_anchor |= request.enabled and not row.enabled
            row.enabled = request.enabled
        if re_anchor:
            row.last_scheduled_for = anchor_time(now)
        row.updated_at = now
        self._flush(s, row.name)
        return row

    def set_enabled(self, s: Session, name: str, enabled: bool, now: datetime) -> BackupPolicy:
        """Enabling anchors at now: what passed while disabled is not caught up."""
        row = row_of(s, name)
        if enabled and not row.enabled:
            row.last_scheduled_for = anchor_time(now)
        row.enabled = enabled
        row.updated_at = now
        s.flush()
        return row

    def _seal(self, urls: list[SecretStr]) -> bytes | None:
        """The URLs sealed, once Apprise can use every one (refused on the way in, not on
        the first run; the line names the URL by its place, never by its secrets)."""
        plain = [u.get_secret_value() for u in urls]
        for n, url in enumerate(plain, 1):
            problem = notify.validate(url)
            if problem:
                raise BadInput(f"notification URL {n} of {len(plain)}: {problem}")
        return notify.seal_urls(self.key, plain)

    @staticmethod
    def _set_retention(row: BackupPolicy, keep: Retention) -> None:
        for f in RETENTION_FIELDS:
            setattr(row, f, getattr(keep, f))

    @staticmethod
    def _check_name(s: Session, name: str) -> None:
        if "/" in name:
            raise BadInput(f"policy name {name!r} must not contain '/'")
        if s.scalar(select(BackupPolicy.id).where(BackupPolicy.name == name)) is not None:
            raise Conflict(f"a policy named {name!r} exists already")

    @staticmethod
    def _check_repository(s: Session, repository_id: int) -> None:
        repo = s.get(BackupRepository, repository_id)
        if repo is None:
            raise NotFound(f"repository {repository_id} does not exist")
        if not repo.enabled:
            raise BadInput(f"repository {repository_id} ({repo.name}) is disabled")

    @staticmethod
    def _flush(s: Session, name: str) -> None:
        """Write now; a name taken meanwhile by another request is the same conflict."""
        try:
            s.flush()
        except IntegrityError:
            raise Conflict(f"a policy named {name!r} exists already") from None
