"""The files of one disk of a restore point, as the hub reads them without mounting
anything: first the disk's partitions, then its folders; entries are marked and
extracted to a folder on this machine (``ExtractModal``).

The hub answers one folder at a time, so a folder is one request; an answer for a
folder left meanwhile (keys typed ahead) is dropped. Marks belong to one file system:
they stay while the operator moves between its folders, so files from several folders
come out in one extraction.
"""

from __future__ import annotations

import stat
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Footer, Input, Static

from engine.contract.files import FileEntry, FileKind, FolderListing, Partition
from engine.contract.restore import RestorePoint
from engine.extract import ExtractResult
from sendense_tui import fmt
from sendense_tui.keymap import bindings
from sendense_tui.screens.base import SendenseScreen
from sendense_tui.screens.extract_modal import ExtractModal
from sendense_tui.state import ConsoleState
from sendense_tui.widgets.filter_box import FilterInput
from sendense_tui.widgets.header import HubHeader
from sendense_tui.widgets.tables import refill

PARTITION_COLUMNS: dict[str, int | None] = {
    "#": 3,
    "size": 10,
    "scheme": 6,
    "type": None,
    "file system": None,
    "label": None,
}
FOLDER_COLUMNS: dict[str, int | None] = {
    " ": 1,
    "kind": 5,
    "mode": 10,
    "size": 10,
    "modified": 16,
    "name": None,
}
KIND_SHORT = {
    FileKind.FILE: "file",
    FileKind.DIRECTORY: "dir",
    FileKind.SYMLINK: "link",
    FileKind.OTHER: "other",
}
KIND_BITS = {
    FileKind.FILE: stat.S_IFREG,
    FileKind.DIRECTORY: stat.S_IFDIR,
    FileKind.SYMLINK: stat.S_IFLNK,
    FileKind.OTHER: 0,
}
FOLDER_ACTIONS = {"up", "filter", "mark", "extract"}  # the keys a partitions list has not
MARK = Text("●", style="bold yellow")


def parent_of(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] or "/"


def modified(at: datetime | None) -> str:
    """A file's time with its year: files are years old where jobs are hours."""
    return at.strftime("%Y-%m-%d %H:%M") if at else ""


def name_text(entry: FileEntry) -> Text:
    text = Text(entry.name, style="bold" if entry.kind is FileKind.DIRECTORY else "")
    if entry.kind is FileKind.DIRECTORY:
        text.append("/")
    if entry.symlink_target is not None:
        text.append(f" → {entry.symlink_target}", style="cyan")
    return text


def file_system_text(partition: Partition) -> Text:
    if partition.filesystem:
        return Text(partition.filesystem)
    return Text(f"{partition.found or 'unknown data'} (not read)", style="dim")


def marked_size(entries: list[FileEntry]) -> str:
    """What the marks add up to; a folder's size is only known once it is read."""
    words = fmt.size(sum(e.size_bytes for e in entries if e.kind is FileKind.FILE))
    folders = sum(1 for e in entries if e.kind is FileKind.DIRECTORY)
    return f"{words} + {folders} folder(s)" if folders else words


class FilesScreen(SendenseScreen):
    BINDINGS = bindings(
        "files.open",
        "files.up",
        "files.filter",
        "files.mark",
        "files.extract",
        "files.refresh",
        "files.back",
    )

    def __init__(self, state: ConsoleState, point: RestorePoint, disk_key: int) -> None:
        super().__init__(state)
        self.point = point
        self.disk_key = disk_key
        self.partitions: list[Partition] = []
        self.partition: Partition | None = None  # None: the partitions are shown
        self.path = "/"
        self.entries: list[FileEntry] = []
        self.marks: dict[str, FileEntry] = {}  # by path, in the order marked
        self._asked: tuple[int | None, str] = (None, "/")  # the folder last asked for
        self.table: DataTable[Any] = DataTable(
            id="files-table", cursor_type="row", zebra_stripes=True
        )

    def compose(self) -> ComposeResult:
        yield HubHeader(self.state)
        yield Static(id="files-title")
        yield FilterInput(self.table, "/ filters this folder by name", id="files-filter")
        yield self.table
        yield Static(id="files-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#files-filter", Input).display = False
        self.table.focus()
        self._show_title()
        self._load_partitions()

    # -- what is shown ------------------------------------------------------------------

    def _load_partitions(self) -> None:
        request = self.state.client.partitions(self.point.point_id, self.disk_key)
        self.call_hub(request, self._partitions_arrived, name="files")

    def _partitions_arrived(self, partitions: list[Partition]) -> None:
        first = not self.partitions
        self.partitions = partitions
        readable = [p for p in partitions if p.filesystem]
        if first and len(readable) == 1:
            self._open_partition(readable[0])  # one file system: nothing to choose
        else:
            self._show_partitions()

    def _show_partitions(self, cursor_to: int | None = None) -> None:
        self.partition, self.entries, self.path = None, [], "/"
        self._asked = (None, "/")
        self._clear_filter()
        rows = [
            (
                str(p.number),
                fmt.size(p.size_bytes),
                p.scheme or "none",
                p.type or "",
                file_system_text(p),
                p.label or p.name or "",
            )
            for p in self.partitions
        ]
        numbers = [p.number for p in self.partitions]
        row = numbers.index(cursor_to) if cursor_to in numbers else 0
        refill(self.table, PARTITION_COLUMNS, rows, [str(n) for n in numbers], row)
        self._shown_mode()
        self._show_status()

    def _open_partition(self, partition: Partition) -> None:
        if partition.filesystem is None:
            what = partition.found or "unknown data"
            self.notify(
                f"Partition {partition.number} holds {what}: no file system Sendense reads.",
                severity="warning",
            )
            return
        if self.partition is None or self.partition.number != partition.number:
            self.marks.clear()  # marks are paths of one file system
        self.partition = partition
        self._load("/")

    def _load(self, path: str, cursor_to: str | None = None) -> None:
        assert self.partition is not None
        number = self.partition.number
        self._asked = (number, path)

        def arrived(listing: FolderListing) -> None:
            if self._asked == (number, path):
                self._show_folder(listing, cursor_to)

        request = self.state.client.list_folder(self.point.point_id, self.disk_key, path, number)
        self.call_hub(request, arrived, name="files")

    def _show_folder(self, listing: FolderListing, cursor_to: str | None) -> None:
        moved = listing.path != self.path or not self.entries
        self.path, self.entries = listing.path, listing.entries
        if moved:
            self._clear_filter()
        self._fill(cursor_to if moved else self._cursor_key())
        self._shown_mode()

    def _shown(self) -> list[FileEntry]:
        text = self.query_one("#files-filter", Input).value.strip().lower()
        return [e for e in self.entries if text in e.name.lower()] if text else self.entries

    def _fill(self, cursor_to: str | None = None) -> None:
        shown = self._shown()
        rows = [self._row(e) for e in shown]
        keys = [e.path for e in shown]
        row = keys.index(cursor_to) if cursor_to in keys else 0
        refill(self.table, FOLDER_COLUMNS, rows, keys, row)
        self._show_status()

    def _row(self, entry: FileEntry) -> tuple[Any, ...]:
        return (
            MARK if entry.path in self.marks else "",
            KIND_SHORT[entry.kind],
            stat.filemode(KIND_BITS[entry.kind] | entry.mode),
            fmt.size(entry.size_bytes) if entry.kind is FileKind.FILE else "",
            modified(entry.mtime),
            name_text(entry),
        )

    def _shown_mode(self) -> None:
        """Partitions or a folder: the filter box and the folder's keys only in a folder."""
        self.query_one("#files-filter", Input).display = self.partition is not None
        self._show_title()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in FOLDER_ACTIONS:
            return self.partition is not None
        return True

    def _show_title(self) -> None:
        text = Text()
        text.append(f"{self.point.vm_name} ", style="bold")
        text.append(f"{self.point.point_id} · disk {self.disk_key}")
        part = self.partition
        if part is None:
            text.append("\npartitions", style="bold")
            text.append(" · enter opens a file system", style="dim")
        else:
            text.append(f"\npartition {part.number} {part.filesystem}")
            if part.label:
                text.append(f" {part.label!r}")
            text.append(f"  {self.path}", style="bold")
        self.query_one("#files-title", Static).update(text)

    def _show_status(self) -> None:
        if self.partition is None:
            parts = [f"{len(self.partitions)} partition(s)", "enter opens one"]
        else:
            shown = len(self._shown())
            parts = [f"{len(self.entries)} entries"]
            text = self.query_one("#files-filter", Input).value.strip()
            if text:
                parts.append(f"{shown} shown · filter: {text}")
            if self.marks:
                marked = list(self.marks.values())
                parts.append(f"{len(marked)} marked, {marked_size(marked)} · e extracts them")
            else:
                parts.append("space marks · e extracts")
        self.query_one("#files-status", Static).update(" · ".join(parts))

    def _clear_filter(self) -> None:
        box = self.query_one("#files-filter", Input)
        if box.value:
            with box.prevent(Input.Changed):
                box.value = ""

    def _cursor_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return str(key) if key is not None else None

    def current(self) -> FileEntry | None:
        key = self._cursor_key()
        return next((e for e in self.entries if e.path == key), None)

    # -- keys ---------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "files-filter" and self.partition is not None:
            self._fill(self._cursor_key())

    def action_open(self) -> None:
        if self.partition is None:
            key = self._cursor_key()
            partition = next((p for p in self.partitions if str(p.number) == key), None)
            if partition is not None:
                self._open_partition(partition)
            return
        entry = self.current()
        if entry is None:
            return
        if entry.kind is FileKind.DIRECTORY:
            self._load(entry.path)
        elif entry.kind is FileKind.SYMLINK:
            self.notify(f"{entry.name} points to {entry.symlink_target}; e extracts the link.")

    def action_up(self) -> None:
        if self.partition is None:
            return
        if self.path != "/":
            self._load(parent_of(self.path), cursor_to=self.path)
        elif len(self.partitions) > 1:
            self._show_partitions(cursor_to=self.partition.number)

    def action_filter(self) -> None:
        if self.partition is not None:
            self.app.set_focus(self.query_one("#files-filter", Input))

    def action_mark(self) -> None:
        entry = self.current()
        if entry is None:
            return
        if self.marks.pop(entry.path, None) is None:
            self.marks[entry.path] = entry
        self.table.update_cell_at(
            Coordinate(self.table.cursor_row, 0), MARK if entry.path in self.marks else ""
        )
        self.table.action_cursor_down()
        self._show_status()

    def action_extract(self) -> None:
        if self.partition is None:
            return
        entry = self.current()
        chosen = list(self.marks.values()) or ([entry] if entry else [])
        if not chosen:
            return

        def closed(result: ExtractResult | None) -> None:
            if result is not None and self.marks:
                self.marks.clear()
                self._fill(self._cursor_key())

        modal = ExtractModal(self.state, self.point, self.disk_key, self.partition, chosen)
        self.app.push_screen(modal, closed)

    def action_refresh(self) -> None:
        if self.partition is None:
            self._load_partitions()
        else:
            self._load(self.path, cursor_to=self._cursor_key())

    def action_back(self) -> None:
        """First the filter goes, then the screen: back to the point."""
        box = self.query_one("#files-filter", Input)
        if box.value or box.has_focus:
            box.value = ""
            self.app.set_focus(self.table)
        else:
            self.app.pop_screen()
