"""The shape both job screens share: running first, then history; the selected job's
disks live, its throughput, and a pane of its own on the right; cancel asks first.

Backups (``JobsScreen``) and restores (``RestoresScreen``) are both ``ByteCounters``
with ``DiskCounters`` disks, kept current in the ``LiveStore`` from the event stream;
a subclass says only which jobs, how a row and a title read, and what its side pane is.
Everything is redrawn on the app's frame timer (``redraw_live``), never per event.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Static

from engine.contract.hub import Job
from engine.contract.restore import RestoreJob
from sendense_tui.screens.base import SendenseScreen
from sendense_tui.screens.modals import ConfirmModal
from sendense_tui.state import ConsoleState
from sendense_tui.widgets.header import HubHeader
from sendense_tui.widgets.live_table import DiskProgress, LiveTable, state_text
from sendense_tui.widgets.throughput import ThroughputChart

J = TypeVar("J", Job, RestoreJob)


class LiveJobsScreen(SendenseScreen, Generic[J]):
    LIST_ID: ClassVar[str]
    COLUMNS: ClassVar[Mapping[str, int]]
    EMPTY: ClassVar[str]  # the title with no job to show

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(state)
        self.selected: str | None = None
        self._ready = False
        self._slow_for: tuple[str, bool] | None = None  # (job id, finished) last drawn
        # The frame timer may fire between switching here and on_mount.
        self._slow_drawn_at = 0.0

    # -- what a subclass says ---------------------------------------------------------------

    def jobs(self) -> list[J]:
        raise NotImplementedError

    def job(self, job_id: str) -> J | None:
        raise NotImplementedError

    def job_id(self, job: J) -> str:
        raise NotImplementedError

    def pending(self) -> str | None:
        """The job someone asked to see before this screen was up (taken: then None)."""
        raise NotImplementedError

    def row(self, job: J) -> list[Any]:
        raise NotImplementedError

    def headline(self, job: J) -> Text:
        raise NotImplementedError

    def side_pane(self) -> Widget:
        raise NotImplementedError

    def slow_redraw(self, job: J) -> None:
        """What changes slowly (the chart, the side pane): once a second at most."""
        self.query_one(ThroughputChart).show(self.state.store.job_history.get(self.job_id(job), []))

    def cancel_question(self, job: J) -> str:
        raise NotImplementedError

    def cancel(self, job: J) -> Awaitable[J]:
        raise NotImplementedError

    def reload(self) -> None:
        raise NotImplementedError

    # -- the screen ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield HubHeader(self.state)
        with Vertical(id="jobs-body"):
            yield LiveTable(
                self.COLUMNS,
                id=self.LIST_ID,
                classes="job-list",
                cursor_type="row",
                zebra_stripes=True,
            )
            yield Static(id="job-title")
            yield DiskProgress(id="disks-table")
            with Horizontal(id="job-lower"):
                yield ThroughputChart(id="job-chart")
                yield self.side_pane()
        yield Footer()

    @property
    def list_table(self) -> LiveTable:
        return self.query_one(f"#{self.LIST_ID}", LiveTable)

    def on_mount(self) -> None:
        self.list_table.focus()
        self._ready = True
        self.take_pending()

    def on_screen_resume(self) -> None:
        self.take_pending()

    def take_pending(self) -> None:
        job_id = self.pending()
        if job_id is not None:
            self.selected = job_id
        self.redraw_live()
        table = self.list_table
        if self.selected in table.keys:
            table.move_cursor(row=table.keys.index(self.selected))

    def redraw_live(self) -> None:
        if not self._ready:
            return
        table = self.list_table
        jobs = self.jobs()
        keys = [self.job_id(j) for j in jobs]
        with self.app.batch_update():
            if keys != table.keys:
                table.rebuild(((self.job_id(j), self.row(j)) for j in jobs), self.selected)
            else:
                for job in jobs:
                    key = self.job_id(job)
                    # Running rows change; a finished one only once, when it finishes.
                    if not job.finished or table.shown(key, "state") != state_text(job.status):
                        table.update(key, self.row(job))
            if self.selected is None and keys:
                self.selected = keys[0]
            self._redraw_detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != self.LIST_ID or event.row_key.value is None:
            return
        if event.row_key.value != self.selected:
            self.selected = event.row_key.value
            self._redraw_detail()

    def _redraw_detail(self) -> None:
        job = self.job(self.selected or "")
        title = self.query_one("#job-title", Static)
        disks = self.query_one(DiskProgress)
        if job is None:
            title.update(Text(self.EMPTY, style="dim"))
            disks.rebuild([], None)
            return
        title.update(self.headline(job))
        history = self.state.store.disk_history
        job_id = self.job_id(job)
        rows = [
            (str(d.disk_key), DiskProgress.cells(d, history.get((job_id, d.disk_key)) or ()))
            for d in job.disks
        ]
        disks.show(rows, None)
        now = time.monotonic()
        # Drawn for another job, or before this one ended: now; while it runs: each second.
        drawn_for = (job_id, job.finished)
        if self._slow_for != drawn_for or (not job.finished and now - self._slow_drawn_at >= 1):
            self._slow_for, self._slow_drawn_at = drawn_for, now
            self.slow_redraw(job)

    # -- actions ------------------------------------------------------------------------

    def action_cancel_job(self) -> None:
        job = self.job(self.selected or "")
        if job is None or job.finished:
            self.notify("This job has ended: there is nothing to cancel.", severity="warning")
            return

        def decided(yes: bool | None) -> None:
            if yes:
                self.call_hub(self.cancel(job), self.state.store.apply)

        self.app.push_screen(ConfirmModal(self.cancel_question(job)), decided)

    def action_refresh(self) -> None:
        self.reload()

    def action_back(self) -> None:
        self.list_table.focus()
