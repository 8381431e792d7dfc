"""Progress lines: what ``sendense-backup-client migrate --progress json`` prints, one JSON
object a line, and what the node relays to the hub (adding its own ``exit`` line).

A union discriminated by ``type``: the client builds a line as a model, the node reads
each line with ``parse_line`` and the hub takes a batch as ``ProgressBatch``; no side
reads a line by key. ``job_id`` is the seed's name for the job on the node's side (the
client's ``--job-id``); the hub calls the same id ``backup_id``.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from engine.contract.fields import Count, JobId
from engine.contract.status import BackupType, ClientOutcome, SnapshotKind
from engine.contract.vmconfig import VMConfig

MESSAGE_MAX = 4096


def _clip(value: object) -> object:
    """A message longer than a line takes is cut, not refused: the text of an error must
    never be what fails its report."""
    if isinstance(value, str) and len(value) > MESSAGE_MAX:
        return value[: MESSAGE_MAX - 1] + "…"
    return value


DiskKey = Annotated[int, Field(ge=0, le=2**31 - 1)]
Message = Annotated[str, BeforeValidator(_clip), Field(max_length=MESSAGE_MAX)]
Rate = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Line(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    job_id: JobId
    ts: float = Field(default_factory=time.time, allow_inf_nan=False)


class SnapshotTaken(_Line):
    type: Literal["snapshot"] = "snapshot"
    name: Annotated[str, Field(max_length=255)]
    kind: SnapshotKind


class ConfigRecorded(_Line):
    """The VM's configuration as of the snapshot, sent once after ``snapshot``: what a
    restore of the whole VM recreates it from."""

    type: Literal["vm_config"] = "vm_config"
    config: VMConfig


class DiskStarted(_Line):
    """``bytes_total`` is what this copy covers: the disk's capacity for a full, the
    changed areas' bytes for an incremental (``capacity_bytes`` is the disk's). An
    incremental that had to copy the disk whole says why in ``fallback``."""

    type: Literal["disk_started"] = "disk_started"
    disk_key: DiskKey
    bytes_total: Count
    mode: Literal[BackupType.FULL, BackupType.INCREMENTAL] = BackupType.FULL
    capacity_bytes: Count | None = None
    fallback: Message | None = None


class DiskProgress(_Line):
    """Several times a second per disk. ``bytes_done`` counts bytes settled (copied or
    skipped as zero); ``bytes_zero`` is the part skipped or written as zero commands."""

    type: Literal["progress"] = "progress"
    disk_key: DiskKey
    bytes_done: Count
    bytes_total: Count
    bytes_zero: Count = 0
    rate_bps: Rate = 0.0


class DiskDone(_Line):
    """A disk copied and flushed; ``rate_bps`` is its average over the whole copy."""

    type: Literal["disk_done"] = "disk_done"
    disk_key: DiskKey
    bytes_done: Count
    bytes_zero: Count = 0
    rate_bps: Rate = 0.0
    change_id: Annotated[str, Field(max_length=255)] | None = None


class ChunkDigests(_Line):
    """Digests of consecutive chunks of one disk, as the copier read them from the source
    (engine/contract/verify.py): ``digests`` is base64 of 16-byte xxh3-128 digests, the
    first for the chunk at ``offset``. A disk sends them in any order, each chunk once."""

    type: Literal["chunk_digests"] = "chunk_digests"
    disk_key: DiskKey
    chunk_size: Annotated[int, Field(ge=4096, le=64 * 2**20)]
    offset: Count
    digests: Annotated[str, Field(max_length=1_500_000)]


class ClientError(_Line):
    type: Literal["error"] = "error"
    message: Message
    disk_key: DiskKey | None = None


class ClientDone(_Line):
    type: Literal["done"] = "done"
    status: ClientOutcome
    message: Message | None = None


class ClientExit(_Line):
    """The node's own last line for a job: the client's exit code, and its last stderr
    line when that code is not 0."""

    type: Literal["exit"] = "exit"
    exit_code: int
    message: Message | None = None


ProgressLine = Annotated[
    SnapshotTaken
    | ConfigRecorded
    | DiskStarted
    | DiskProgress
    | DiskDone
    | ChunkDigests
    | ClientError
    | ClientDone
    | ClientExit,
    Field(discriminator="type"),
]
_LINE = TypeAdapter(ProgressLine)


def parse_line(text: str | bytes) -> ProgressLine:
    """One line of the client's output; ``pydantic.ValidationError`` when it is not one."""
    return _LINE.validate_json(text)


class ProgressBatch(BaseModel):
    """What a node posts to ``/backups/{backup_id}/events`` (or a restore's
    ``/restores/{restore_id}/events``)."""

    events: Annotated[list[ProgressLine], Field(max_length=10_000)]
