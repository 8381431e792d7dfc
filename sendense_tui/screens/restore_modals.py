"""The ways back from a restore point, each a form that makes one hub request
(``form.FormModal``): what the hub refuses (a target that exists, too little space, a
VM name taken) stays in the modal as one line. Overwriting the original VM is never a
default: it takes a tick and the VM's name typed again.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import Checkbox, Input, Label, RadioButton, RadioSet, Static

from engine.contract.restore import (
    TTL_DEFAULT_SECONDS,
    DiskRestoreRequest,
    ExportRequest,
    RestoreExport,
    RestoreJob,
    RestorePoint,
    VMRestoreRequest,
)
from engine.contract.status import DiskFormat
from engine.errors import BadInput
from sendense_tui import fmt
from sendense_tui.keymap import bindings
from sendense_tui.screens.form import FormModal, heading, row
from sendense_tui.state import ConsoleState

T = TypeVar("T")
TTLS = {3600: "1 hour", 4 * 3600: "4 hours", 24 * 3600: "1 day", 7 * 24 * 3600: "7 days"}


def disk_choice(point: RestorePoint, chosen: int | None) -> RadioSet:
    return RadioSet(
        *(
            RadioButton(
                f"{d.disk_key}  {fmt.size(d.capacity_bytes)}",
                value=d.disk_key == chosen or (chosen is None and i == 0),
                compact=True,
            )
            for i, d in enumerate(point.disks)
        ),
        id="form-disk",
        compact=True,
    )


class RequestModal(FormModal[T]):
    """A form on one restore point; enter sends it."""

    BINDINGS = bindings("modal.confirm")

    def __init__(self, state: ConsoleState, point: RestorePoint) -> None:
        super().__init__(state)
        self.point = point

    def disk_key(self) -> int:
        index = self.query_one("#form-disk", RadioSet).pressed_index
        return self.point.disks[max(index, 0)].disk_key


class ExportModal(RequestModal[RestoreExport]):
    """A disk served read-only over NBD as of this point; its URI is shown here (and
    put on the clipboard where the terminal allows) before the modal closes."""

    ACTION = "exports it"

    def __init__(self, state: ConsoleState, point: RestorePoint, disk_key: int | None) -> None:
        super().__init__(state, point)
        self.chosen = disk_key
        self.export: RestoreExport | None = None

    def form(self) -> ComposeResult:
        yield from heading(
            f"Instant access to a disk of {self.point.vm_name}",
            f"point {self.point.point_id}, read-only, through its chain",
        )
        yield row("disk", disk_choice(self.point, self.chosen))
        yield row(
            "ends after",
            RadioSet(
                *(
                    RadioButton(words, value=ttl == TTL_DEFAULT_SECONDS, compact=True)
                    for ttl, words in TTLS.items()
                ),
                id="form-ttl",
                compact=True,
            ),
            gap=True,
        )
        yield Static(id="export-uri")

    def on_mount(self) -> None:
        self.query_one("#form-disk", RadioSet).focus()

    def action_confirm(self) -> None:
        if self.export is not None:  # exported: enter closes, as esc does
            self.dismiss(self.export)
        else:
            super().action_confirm()

    def request(self) -> Awaitable[RestoreExport]:
        index = self.query_one("#form-ttl", RadioSet).pressed_index
        ttl = list(TTLS)[index] if index >= 0 else TTL_DEFAULT_SECONDS
        request = ExportRequest(disk_key=self.disk_key(), ttl_seconds=ttl)
        return self.state.client.export_point(self.point.point_id, request)

    def done(self, answer: RestoreExport) -> None:
        self.export = answer
        self.app.copy_to_clipboard(answer.uri)
        shown = Text()
        shown.append(answer.uri, style="bold green")
        shown.append(
            f"\ndisk {answer.disk_key}, ends {answer.expires_at:%m-%d %H:%M}; "
            "any NBD client reads it (qemu-img, nbdcopy, nbdfuse)",
            style="dim",
        )
        self.query_one("#export-uri", Static).update(shown)
        self.error("")
        hint = "enter or esc closes · the URI is on the clipboard where the terminal allows"
        self.query_one("#form-hint", Static).update(Text(hint, style="dim"))

    def action_dismiss_modal(self) -> None:
        self.dismiss(self.export)


class DiskRestoreModal(RequestModal[RestoreJob]):
    """One disk into a standalone image on the hub's machine (no backing chain)."""

    def __init__(self, state: ConsoleState, point: RestorePoint, disk_key: int | None) -> None:
        super().__init__(state, point)
        self.chosen = disk_key

    def form(self) -> ComposeResult:
        point = self.point
        yield from heading(
            f"Restore a disk of {point.vm_name} to a file",
            f"point {point.point_id}; the file is written on the hub's machine",
        )
        yield row("disk", disk_choice(point, self.chosen))
        path = f"/path/on/the/hub/{point.vm_name}.img"
        yield row("path", Input(placeholder=path, id="form-path", compact=True), gap=True)
        yield row(
            "format",
            RadioSet(
                *(
                    RadioButton(f.value, value=f is DiskFormat.RAW, compact=True)
                    for f in DiskFormat
                ),
                id="form-format",
                compact=True,
            ),
        )
        yield row("", Label(Text("vmdk is streamOptimized: vSphere imports it", style="dim")))
        checkbox = Checkbox("replace a file already there", id="form-force", compact=True)
        yield row("", checkbox, gap=True)

    def on_mount(self) -> None:
        self.query_one("#form-path", Input).focus()

    def request(self) -> Awaitable[RestoreJob]:
        path = self.value("form-path")
        if not path:
            raise BadInput("enter the path of the file to write, on the hub's machine")
        index = self.query_one("#form-format", RadioSet).pressed_index
        request = DiskRestoreRequest(
            point_id=self.point.point_id,
            disk_key=self.disk_key(),
            path=path,
            format=list(DiskFormat)[max(index, 0)],
            force=self.query_one("#form-force", Checkbox).value,
        )
        return self.state.client.restore_disk(request)


class VMRestoreModal(RequestModal[RestoreJob]):
    """The point's VM recreated in vCenter with its recorded configuration; placement
    left blank is where the VM lived."""

    _named = ""  # the name box's text before an overwrite locked it

    def form(self) -> ComposeResult:
        point, original = self.point, self.point.vm_name
        yield from heading(
            f"Restore {original} to vCenter",
            f"point {point.point_id}, {len(point.disks)} disk(s); blank places it where it was",
        )
        if not point.has_config:
            yield Label(
                Text(
                    "this point has no recorded configuration: the hub cannot recreate its VM",
                    style="yellow",
                )
            )
        folder = point.vm_path.rsplit("/", 1)[0] if point.vm_path else "where it lived"
        yield row("name", Input(f"{original}-restored", id="form-name", compact=True))
        yield row("folder", Input(placeholder=folder, id="form-folder", compact=True))
        yield row("datastore", Input(placeholder="as it was", id="form-datastore", compact=True))
        yield row("pool", Input(placeholder="as it was", id="form-pool", compact=True))
        power = Checkbox("power it on once restored", id="form-power", compact=True)
        yield row("", power, gap=True)
        yield row(
            "",
            Checkbox(
                f"overwrite the original VM {original} (it is replaced)",
                id="form-overwrite",
                compact=True,
            ),
        )
        yield row(
            "confirm",
            Input(
                placeholder=f"type {original} to allow the overwrite",
                id="form-overwrite-name",
                compact=True,
            ),
        )

    def on_mount(self) -> None:
        self._named = self.value("form-name")
        self._show_overwrite(False)
        self.query_one("#form-name", Input).focus()

    @on(Checkbox.Changed, "#form-overwrite")
    def overwrite_changed(self, event: Checkbox.Changed) -> None:
        self._show_overwrite(event.value)

    def _show_overwrite(self, on: bool) -> None:
        """An overwrite keeps the original's name: the name box shows it, locked; the box
        for the name typed again appears."""
        name = self.query_one("#form-name", Input)
        if on:
            self._named = name.value
        name.value, name.disabled = (self.point.vm_name, True) if on else (self._named, False)
        box = self.query_one("#form-overwrite-name", Input)
        box.value = ""
        assert box.parent is not None
        box.parent.display = on
        self._say_overwrite()

    @on(Input.Changed, "#form-overwrite-name")
    def _say_overwrite(self) -> None:
        original = self.point.vm_name
        if not self.query_one("#form-overwrite", Checkbox).value:
            self.error("")
        elif self.value("form-overwrite-name") == original:
            words = f"enter overwrites {original}: it is replaced once the restore is whole"
            self.error(words, "bold yellow")
        else:
            self.error(f"type {original} to allow the overwrite: it will be replaced", "yellow")

    def request(self) -> Awaitable[RestoreJob]:
        overwrite = None
        if self.query_one("#form-overwrite", Checkbox).value:
            overwrite = self.value("form-overwrite-name")
            if overwrite != self.point.vm_name:
                raise BadInput(f"type the VM's name, {self.point.vm_name}, exactly to overwrite it")
        request = VMRestoreRequest(
            point_id=self.point.point_id,
            name=None if overwrite else self.value("form-name") or None,
            folder=self.value("form-folder") or None,
            datastore=self.value("form-datastore") or None,
            pool=self.value("form-pool") or None,
            power_on=self.query_one("#form-power", Checkbox).value,
            overwrite=overwrite,
        )
        return self.state.client.restore_vm(request)
