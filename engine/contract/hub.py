"""Requests and answers of the hub API (base ``/api/v1``).

The seed's names stay where the seed has them (``vm_name``, ``repository_id``,
``backup_type``, ``disk_id`` in ``disk_results``, ``nbd_targets_string``); everywhere
else one name per thing: a job is ``backup_id``, a VMware device key ``disk_key``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    model_validator,
)

from engine.contract.fields import (
    Count,
    Host,
    Id,
    Name,
    PathText,
    RateMiB,
    Text,
    Thumbprint,
)
from engine.contract.progress import DiskKey
from engine.contract.status import (
    BackupType,
    DiskStatus,
    JobStatus,
    NodeState,
    SnapshotKind,
    TunnelState,
)


class _In(BaseModel):
    """A request body: unknown fields are refused, so a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


class ErrorAnswer(BaseModel):
    """Every error answer of the hub and the node: one line an operator can act on."""

    detail: str

    @classmethod
    def detail_of(cls, content: bytes, reason: str) -> str:
        """The ``detail`` of an error answer's body, or its text when it is not ours."""
        try:
            return cls.model_validate_json(content).detail
        except ValueError:
            return content.decode(errors="replace").strip()[:200] or reason


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    service: Literal["hub"] = "hub"


# ---- backups ---------------------------------------------------------------------------

# The seed sends ``repository_id`` as a string ("1"); a number is taken too.
RepositoryRef = Annotated[Id, BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v)]


class BackupRequest(_In):
    """The seed's ``{"vm_name", "repository_id", "backup_type"}``.

    The VM is one thing: a name (which must then match one context), its context id, or
    its inventory path; give exactly one.
    """

    vm_name: Name | None = None
    vm_context_id: Annotated[str, StringConstraints(min_length=1, max_length=191)] | None = None
    vm_path: PathText | None = None
    repository_id: RepositoryRef
    backup_type: BackupType = BackupType.FULL
    # Addition to the seed: limit each disk's copy to this many MiB/s.
    max_rate_mib: RateMiB | None = None

    @model_validator(mode="after")
    def _one_vm(self) -> BackupRequest:
        given = [n for n in ("vm_name", "vm_context_id", "vm_path") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of vm_name, vm_context_id or vm_path")
        return self


class QueueRequest(_In):
    """``POST /api/v1/backups/queue``: many backups at once (a console selection, a
    script), each queued as one job; the hub dispatches them within its limits
    (``[queue]`` settings, each node's capacity). A VM with a job queued or running
    already is refused, and so is the whole request: nothing is queued."""

    backups: Annotated[list[BackupRequest], Field(min_length=1, max_length=10_000)]


class DiskResult(BaseModel):
    """One disk of the seed's answer: its export, started and answering."""

    disk_id: DiskKey  # the seed's name for the VMware device key
    nbd_port: int
    nbd_export_name: str
    qcow2_path: str
    qemu_nbd_pid: int
    status: DiskStatus = DiskStatus.QEMU_STARTED


class BackupStarted(BaseModel):
    """The seed's answer to ``POST /backups``."""

    backup_id: str
    vm_context_id: str
    vm_name: str
    disk_results: list[DiskResult]
    nbd_targets_string: str
    status: Literal["started"] = "started"


class ByteCounters(BaseModel):
    """Bytes settled (copied or skipped as zero) of the whole, the part that was zero, and
    the rate now: of one disk, or summed over a job's disks."""

    bytes_done: Count = 0
    bytes_total: Count = 0
    bytes_zero: Count = 0
    rate_bps: float = 0.0


class DiskCounters(ByteCounters):
    """One disk's numbers and where it stands.

    ``bytes_total`` is what the copy covers (for an incremental: the changed bytes, once
    the client knows them), ``capacity_bytes`` the disk's size; ``mode`` is how this disk
    is copied, and ``fallback_reason`` why a disk asked to be incremental is a full.
    """

    disk_key: DiskKey
    status: DiskStatus
    mode: Literal[BackupType.FULL, BackupType.INCREMENTAL] = BackupType.FULL
    capacity_bytes: Count = 0
    fallback_reason: str | None = None


class JobDisk(DiskCounters):
    nbd_port: int | None
    nbd_export_name: str
    qcow2_path: str
    parent_qcow2_path: str | None = None  # an incremental disk's backing file
    change_id: str | None = None
    qcow2_size_bytes: int | None = None
    error_message: str | None = None


class Job(ByteCounters):
    """A backup job; a running job's numbers are live, from the hub's memory."""

    backup_id: str
    vm_name: str
    vm_context_id: str
    repository_id: int
    node_id: int | None
    backup_type: BackupType  # full or incremental: what the job does
    status: JobStatus
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None = None
    snapshot_kind: SnapshotKind | None = None
    disks: list[JobDisk] = Field(default_factory=list)
    requested_type: BackupType | None = None  # what was asked: full, incremental or auto
    parent_backup_id: str | None = None  # the point an incremental builds on
    # A queued job's place in the queue (1 is dispatched first); none once it left it.
    queue_position: int | None = None
    # Why a queued job has not started yet, as the last dispatch round saw it ("ESXi
    # host host-12 has its limit of 8 disk(s) running", "no node … is up").
    waiting_reason: str | None = None
    node_name: str | None = None  # the node the hub picked for it
    policy_name: str | None = None  # the policy whose run queued it
    policy_run_id: int | None = None

    @property
    def finished(self) -> bool:
        return self.status.finished


class DiskPreview(BaseModel):
    """How one disk would be copied: ``mode`` and, for a full where an incremental was
    asked for (or ``auto`` found none possible), ``reason``."""

    disk_key: DiskKey
    capacity_bytes: Count
    mode: Literal[BackupType.FULL, BackupType.INCREMENTAL]
    reason: str | None = None
    parent_qcow2_path: str | None = None


class BackupPreview(BaseModel):
    """What ``POST /backups`` would do with the same request, decided the same way (the
    client may still fall back to a full for a disk whose change id vCenter no longer
    knows: that is only found after the snapshot)."""

    vm_name: str
    vm_context_id: str
    requested_type: BackupType
    backup_type: Literal[BackupType.FULL, BackupType.INCREMENTAL]
    parent_backup_id: str | None = None
    reason: str | None = None  # why the whole job is a full, when it is one
    cbt_enabled: bool
    disks: list[DiskPreview] = Field(default_factory=list)


class JobSummary(BaseModel):
    """A job as a VM context lists it among its last backups."""

    backup_id: str
    status: JobStatus
    backup_type: BackupType
    repository_id: int
    created_at: datetime | None
    completed_at: datetime | None
    bytes_total: Count = 0
    error_message: str | None = None


class DiskEvent(DiskCounters):
    """The ``disk`` server-sent event: one disk's numbers, at most a few a second."""

    backup_id: str


class JobLog(BaseModel):
    lines: list[str]


class BackupQuery(BaseModel):
    """``GET /backups`` filters."""

    vm_name: Name | None = None
    status: JobStatus | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


# ---- repositories --------------------------------------------------------------------


class RepositoryIn(_In):
    name: Name
    path: PathText


class Repository(BaseModel):
    id: int
    name: str
    path: str
    enabled: bool
    used_bytes: int | None = None
    free_bytes: int | None = None
    total_bytes: int | None = None
    error: str | None = None


# ---- vCenters --------------------------------------------------------------------------


class VCenterIn(_In):
    host: Host
    username: Text
    password: Annotated[SecretStr, Field(min_length=1, max_length=1024)]
    thumbprint: Thumbprint | None = None
    name: Name | None = None
    # With no thumbprint: trust the one the server shows now (trust on first use).
    trust: bool = False
    # Log in once before storing; false stores it untried (a vCenter not reachable yet).
    verify: bool = True


class VCenter(BaseModel):
    """A stored vCenter login; never its password."""

    id: int
    name: str
    host: str
    username: str
    thumbprint: str | None


class VCenterTest(BaseModel):
    ok: bool
    message: str


class Probe(BaseModel):
    """What ``GET /vcenters/probe`` tells: the thumbprint of the certificate a vCenter
    shows, to be checked by a person before it is pinned."""

    thumbprint: str


# ---- VM contexts -------------------------------------------------------------------------


class VMIn(_In):
    vcenter_id: Id
    path: PathText


class VMContextDisk(BaseModel):
    disk_key: DiskKey
    label: str | None
    capacity_bytes: int
    datastore: str | None
    vmdk_path: str | None
    change_id: str | None


class VMContext(BaseModel):
    """A VM Sendense knows (a ``vm_replication_contexts`` row) with its disks."""

    context_id: str
    vm_name: str
    vm_path: str
    vmware_vm_id: str | None
    vcenter_host: str
    datacenter: str | None
    credential_id: int | None
    power_state: str | None
    cpu_count: int | None
    memory_mb: int | None
    guest_os: str | None
    cbt_enabled: bool
    disks: list[VMContextDisk]
    last_backups: list[JobSummary] = Field(default_factory=list)


# ---- nodes and their tunnels -------------------------------------------------------------


class TunnelStatus(BaseModel):
    """The node's tunnel to the hub, as its status file (``tunnel.json``) tells it."""

    model_config = ConfigDict(extra="ignore")

    state: TunnelState
    since: str | None = None
    rtt_ms: float | None = None
    last_error: str | None = None
    hub: str | None = None
    forwards: list[str] = Field(default_factory=list)
    connections: int = 1
    connections_up: int = 0
    connects: int = 0
    pid: int | None = None
    updated_at: str | None = None


class NodeIn(_In):
    """``POST /api/v1/nodes``: a node the hub may hand jobs to. ``vcenters`` are the
    vCenter hosts it may serve (empty: every one); ``max_jobs``/``max_disks`` its capacity
    (none: the ``[queue]`` settings' per-node limits)."""

    name: Name
    url: Annotated[str, StringConstraints(min_length=8, max_length=1024)]
    vcenters: Annotated[list[Host], Field(max_length=100)] = Field(default_factory=list)
    max_jobs: Annotated[int, Field(ge=1, le=1000)] | None = None
    max_disks: Annotated[int, Field(ge=1, le=10_000)] | None = None
    enabled: bool = True


class NodeEdit(_In):
    """``PATCH /api/v1/nodes/{name}``: the fields given change."""

    url: Annotated[str, StringConstraints(min_length=8, max_length=1024)] | None = None
    vcenters: Annotated[list[Host], Field(max_length=100)] | None = None
    max_jobs: Annotated[int, Field(ge=1, le=1000)] | None = None
    max_disks: Annotated[int, Field(ge=1, le=10_000)] | None = None
    enabled: bool | None = None


class NodeInfo(BaseModel):
    """A node as the hub sees it: ``state`` from its heartbeat (the hub's health check
    every ``nodes.heartbeat_seconds``; ``down`` once none answered for
    ``nodes.down_after_seconds``), its load from the jobs the hub gave it."""

    id: int
    name: str
    url: str
    enabled: bool
    state: NodeState
    version: str | None = None
    jobs_running: int | None = None  # as the node itself reports
    tunnel: TunnelStatus | None = None
    error: str | None = None
    vcenters: list[str] = Field(default_factory=list)  # empty: serves every vCenter
    max_jobs: int = 0
    max_disks: int = 0
    jobs_active: int = 0  # jobs the hub has running (or starting) on it
    disks_active: int = 0
    throughput_bps: float = 0.0  # the sum of its running disks' rates now
    bytes_last_hour: Count = 0  # copied by its jobs that ended in the last hour, and running
    last_seen_at: datetime | None = None


# The documented error answers, for every route's OpenAPI ``responses``.
def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    words = {
        401: "missing or wrong API token",
        404: "no such thing",
        409: "conflict with what is running",
        422: "bad or unusable input",
        502: "the node or vCenter behind the hub refused",
        503: "the node is unreachable, or no NBD port is free",
        507: "too little free space for what must be written",
    }
    return {s: {"model": ErrorAnswer, "description": words[s]} for s in statuses}
