"""``VerifyManager``: verifications of restore points, one per point at a time, each in
a thread of its own; the progress lives here, the outcome goes to the point's row
(``backup_jobs.verification`` / ``verification_detail``).

A point whose disks have no digest tables (made before tables, or by hand) still gets
``qemu-img check`` and a read of every byte; its state stays ``unverified`` and the
detail says there were no digests to compare.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.contract.status import Verification
from engine.contract.verify import DamagedRange, DiskVerification, VerifyReport
from engine.db.models import BackupDisk, BackupJob
from engine.db.session import session_scope
from engine.errors import SendenseError
from engine.hub.restores.points import completed_point
from engine.hub.verify.checker import check_structure, damaged_ranges, read_disk
from engine.hub.verify.disk import DiskCheck, VerifyStopped
from engine.hub.verify.table import TableError, read_table, table_path

log = logging.getLogger("sendense.hub")

NO_TABLES = (
    "no chunk digests were recorded for this point: its files passed qemu-img check "
    "and every byte read back, but nothing was compared"
)


class _Run:
    def __init__(self, report: VerifyReport, disks: list[DiskCheck]) -> None:
        self.report = report
        self.disks = disks
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.started = time.monotonic()


def _never(point_id: str) -> None:
    return None


class VerifyManager:
    def __init__(self, settings: Settings, refuse: Callable[[str], None] = _never) -> None:
        self.settings = settings
        self.refuse = refuse  # Merging.refuse: a point being merged is not read meanwhile
        self.lock = threading.Lock()
        self._runs: dict[str, _Run] = {}  # the running or last verification of each point

    def start(self, point_id: str) -> VerifyReport:
        """Start verifying the point, or the running verification of it."""
        with self.lock:
            run = self._runs.get(point_id)
            if run is not None and run.report.running:
                return self._snapshot(run)
            self.refuse(point_id)
            with session_scope(self.settings.db_url) as s:
                disks = _disks_of(s, completed_point(s, point_id))
            report = VerifyReport(
                point_id=point_id,
                running=True,
                started_at=datetime.now(UTC),
                bytes_total=sum(d.state.bytes_total for d in disks),
                disks=[d.state for d in disks],
            )
            run = self._runs[point_id] = _Run(report, disks)
            run.thread = threading.Thread(
                target=self._run, args=(run,), name=f"verify-{point_id}", daemon=True
            )
            run.thread.start()
            return self._snapshot(run)

    def report(self, point_id: str) -> VerifyReport:
        """The running or last verification of the point; for a point never verified
        here, what its row says."""
        with self.lock:
            run = self._runs.get(point_id)
            if run is not None:
                return self._snapshot(run)
        with session_scope(self.settings.db_url) as s:
            row = completed_point(s, point_id)
            return VerifyReport(
                point_id=point_id,
                running=False,
                state=Verification(row.verification),
                detail=row.verification_detail,
            )

    def busy_points(self) -> set[str]:
        with self.lock:
            return {p for p, r in self._runs.items() if r.report.running}

    def shutdown(self) -> None:
        """Stop every running verification and wait for it (its qemu-nbd ends with it)."""
        with self.lock:
            runs = [r for r in self._runs.values() if r.report.running]
        for run in runs:
            run.stop.set()
        for run in runs:
            if run.thread is not None:
                run.thread.join()

    def _snapshot(self, run: _Run) -> VerifyReport:
        report = run.report
        if report.running:
            report.bytes_done = sum(d.state.bytes_done for d in run.disks)
            report.bytes_total = sum(d.state.bytes_total for d in run.disks)
            elapsed = time.monotonic() - run.started
            report.rate_bps = report.bytes_done / elapsed if elapsed > 0 else 0.0
        return report.model_copy(deep=True)

    def _run(self, run: _Run) -> None:
        report = run.report
        damaged: list[DamagedRange] = []
        error: str | None = None
        try:
            for disk in run.disks:
                found = check_structure(self.settings.nbd.qemu_img, disk)
                if found is not None:
                    damaged.append(found)
            for disk in run.disks:
                nbd = self.settings.nbd
                read_disk(nbd.qemu_img, nbd.qemu_nbd, self.settings.run, disk, run.stop)
                damaged.extend(damaged_ranges(disk))
        except VerifyStopped:
            error = "verification stopped: the hub is shutting down"
        except SendenseError as exc:
            error = str(exc)
        except Exception as exc:  # anything unforeseen still ends the run, reported
            log.exception("verify %s failed", report.point_id)
            error = f"verification failed: {exc}"
        state, detail = _outcome(run, damaged, error)
        if error is None:
            try:
                with session_scope(self.settings.db_url) as s:
                    row = s.get(BackupJob, report.point_id)
                    if row is not None:
                        row.verification, row.verification_detail = state, detail
            except Exception as exc:  # the point's row is gone (deleted meanwhile)
                error = f"verification not recorded: {exc}"
        with self.lock:
            self._snapshot(run)
            report.state, report.detail, report.error = state, detail, error
            report.damaged = damaged
            report.finished_at = datetime.now(UTC)
            report.running = False
        log.info("verify %s: %s (%s)", report.point_id, state, error or detail)


def _outcome(
    run: _Run, damaged: list[DamagedRange], error: str | None
) -> tuple[Verification, str | None]:
    if error is not None:
        return Verification.UNVERIFIED, None
    if damaged:
        first = damaged[0]
        where = f"disk {first.disk_key}"
        if first.offset is not None and first.length is not None:
            where += f" bytes {first.offset}-{first.offset + first.length}"
        more = f" (and {len(damaged) - 1} more range(s))" if len(damaged) > 1 else ""
        return Verification.DAMAGED, f"damaged: {where}: {first.reason}{more}"
    if any(d.table is None for d in run.disks):
        return Verification.UNVERIFIED, NO_TABLES
    chunks = sum(d.state.chunks for d in run.disks)
    return Verification.VERIFIED, f"verified: {chunks} chunks match their digests"


def _disks_of(s: Session, row: BackupJob) -> list[DiskCheck]:
    """The point's disks: each with its files down the chain and its table, if any."""
    disks = []
    for d in sorted(row.disks, key=lambda d: d.disk_key):
        qcow2 = Path(d.qcow2_path)
        files = [qcow2]
        parent = d.parent_qcow2_path
        while parent:
            files.append(Path(parent))
            parent = _parent_of(s, parent)
        path = table_path(qcow2)
        table = None
        if path.exists():
            try:
                table = read_table(path)
            except TableError as exc:
                raise SendenseError(f"disk {d.disk_key}: {exc}") from None
        disks.append(
            DiskCheck(
                disk_key=d.disk_key,
                qcow2=qcow2,
                files=files,
                table=table,
                state=DiskVerification(
                    disk_key=d.disk_key,
                    bytes_total=d.bytes_total,
                    chunk_size=table.header.chunk_size if table else None,
                ),
            )
        )
    return disks


def _parent_of(s: Session, qcow2: str) -> str | None:
    row = s.scalars(select(BackupDisk).where(BackupDisk.qcow2_path == qcow2)).first()
    return row.parent_qcow2_path if row is not None else None
