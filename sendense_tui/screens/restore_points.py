"""Restore points: every completed backup the hub can give back, newest first, of
every VM or of one (opened from a VM's "last backups"); enter opens one.

A point's chain reads as its length and, for an incremental, when its parent was
taken; its verification state is coloured so a damaged point stands out in a long list.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Input, Static

from engine.contract.restore import RestorePoint
from engine.contract.status import BackupType, JobStatus
from sendense_tui import fmt
from sendense_tui.keymap import bindings
from sendense_tui.screens.base import SendenseScreen
from sendense_tui.screens.restore_point import RestorePointScreen, verification_text
from sendense_tui.state import ConsoleState
from sendense_tui.widgets.filter_box import FilterInput
from sendense_tui.widgets.header import HubHeader

COLUMNS = {
    "VM": 14,
    "completed": 14,
    "type": 4,
    "size": 10,
    "chain": 15,
    "state": 10,
    "NBD": 3,
    "point id": 26,
}
TYPE_SHORT = {BackupType.FULL: "full", BackupType.INCREMENTAL: "incr"}


def vm_of(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


class RestorePointsScreen(SendenseScreen):
    BINDINGS = bindings("points.filter", "points.open", "points.refresh", "points.all")

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(state)
        self.points: list[RestorePoint] = []
        self.table: DataTable[Any] = DataTable(
            id="points-table", cursor_type="row", zebra_stripes=True
        )
        self._completed = self._completed_backups()

    def compose(self) -> ComposeResult:
        yield HubHeader(self.state)
        yield FilterInput(self.table, "/ filters points by VM name or id", id="points-filter")
        yield self.table
        yield Static(id="points-status")
        yield Footer()

    def on_mount(self) -> None:
        for column, width in COLUMNS.items():
            self.table.add_column(column, key=column, width=width)
        self.table.focus()
        self.reload()

    def on_screen_resume(self) -> None:
        self.reload()

    def reload(self) -> None:
        """The hub's points for the scope now in the state; an answer for a scope left
        meanwhile is dropped."""
        vm = self.state.points_vm

        def arrived(points: list[RestorePoint]) -> None:
            if vm == self.state.points_vm:
                self.show(points)

        self.call_hub(self.state.client.restore_points(vm), arrived, name="points")

    def redraw_live(self) -> None:
        """A backup that completed is a new point: ask the hub again."""
        completed = self._completed_backups()
        if completed != self._completed:
            self._completed = completed
            self.reload()

    def _completed_backups(self) -> int:
        jobs = self.state.store.jobs.values()
        return sum(1 for job in jobs if job.status is JobStatus.COMPLETED)

    # -- the list -----------------------------------------------------------------------

    def show(self, points: list[RestorePoint]) -> None:
        self.points = points
        self._fill()

    def _shown(self) -> list[RestorePoint]:
        text = self.query_one("#points-filter", Input).value.strip().lower()
        if not text:
            return self.points
        return [p for p in self.points if text in p.vm_name.lower() or text in p.point_id]

    def _fill(self) -> None:
        current = self.current()
        table = self.table
        table.clear()
        shown = self._shown()
        completed = {p.point_id: p.completed_at for p in self.points}
        for point in shown:
            table.add_row(*self._row(point, completed), key=point.point_id)
        keys = [p.point_id for p in shown]
        if current is not None and current.point_id in keys:
            table.move_cursor(row=keys.index(current.point_id))
        self._show_status(len(shown))

    @staticmethod
    def _row(point: RestorePoint, completed: dict[str, Any]) -> list[Any]:
        chain = str(len(point.chain) or 1)
        if point.parent_point_id:
            parent_at = completed.get(point.parent_point_id)
            parent = parent_at.strftime("%m-%d %H:%M") if parent_at else point.parent_point_id
            chain = f"{chain} ← {parent}"
        return [
            point.vm_name,
            fmt.moment(point.completed_at),
            TYPE_SHORT[point.backup_type],
            fmt.size(point.size_bytes),
            chain,
            verification_text(point),
            str(len(point.exports)) if point.exports else "",
            point.point_id,
        ]

    def _show_status(self, shown: int) -> None:
        vm = self.state.points_vm
        whose = f"{vm_of(vm)}'s points (esc: every VM)" if vm else "every VM's points"
        parts = [whose, f"{shown} shown" if shown else "none"]
        text = self.query_one("#points-filter", Input).value.strip()
        if text:
            parts.append(f"filter: {text}")
        if not self.points:
            parts.append("back a VM up first (1, then b)")
        else:
            parts.append("enter opens one")
        self.query_one("#points-status", Static).update(" · ".join(parts))

    def current(self) -> RestorePoint | None:
        table = self.table
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((p for p in self.points if p.point_id == key), None)

    # -- keys ---------------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "points-filter":
            self._fill()

    def action_filter(self) -> None:
        self.app.set_focus(self.query_one("#points-filter", Input))

    def action_back(self) -> None:
        """First the filter goes, then the one VM: every VM's points."""
        box = self.query_one("#points-filter", Input)
        if box.value or box.has_focus:
            box.value = ""
            self.app.set_focus(self.table)
        elif self.state.points_vm is not None:
            self.state.points_vm = None
            self.reload()

    def action_open_point(self) -> None:
        point = self.current()
        if point is not None:
            self.app.push_screen(RestorePointScreen(self.state, point))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_point()

    def action_refresh(self) -> None:
        self.reload()
