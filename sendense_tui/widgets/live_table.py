"""Tables that change live: keyed rows, each cell redrawn only when its text changed.

A screen hands a table its rows on the app's frame timer, never per event; a table
rebuilt only when its keys change, and otherwise touched cell by cell, keeps a job
streaming thousands of events at a few cheap redraws a second. The job screens' disk
rows (a backup's or a restore's, both ``DiskCounters``) are one such table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from engine.contract.hub import DiskCounters
from engine.contract.status import BackupType, DiskStatus, JobStatus
from sendense_tui import fmt
from sendense_tui.live import disk_running

STATE_STYLE = {"completed": "green", "failed": "bold red", "cancelled": "yellow"}
# A finished disk: its bar is full even when there was nothing to copy.
FINISHED_DISK = frozenset({DiskStatus.COPIED, DiskStatus.COMPLETED})
# Fixed widths for the columns that change live: cells updated in place never resize.
DISK_COLUMNS = {
    "disk": 5,
    "copies": 28,
    "progress": 17,
    "now": 12,
    "last minute": 20,
    "ETA": 7,
    "zero": 10,
    "state": 9,
}


def state_text(status: JobStatus | DiskStatus) -> Text:
    return Text(status.value, style=STATE_STYLE.get(status.value, "cyan"))


class LiveTable(DataTable[Any]):
    def __init__(self, columns: Mapping[str, int | None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._columns = dict(columns)
        self._shown: dict[tuple[str, str], object] = {}
        self._keys: list[str] = []

    def on_mount(self) -> None:
        for column, width in self._columns.items():
            self.add_column(column, key=column, width=width)

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    def shown(self, row: str, column: str) -> object:
        return self._shown.get((row, column))

    def rebuild(self, rows: Iterable[tuple[str, Sequence[Any]]], cursor_to: str | None) -> None:
        """Every row anew; the cursor goes to ``cursor_to``'s row when there is one."""
        self.clear()
        self._shown.clear()
        self._keys = []
        for key, cells in rows:
            self.add_row(*cells, key=key)
            self._keys.append(key)
            for column, value in zip(self._columns, cells, strict=True):
                self._shown[(key, column)] = value
        if cursor_to in self._keys:
            self.move_cursor(row=self._keys.index(cursor_to))

    def update(self, row: str, cells: Sequence[Any]) -> None:
        for column, value in zip(self._columns, cells, strict=True):
            if self._shown.get((row, column)) != value:
                self._shown[(row, column)] = value
                self.update_cell(row, column, value)

    def show(self, rows: Sequence[tuple[str, Sequence[Any]]], cursor_to: str | None) -> None:
        """Rebuilt when the keys differ from those shown, else changed cells only."""
        if [key for key, _ in rows] != self._keys:
            self.rebuild(rows, cursor_to)
            return
        for key, cells in rows:
            self.update(key, cells)


class DiskProgress(LiveTable):
    """One row per disk of a running or finished job: what it copies (an incremental's
    changed bytes of the disk's), progress, rate, the last minute's rates as a sparkline,
    ETA, bytes skipped as zero, state."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(DISK_COLUMNS, cursor_type="none", show_cursor=False, **kwargs)

    @staticmethod
    def cells(disk: DiskCounters, history: Sequence[float]) -> list[Any]:
        done, total = disk.bytes_done, disk.bytes_total
        running = disk_running(disk)
        return [
            str(disk.disk_key),
            copies(disk),
            fmt.bar(done, total, 12, finished=disk.status in FINISHED_DISK),
            fmt.rate(disk.rate_bps) if running else "",
            Text(fmt.sparkline(list(history)), style="cyan"),
            fmt.eta(total - done, disk.rate_bps) if running else "",
            fmt.size(disk.bytes_zero),
            state_text(disk.status),
        ]


def copies(disk: DiskCounters) -> Text:
    """A full's size; an incremental's "changed N of M"; a full that was to be an
    incremental says so (its reason is on the job's title)."""
    if disk.mode is BackupType.INCREMENTAL:
        return Text(f"changed {fmt.size(disk.bytes_total)} of {fmt.size(disk.capacity_bytes)}")
    text = Text(fmt.size(disk.bytes_total))
    if disk.fallback_reason:
        text.append(" full: fallback", style="yellow")
    return text
