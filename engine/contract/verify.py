"""Verification of restore points: what the copier records and what ``verify`` reports.

As it copies a disk, the copier takes a digest (xxh3-128) of every chunk the source gave
(``copier.chunk_size`` bytes; the disk's last chunk may be shorter) and sends them as
``chunk_digests`` lines; the hub keeps each disk's table beside its qcow2. A chunk
that reads as zero has the digest of that many zero bytes, so the table of a disk
covers it whole. An incremental point's table is its parent's with the changed chunks
replaced, so it is complete without re-reading unchanged data.

``verify`` re-reads the point through its chain, runs ``qemu-img check`` on its files
and compares every chunk with its table: any difference marks the point ``damaged``
with the disk and byte range; otherwise it is ``verified``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from engine.contract.fields import Count
from engine.contract.status import Verification

DIGEST_ALGORITHM = "xxh3-128"
DIGEST_SIZE = 16


class DamagedRange(BaseModel):
    """Bytes of one disk (guest offsets, ``offset`` to ``offset + length``) that are not
    what the copier read, or a file that ``qemu-img check`` refused (then no range)."""

    disk_key: int
    offset: int | None = None
    length: int | None = None
    reason: str


class DiskVerification(BaseModel):
    disk_key: int
    bytes_total: Count = 0
    bytes_done: Count = 0
    chunks: Count = 0  # chunks compared so far
    chunk_size: int | None = None  # None: the disk has no digest table
    check: str | None = None  # "ok", or what qemu-img check found


class VerifyReport(BaseModel):
    """A verification, running or finished. ``state`` is the point's state it led to
    (``unverified`` while running, or when the point has no digest tables to compare:
    then only the structure and every read were checked, and ``detail`` says so)."""

    point_id: str
    running: bool
    state: Verification = Verification.UNVERIFIED
    started_at: datetime | None = None
    finished_at: datetime | None = None
    bytes_total: Count = 0
    bytes_done: Count = 0
    rate_bps: float = 0.0
    detail: str | None = None  # one line: the outcome, or where it is damaged
    error: str | None = None  # the verification itself failed (could not read)
    disks: list[DiskVerification] = Field(default_factory=list)
    damaged: list[DamagedRange] = Field(default_factory=list)
