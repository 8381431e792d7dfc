"""Jobs: running backups first, then the queue in its order, then history; the selected
job's disks, throughput and log (the shared shape of both job screens is
``live_jobs.LiveJobsScreen``). A queued job shows its place ("queued #3"); the node the
hub picked and the policy whose run queued it have columns of their own."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Log

from engine.contract.hub import Job
from engine.contract.status import BackupType, JobStatus
from sendense_tui import fmt
from sendense_tui.keymap import bindings, keys_for
from sendense_tui.screens.help import pretty
from sendense_tui.screens.live_jobs import LiveJobsScreen
from sendense_tui.state import ConsoleState
from sendense_tui.widgets.live_table import state_text

# Fixed widths for the columns that change live: cells updated in place never resize.
JOB_COLUMNS = {
    "state": 11,
    "VM": 14,
    "type": 4,
    "progress": 15,
    "rate": 11,
    "size": 10,
    "node": 10,
    "policy": 12,
    "started": 14,
    "backup id": 26,
}
LOG_LINES = 50


class JobsScreen(LiveJobsScreen[Job]):
    BINDINGS = bindings("jobs.cancel", "jobs.refresh", "nav.back")
    LIST_ID = "jobs-table"
    COLUMNS = JOB_COLUMNS
    EMPTY = "No job yet: back one up from the inventory (1, then b)."

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(state)
        self._log_for: str | None = None
        self._log_loading = False
        self._log_lines: list[str] = []

    def jobs(self) -> list[Job]:
        return self.state.store.ordered()

    def job(self, job_id: str) -> Job | None:
        return self.state.store.jobs.get(job_id)

    def job_id(self, job: Job) -> str:
        return job.backup_id

    def pending(self) -> str | None:
        backup_id, self.state.pending_job = self.state.pending_job, None
        return backup_id

    def row(self, job: Job) -> list[Any]:
        queued = job.status is JobStatus.QUEUED
        return [
            job_state(job),
            job.vm_name,
            job.backup_type.value,
            "" if queued else fmt.bar(job.bytes_done, job.bytes_total, 10),
            "" if job.finished or queued else fmt.rate(job.rate_bps),
            "" if queued and not job.bytes_total else fmt.size(job.bytes_total),
            job.node_name or "",
            job.policy_name or "",
            fmt.moment(job.started_at or job.created_at),
            job.backup_id,
        ]

    def headline(self, job: Job) -> Text:
        text = Text()
        text.append(f"{job.vm_name} ", style="bold")
        text.append(f"{job.backup_id}  ")
        text.append_text(job_state(job))
        if job.node_name:
            text.append(f"  on {job.node_name}")
        if job.policy_name:
            text.append(f"  policy {job.policy_name}", style="dim")
        if job.status is JobStatus.QUEUED:
            key = pretty(keys_for("jobs.cancel", self.state.keymap))
            why = job.waiting_reason or "for room within the hub's limits"
            text.append(f"\nwaits: {why}", style="yellow")
            text.append(f" ({key} takes it out of the queue)", style="dim")
            return text
        done, total = job.bytes_done, job.bytes_total
        text.append(f"  {fmt.size(done)} of {fmt.size(total)}")
        if not job.finished:
            text.append(f"  {fmt.rate(job.rate_bps)}")
            text.append(f"  ETA {fmt.eta(total - done, job.rate_bps)}")
        if job.snapshot_kind:
            text.append(f"  snapshot {job.snapshot_kind.value}", style="dim")
        if job.backup_type is BackupType.INCREMENTAL:
            text.append(f"\nincremental on {job.parent_backup_id or '?'}", style="green")
        for disk in (d for d in job.disks if d.fallback_reason):
            line = f"\ndisk {disk.disk_key} copied whole: {disk.fallback_reason}"
            text.append(line, style="yellow")
        if job.error_message:
            text.append(f"\n{job.error_message}", style="bold red")
        return text

    def side_pane(self) -> Widget:
        return Log(id="job-log", max_lines=LOG_LINES)

    def slow_redraw(self, job: Job) -> None:
        super().slow_redraw(job)
        self._load_log(job.backup_id)

    def _load_log(self, backup_id: str) -> None:
        """One log request at a time; the next frame asks again if the job moved on."""
        if self._log_loading:
            self._slow_for = None  # not shown yet: the next frame tries again
            return
        self._log_loading = True

        def show(lines: list[str]) -> None:
            tail = lines[-LOG_LINES:]
            if (backup_id, tail) != (self._log_for, self._log_lines):
                log = self.query_one(Log)
                log.clear()
                log.write_lines(tail)
            self._log_for, self._log_lines = backup_id, tail

        async def fetch() -> list[str]:
            try:
                return await self.state.client.job_log(backup_id, LOG_LINES)
            finally:
                self._log_loading = False

        self.call_hub(fetch(), show, name="log")

    def cancel_question(self, job: Job) -> str:
        if job.status is JobStatus.QUEUED:
            return f"Take the backup of {job.vm_name} ({job.backup_id}) out of the queue?"
        return f"Cancel the backup of {job.vm_name} ({job.backup_id})?"

    def cancel(self, job: Job) -> Awaitable[Job]:
        return self.state.client.cancel_backup(job.backup_id)

    def reload(self) -> None:
        self.call_hub(self.state.client.jobs(), self.state.store.load)


def job_state(job: Job) -> Text:
    """A job's state; a queued one with its place in the queue."""
    if job.status is JobStatus.QUEUED and job.queue_position:
        return Text(f"queued #{job.queue_position}", style="cyan")
    return state_text(job.status)
