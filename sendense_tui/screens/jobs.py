"""Jobs: running first, then history; the selected job's disks, throughput and log.

Rows are keyed (job id, disk key) and updated cell by cell on the app's frame timer,
never per event, so a job streaming thousands of events costs a few redraws a second.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Log, Static

from engine.contract.hub import Job, JobDisk
from engine.contract.status import DiskStatus, JobStatus
from sendense_tui import fmt
from sendense_tui.keymap import bindings
from sendense_tui.live import disk_running
from sendense_tui.screens.base import SendenseScreen
from sendense_tui.screens.modals import ConfirmModal
from sendense_tui.state import ConsoleState
from sendense_tui.widgets.header import HubHeader
from sendense_tui.widgets.throughput import ThroughputChart

# Fixed widths for the columns that change live: cells updated in place never resize.
JOB_COLUMNS = {
    "state": 9,
    "VM": 14,
    "type": 4,
    "progress": 15,
    "rate": 11,
    "size": 10,
    "started": 14,
    "backup id": 26,
}
DISK_COLUMNS = {
    "disk": 5,
    "size": 10,
    "progress": 17,
    "now": 12,
    "last minute": 20,
    "ETA": 7,
    "zero": 10,
    "state": 9,
}
STATE_STYLE = {"completed": "green", "failed": "bold red", "cancelled": "yellow"}
LOG_LINES = 50


def _state(status: JobStatus | DiskStatus) -> Text:
    return Text(status.value, style=STATE_STYLE.get(status.value, "cyan"))


def _moment(job: Job) -> str:
    moment = job.started_at or job.created_at
    return moment.strftime("%m-%d %H:%M:%S") if moment else ""


class JobsScreen(SendenseScreen):
    BINDINGS = bindings("jobs.cancel", "jobs.refresh", "nav.back")

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(state)
        self.selected: str | None = None
        self._order: list[str] = []
        self._disk_keys: list[int] = []
        self._log_for: str | None = None
        self._ready = False
        self._log_loading = False
        self._log_lines: list[str] = []
        # What each live cell shows now: a cell is redrawn only when its text changes.
        self._shown: dict[tuple[str | None, str, str], object] = {}
        self._slow_drawn_at = 0.0  # the frame timer may fire between switching here and on_mount

    def compose(self) -> ComposeResult:
        yield HubHeader(self.state)
        with Vertical(id="jobs-body"):
            yield DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="job-title")
            yield DataTable(id="disks-table", cursor_type="none", show_cursor=False)
            with Horizontal(id="job-lower"):
                yield ThroughputChart(id="job-chart")
                yield Log(id="job-log", max_lines=LOG_LINES)
        yield Footer()

    def on_mount(self) -> None:
        jobs = self.query_one("#jobs-table", DataTable)
        for column, width in JOB_COLUMNS.items():
            jobs.add_column(column, key=column, width=width)
        disks = self.query_one("#disks-table", DataTable)
        for column, width in DISK_COLUMNS.items():
            disks.add_column(column, key=column, width=width)
        jobs.focus()
        self._ready = True
        self.take_pending_job()

    def on_screen_resume(self) -> None:
        self.take_pending_job()

    def take_pending_job(self) -> None:
        backup_id, self.state.pending_job = self.state.pending_job, None
        if backup_id is not None:
            self.selected = backup_id
            self._disk_keys = []
        self.redraw_live()
        if self.selected in self._order:
            self.query_one("#jobs-table", DataTable).move_cursor(
                row=self._order.index(self.selected)
            )

    # -- the job list ----------------------------------------------------------------------

    def _job_cells(self, job: Job) -> dict[str, Any]:
        return {
            "state": _state(job.status),
            "VM": job.vm_name,
            "type": job.backup_type.value,
            "progress": fmt.bar(job.bytes_done, job.bytes_total, 10),
            "rate": "" if job.finished else fmt.rate(job.rate_bps),
            "size": fmt.size(job.bytes_total),
            "started": _moment(job),
            "backup id": job.backup_id,
        }

    def redraw_live(self) -> None:
        if not self._ready:
            return
        table = self.query_one("#jobs-table", DataTable)
        jobs = self.state.store.ordered()
        order = [j.backup_id for j in jobs]
        with self.app.batch_update():
            if order != self._order:
                current = self.selected
                table.clear()
                self._shown.clear()
                for job in jobs:
                    self._add_row(table, job.backup_id, list(self._job_cells(job).values()))
                self._order = order
                if current in order:
                    table.move_cursor(row=order.index(current))
            else:
                for job in jobs:
                    shown = self._shown.get(("jobs-table", job.backup_id, "state"))
                    # Running rows change; a finished one only once, when it finishes.
                    if not job.finished or shown != _state(job.status):
                        for column, value in self._job_cells(job).items():
                            self._set_cell(table, job.backup_id, column, value)
            if self.selected is None and order:
                self.selected = order[0]
            self._redraw_detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "jobs-table" or event.row_key.value is None:
            return
        if event.row_key.value != self.selected:
            self.selected = event.row_key.value
            self._disk_keys = []
            self._redraw_detail()

    def _add_row(self, table: DataTable[Any], row: str, cells: list[Any]) -> None:
        table.add_row(*cells, key=row)
        for column, value in zip(table.columns, cells, strict=True):
            self._shown[(table.id, row, str(column.value))] = value

    def _set_cell(self, table: DataTable[Any], row: str, column: str, value: object) -> None:
        key = (table.id, row, column)
        if self._shown.get(key) != value:
            self._shown[key] = value
            table.update_cell(row, column, value)

    # -- the selected job -------------------------------------------------------------------

    def _redraw_detail(self) -> None:
        job = self.state.store.jobs.get(self.selected or "")
        title = self.query_one("#job-title", Static)
        disks_table = self.query_one("#disks-table", DataTable)
        if job is None:
            title.update(
                Text("No job yet: back one up from the inventory (1, then b).", style="dim")
            )
            disks_table.clear()
            self._shown.clear()
            self._disk_keys = []
            return
        title.update(self._title(job))
        keys = [d.disk_key for d in job.disks]
        if keys != self._disk_keys:
            disks_table.clear()
            self._shown.clear()
            for disk in job.disks:
                self._add_row(disks_table, str(disk.disk_key), self._disk_cells(job, disk))
            self._disk_keys = keys
        else:
            for disk in job.disks:
                row = str(disk.disk_key)
                for column, value in zip(DISK_COLUMNS, self._disk_cells(job, disk), strict=True):
                    self._set_cell(disks_table, row, column, value)
        # The chart and the log tail change slowly: redraw them once a second at most.
        now = time.monotonic()
        if self._log_for != job.backup_id or (not job.finished and now - self._slow_drawn_at >= 1):
            self._slow_drawn_at = now
            self.query_one(ThroughputChart).show(
                self.state.store.job_history.get(job.backup_id, [])
            )
            self._load_log(job.backup_id)

    def _title(self, job: Job) -> Text:
        text = Text()
        text.append(f"{job.vm_name} ", style="bold")
        text.append(f"{job.backup_id}  ")
        text.append_text(_state(job.status))
        done, total = job.bytes_done, job.bytes_total
        text.append(f"  {fmt.size(done)} of {fmt.size(total)}")
        if not job.finished:
            text.append(f"  {fmt.rate(job.rate_bps)}")
            text.append(f"  ETA {fmt.eta(total - done, job.rate_bps)}")
        if job.snapshot_kind:
            text.append(f"  snapshot {job.snapshot_kind.value}", style="dim")
        if job.error_message:
            text.append(f"\n{job.error_message}", style="bold red")
        return text

    def _disk_cells(self, job: Job, disk: JobDisk) -> list[Any]:
        done, total = disk.bytes_done, disk.bytes_total
        running = disk_running(disk)
        history: Sequence[float] = self.state.store.disk_history.get(
            (job.backup_id, disk.disk_key), []
        )
        return [
            str(disk.disk_key),
            fmt.size(total),
            fmt.bar(done, total, 12),
            fmt.rate(disk.rate_bps) if running else "",
            Text(fmt.sparkline(list(history)), style="cyan"),
            fmt.eta(total - done, disk.rate_bps) if running else "",
            fmt.size(disk.bytes_zero),
            _state(disk.status),
        ]

    def _load_log(self, backup_id: str) -> None:
        """One log request at a time; the next frame asks again if the job moved on."""
        if self._log_loading:
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

    # -- actions ------------------------------------------------------------------------

    def action_cancel_job(self) -> None:
        job = self.state.store.jobs.get(self.selected or "")
        if job is None or job.finished:
            self.notify("Only a running job can be cancelled.", severity="warning")
            return

        def decided(yes: bool | None) -> None:
            if yes:
                store = self.state.store
                self.call_hub(self.state.client.cancel_backup(job.backup_id), store.apply)

        self.app.push_screen(
            ConfirmModal(f"Cancel the backup of {job.vm_name} ({job.backup_id})?"), decided
        )

    def action_refresh(self) -> None:
        self.call_hub(self.state.client.jobs(), self.state.store.load)

    def action_back(self) -> None:
        self.query_one("#jobs-table", DataTable).focus()
