"""Restores: running restore jobs first, then history; the selected one's disks live
(from the event stream's ``restore`` events), its throughput, where each disk is read
from and written to, and why it failed. The shape is the jobs screen's
(``live_jobs.LiveJobsScreen``)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from engine.contract.restore import RestoreJob
from engine.contract.status import RestoreKind
from sendense_tui import fmt
from sendense_tui.keymap import bindings
from sendense_tui.screens.live_jobs import LiveJobsScreen
from sendense_tui.widgets.live_table import state_text

RESTORE_COLUMNS = {
    "state": 9,
    "kind": 4,
    "VM": 12,
    "target": 24,
    "progress": 15,
    "rate": 11,
    "restore id": 26,
}
KIND_WORDS = {RestoreKind.DISK: "disk to a file", RestoreKind.VM: "whole VM to vCenter"}


class RestoresScreen(LiveJobsScreen[RestoreJob]):
    BINDINGS = bindings("restores.cancel", "restores.refresh", "nav.back")
    LIST_ID = "restores-table"
    COLUMNS = RESTORE_COLUMNS
    EMPTY = "No restore yet: open a restore point (6, then enter) and pick a way back."

    def jobs(self) -> list[RestoreJob]:
        return self.state.store.ordered_restores()

    def job(self, job_id: str) -> RestoreJob | None:
        return self.state.store.restores.get(job_id)

    def job_id(self, job: RestoreJob) -> str:
        return job.restore_id

    def pending(self) -> str | None:
        restore_id, self.state.pending_restore = self.state.pending_restore, None
        return restore_id

    def row(self, job: RestoreJob) -> list[Any]:
        return [
            state_text(job.status),
            job.kind.value,
            job.vm_name,
            job.target,
            fmt.bar(job.bytes_done, job.bytes_total, 10),
            "" if job.finished else fmt.rate(job.rate_bps),
            job.restore_id,
        ]

    def headline(self, job: RestoreJob) -> Text:
        text = Text()
        text.append(f"{job.vm_name} → {job.target} ", style="bold")
        text.append_text(state_text(job.status))
        done, total = job.bytes_done, job.bytes_total
        text.append(f"  {fmt.size(done)} of {fmt.size(total)}")
        if not job.finished:
            text.append(f"  {fmt.rate(job.rate_bps)}")
            text.append(f"  ETA {fmt.eta(total - done, job.rate_bps)}")
        kind = KIND_WORDS[job.kind]
        if job.format:
            kind += f" ({job.format.value})"
        started = fmt.moment(job.started_at or job.created_at)
        text.append(f"\n{kind} · {job.restore_id} · started {started}", style="dim")
        if job.error_message:
            text.append(f"\n{job.error_message}", style="bold red")
        return text

    def side_pane(self) -> Widget:
        return Static(id="restore-info")

    def slow_redraw(self, job: RestoreJob) -> None:
        super().slow_redraw(job)
        self.query_one("#restore-info", Static).update(self._info(job))

    @staticmethod
    def _info(job: RestoreJob) -> Text:
        """Where each disk comes from and goes to, and what went wrong with it."""
        text = Text()
        text.append("from point ", style="dim")
        text.append(f"{job.point_id}\n")
        if job.kind is RestoreKind.VM:
            text.append("new VM ", style="dim")
            text.append(f"{job.vm_path or job.target}")
            text.append("  powered on after" if job.power_on else "", style="dim")
            text.append("\n")
        for disk in job.disks:
            text.append(f"disk {disk.disk_key}\n", style="bold")
            text.append(f"  {disk.source_path}\n")
            if disk.target:
                text.append("  → ", style="dim")
                text.append(f"{disk.target}\n")
            if disk.export_name and not job.finished:
                text.append(f"  read through export {disk.export_name}\n", style="dim")
            if disk.error_message:
                text.append(f"  {disk.error_message}\n", style="bold red")
        return text

    def cancel_question(self, job: RestoreJob) -> str:
        return f"Cancel the restore of {job.vm_name} to {job.target} ({job.restore_id})?"

    def cancel(self, job: RestoreJob) -> Awaitable[RestoreJob]:
        return self.state.client.cancel_restore(job.restore_id)

    def reload(self) -> None:
        self.call_hub(self.state.client.restores(), self.state.store.load_restores)
