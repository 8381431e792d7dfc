"""Every disk of a run copied at once, each on its own thread, reported line by line:
what ``migrate`` (VMware → qcow2 exports) and ``restore`` (exports → VMware) share.

A disk's lines are ``disk_started``, ``progress`` several times a second (with
``chunk_digests`` as work units complete, when the options take digests), then
``disk_done`` or an ``error`` naming the disk; the first failure cancels the other
disks, and that failure is the one raised.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from engine.contract.progress import ChunkDigests, ClientError, DiskStarted
from engine.contract.status import BackupType
from engine.contract.verify import DIGEST_SIZE
from engine.node.copier import CopyCancelled, CopyOptions, Extent, Progress, copy
from engine.node.progress import Reporter, disk_done, disk_progress

log = logging.getLogger("sendense.client")

LOG_RATE_SECONDS = 10.0
# Digests per ``chunk_digests`` line: 43 KiB of base64, under the node's 64 KiB line
# buffer (asyncio's default) and far under the contract's limit.
DIGESTS_PER_LINE = 2048


@dataclass(frozen=True)
class DiskCopy:
    key: int
    capacity: int
    source_uri: str
    target_uri: str
    change_id: str | None = None  # what its ``disk_done`` reports (a backup's CBT id)
    # What to copy: None is the whole disk, else an incremental's changed areas.
    extents: Sequence[Extent] | None = None
    # A new disk or a fresh qcow2 reads as zeroes, so zero runs need no command; an
    # overlay on a parent point does not: its zero runs must be written as zeroes.
    target_is_zero: bool = True
    mode: BackupType = BackupType.FULL
    fallback: str | None = None  # why a disk asked to be incremental is copied whole

    @property
    def bytes_total(self) -> int:
        if self.extents is None:
            return self.capacity
        return sum(e.length for e in self.extents)

    def started(self, job_id: str) -> DiskStarted:
        return DiskStarted(
            job_id=job_id,
            disk_key=self.key,
            bytes_total=self.bytes_total,
            mode=self.mode,
            capacity_bytes=self.capacity,
            fallback=self.fallback,
        )


class DiskCopies:
    """The copies of one run, sharing its cancel event, its reporter and its options
    (but for ``target_is_zero``, which is each disk's own).

    ``reported`` holds the ids of errors already sent as an ``error`` line with their
    disk key, so the run's end does not send them a second time.
    """

    def __init__(
        self,
        job_id: str,
        reporter: Reporter,
        cancel: threading.Event,
        options: CopyOptions,
        reported: set[int],
    ) -> None:
        self.job_id = job_id
        self.reporter = reporter
        self.cancel = cancel
        self.options = options
        self.reported = reported

    def run(self, copies: list[DiskCopy]) -> None:
        """Copy them all; returns when every one finished, raises the first failure."""
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=self._copy_one, args=(c, errors), name=f"disk-{c.key}")
            for c in copies
        ]
        for t in threads:
            t.start()
        # Join with a timeout so that signal handlers run on this (the main) thread.
        while alive := [t for t in threads if t.is_alive()]:
            alive[0].join(0.2)
        real = [e for e in errors if not isinstance(e, CopyCancelled)]
        if real:
            raise real[0]
        if errors:
            raise errors[0]

    def _copy_one(self, c: DiskCopy, errors: list[BaseException]) -> None:
        last_log = time.monotonic()
        options = dataclasses.replace(self.options, target_is_zero=c.target_is_zero)

        def on_progress(p: Progress) -> None:
            nonlocal last_log
            self.reporter.emit(disk_progress(self.job_id, c.key, p))
            if time.monotonic() - last_log >= LOG_RATE_SECONDS:
                last_log = time.monotonic()
                log.info(
                    "disk %s: %d of %d MiB, %.1f MiB/s",
                    c.key,
                    p.bytes_done >> 20,
                    p.bytes_total >> 20,
                    p.rate_bps / 2**20,
                )

        def on_digests(offset: int, digests: bytes) -> None:
            chunk = self.options.chunk_size
            assert chunk is not None
            step = DIGESTS_PER_LINE * DIGEST_SIZE
            for i in range(0, len(digests), step):
                self.reporter.emit(
                    ChunkDigests(
                        job_id=self.job_id,
                        disk_key=c.key,
                        chunk_size=chunk,
                        offset=offset + i // DIGEST_SIZE * chunk,
                        digests=base64.b64encode(digests[i : i + step]).decode(),
                    )
                )

        log.info(
            "disk %s: copying %d of %d bytes (%s) from %s to %s",
            c.key,
            c.bytes_total,
            c.capacity,
            c.mode.value,
            c.source_uri,
            c.target_uri,
        )
        self.reporter.emit(c.started(self.job_id))
        try:
            final = copy(
                c.source_uri,
                c.target_uri,
                disk=str(c.key),
                extents=c.extents,
                options=options,
                progress=on_progress,
                cancel=self.cancel,
                digests=on_digests if self.options.chunk_size else None,
            )
        except BaseException as exc:
            errors.append(exc)
            self.cancel.set()
            if not isinstance(exc, CopyCancelled):
                self.reported.add(id(exc))
                self.reporter.emit(
                    ClientError(job_id=self.job_id, message=str(exc), disk_key=c.key)
                )
            return
        log.info(
            "disk %s: done, %d bytes (%d as zero) at %.1f MiB/s over %d connection(s)",
            c.key,
            final.bytes_done,
            final.bytes_zero,
            final.rate_bps / 2**20,
            final.connections,
        )
        self.reporter.emit(disk_done(self.job_id, c.key, final, c.change_id))
