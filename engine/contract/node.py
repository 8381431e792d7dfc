"""Requests and answers of the node API (base ``/api/v1``): the seed's SNA shapes.

The hub sends ``StartRequest``; the node hands it to ``sendense-backup-client`` (the
password on its standard input) and answers ``StartAnswer``. The seed calls the job
``job_id`` here; it is the hub's ``backup_id``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from engine.contract.fields import Host, JobId, Name, PathText, RateMiB, Text, Thumbprint
from engine.contract.hub import TunnelStatus
from engine.contract.status import BackupType, NodeJobState
from engine.contract.targets import NbdTargets


class _VCenterJob(BaseModel):
    """What every job the hub hands a node carries: its id and the vCenter login. The
    password is a ``SecretStr`` until ``wire`` reveals it for the hub's one call."""

    model_config = ConfigDict(extra="forbid")

    job_id: JobId
    vm_name: Name
    vm_path: PathText
    vcenter_host: Host
    vcenter_user: Text
    vcenter_password: SecretStr = Field(min_length=1, max_length=1024)
    vcenter_thumbprint: Thumbprint | None = None
    nbd_host: Host = "127.0.0.1"
    max_rate_mib: RateMiB | None = None

    def wire(self) -> dict[str, Any]:
        """The JSON body for the node: the one place the password is revealed, for the
        hub's call to its node (loopback or the SSH tunnel)."""
        body = self.model_dump(mode="json", exclude_none=True)
        body["vcenter_password"] = self.vcenter_password.get_secret_value()
        return body


class StartRequest(_VCenterJob):
    """The seed's SNA request, plus the vCenter's pinned thumbprint and a rate limit.

    ``nbd_targets`` is the seed's string on the wire and a parsed ``NbdTargets`` here.
    ``nbd_host`` is where the hub's exports listen as the hub sees them (``nbd.bind``);
    a tunnelled node reaches them at its own ``tunnel.local_host`` instead.
    """

    nbd_targets: NbdTargets
    backup_type: BackupType = BackupType.FULL
    # The incremental disks: device key -> the parent point's change id, from which the
    # client copies only the changed areas. A disk not here is copied whole.
    changed_since: dict[int, Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=dict
    )
    # Why a disk is copied whole where an incremental was asked for (the hub's plan):
    # the client says it in its log, which is the job's log, beside its own reasons.
    full_reasons: dict[int, Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        default_factory=dict
    )


class StartAnswer(BaseModel):
    job_id: str
    pid: int
    status: Literal["started"] = "started"


class NodeJob(BaseModel):
    """A job as the node knows it; ``log_tail`` only when asked for lines."""

    job_id: str
    vm_name: str
    state: NodeJobState
    pid: int
    exit_code: int | None
    started_at: float
    log_file: str
    log_tail: list[str] = Field(default_factory=list)
    undelivered_events: int = 0


class CancelAnswer(BaseModel):
    job_id: str
    state: NodeJobState
    cancel_requested: bool = True


class NodeHealth(BaseModel):
    status: Literal["ok"] = "ok"
    service: Literal["node"] = "node"
    version: str
    name: str
    hub_url: str
    jobs_running: int
    tunnel: TunnelStatus | None = None


class RestoreStartRequest(_VCenterJob):
    """The hub's request to write a restored VM's disks (``job_id`` is the restore_id,
    ``vm_path`` the new VM, already created by the hub): each of the new VM's disk keys,
    as vCenter numbered them, mapped to the read-only export of the point's disk it is
    restored from."""

    nbd_sources: NbdTargets
