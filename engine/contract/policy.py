"""Policies, their runs, and retention, on the wire (``/api/v1/policies``, ``/api/v1/retention``).

A policy names its VMs by inventory path: a VM's own path, or a folder, cluster, host or
resource pool whose VMs are taken when the policy runs. The schedule is a cron
expression read in the policy's timezone. Notification targets are Apprise URLs; they
often hold a token or a password, so an answer shows them with those parts hidden.

Times are naive UTC, as everywhere on this API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

from engine.contract.fields import Count, Name, PathText
from engine.contract.hub import RepositoryRef
from engine.contract.status import BackupType, JobStatus, PolicyRunStatus, RunTrigger

# Checked for syntax by the hub's schedule module (croniter); here only its size.
CronText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
# An IANA zone name ("Europe/Berlin"); checked by the hub against zoneinfo.
ZoneText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Keep = Annotated[int, Field(ge=1, le=100_000)]
NotifyUrl = Annotated[SecretStr, Field(min_length=3, max_length=2048)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Retention(_In):
    """What a policy keeps of each VM's points: the newest ``keep_last``, plus the newest
    point of each of the last ``keep_daily`` days, ``keep_weekly`` ISO weeks,
    ``keep_monthly`` months and ``keep_yearly`` years that have one (GFS, in the policy's
    timezone). All empty keeps everything."""

    keep_last: Keep | None = None
    keep_daily: Keep | None = None
    keep_weekly: Keep | None = None
    keep_monthly: Keep | None = None
    keep_yearly: Keep | None = None

    @property
    def keeps_everything(self) -> bool:
        return all(v is None for v in self.model_dump().values())


class PolicyIn(_In):
    """``POST /api/v1/policies``: a new policy."""

    name: Name
    repository_id: RepositoryRef
    schedule: CronText
    timezone: ZoneText = "UTC"
    include: Annotated[list[PathText], Field(min_length=1, max_length=1000)]
    exclude: Annotated[list[PathText], Field(max_length=1000)] = Field(default_factory=list)
    backup_type: BackupType = BackupType.AUTO
    retention: Retention = Field(default_factory=Retention)
    notify: Annotated[list[NotifyUrl], Field(max_length=20)] = Field(default_factory=list)
    notify_on_success: bool = False
    enabled: bool = True


class PolicyEdit(_In):
    """``PATCH /api/v1/policies/{name}``: the fields given change, the rest stay. A list
    given replaces the policy's list; ``retention`` replaces the whole retention."""

    name: Name | None = None
    repository_id: RepositoryRef | None = None
    schedule: CronText | None = None
    timezone: ZoneText | None = None
    include: Annotated[list[PathText], Field(min_length=1, max_length=1000)] | None = None
    exclude: Annotated[list[PathText], Field(max_length=1000)] | None = None
    backup_type: BackupType | None = None
    retention: Retention | None = None
    notify: Annotated[list[NotifyUrl], Field(max_length=20)] | None = None
    notify_on_success: bool | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> PolicyEdit:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        return self


class PolicyRunVM(BaseModel):
    """One VM of a run: its job (none when it could not be queued) and how it ended."""

    vm_name: str
    vm_path: str
    vcenter_host: str | None = None
    backup_id: str | None = None
    status: JobStatus | None = None
    queue_position: int | None = None
    backup_type: BackupType | None = None
    bytes_transferred: Count = 0
    duration_seconds: float | None = None
    error: str | None = None


class PolicyRun(BaseModel):
    id: int
    policy_id: int
    policy_name: str
    trigger: RunTrigger
    # The schedule's time this run is for (none for a manual run).
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    status: PolicyRunStatus
    error: str | None = None  # why the run failed as a whole, or was missed
    vms: list[PolicyRunVM] = Field(default_factory=list)
    # What retention did after the run, one line per point expired or left for later.
    retention: list[str] = Field(default_factory=list)
    notify_error: str | None = None  # a notification that could not be sent


class Policy(BaseModel):
    id: int
    name: str
    repository_id: int
    schedule: str
    timezone: str
    include: list[str]
    exclude: list[str]
    backup_type: BackupType
    retention: Retention
    notify: list[str]  # Apprise URLs with their secrets hidden
    notify_on_success: bool
    enabled: bool
    next_run_at: datetime | None = None  # none when disabled
    last_run: PolicyRun | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class PolicyVM(BaseModel):
    """A VM a policy covers now, and the include (or exclude) path that decided it."""

    vm_name: str
    vm_path: str
    vcenter_host: str
    matched_by: str
    context_id: str | None = None  # none until its first backup adds it


class PolicyPreview(BaseModel):
    """``GET /api/v1/policies/{name}/vms``: the policy's VMs resolved now."""

    policy: str
    vms: list[PolicyVM] = Field(default_factory=list)
    excluded: list[PolicyVM] = Field(default_factory=list)


class PolicyRunStarted(BaseModel):
    """``POST /api/v1/policies/{name}/run``: the run, its VMs queued."""

    run: PolicyRun


# ---- retention -----------------------------------------------------------------------

RetentionAction = Literal["keep", "delete", "merge"]


class RetentionDecision(BaseModel):
    """One point and what retention does with it. A kept point says which rules keep it
    (``last 3``, ``daily 2026-11-30``, ``the VM's last good point``…); an expired one is
    deleted, or merged into its child when a point builds on it. ``blocked`` says why an
    expired point must wait (being read, a backup of its VM running)."""

    point_id: str
    vm_name: str
    policy: str | None = None
    taken_at: datetime | None = None
    backup_type: BackupType
    action: RetentionAction
    reasons: list[str] = Field(default_factory=list)
    into_point_id: str | None = None  # the child a merge folds it into
    blocked: str | None = None


class RetentionPlan(BaseModel):
    """``GET /api/v1/retention/plan[?policy=NAME]``: what the next expiry would do."""

    policy: str | None = None
    points: list[RetentionDecision] = Field(default_factory=list)

    @property
    def expiring(self) -> list[RetentionDecision]:
        return [p for p in self.points if p.action != "keep"]
