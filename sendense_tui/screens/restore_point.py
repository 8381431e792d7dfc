"""One restore point: what it is, its disks, its live instant exports, and the ways
back, each on a key (instant export, single files, a disk to a file, the whole VM,
verify, delete).

Single files come out on the file browser (``FilesScreen``); a verification runs in the
hub and is watched here, on its own line (``VerificationLine``). A restore started
here opens the restores screen on it (``OpenRestore``); exports and deletion are
answered at once, so they stay here. What the hub refuses is one line, in the modal
that asked, or as the app's error toast (``calls.call_hub``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Label, Static

from engine.contract.restore import MergeResult, RestoreExport, RestoreJob, RestorePoint
from engine.contract.status import Verification
from sendense_tui import fmt
from sendense_tui.keymap import bindings, keys_for
from sendense_tui.messages import OpenRestore
from sendense_tui.screens.base import SendenseScreen
from sendense_tui.screens.files import FilesScreen
from sendense_tui.screens.help import pretty
from sendense_tui.screens.modals import ConfirmModal
from sendense_tui.screens.restore_modals import DiskRestoreModal, ExportModal, VMRestoreModal
from sendense_tui.state import ConsoleState
from sendense_tui.widgets.header import HubHeader
from sendense_tui.widgets.tables import refill
from sendense_tui.widgets.verification import VerificationLine

DISK_COLUMNS = {"disk": 5, "capacity": 10, "qcow2 size": 10, "qcow2": None}
EXPORT_COLUMNS = {"disk": 5, "expires": 23, "nbd URI": None}
WAYS_BACK = {
    "point.export": "instant access: a disk served read-only over NBD, as of this point",
    "point.browse": "single files: the disk's partitions and folders, marked files out",
    "point.restore_disk": "a disk into a standalone file on the hub (raw, qcow2, vmdk)",
    "point.restore_vm": "the whole VM back to vCenter, as its configuration was recorded",
    "point.unexport": "end the instant export under the cursor",
    "point.verify": "verify: read the point back through its chain, every chunk compared",
    "point.merge": "merge this point into its child (the child reads as before)",
    "point.delete": "delete this point (asks first)",
    "screen.restores": "every restore job, running and past (a restore started here opens it)",
}
EXPIRY_TICK_SECONDS = 30.0  # "in 3h59m" moves on; the hub ends an export on its TTL
VERIFICATION_STYLE = {
    Verification.UNVERIFIED: "dim",
    Verification.VERIFIED: "green",
    Verification.DAMAGED: "bold red",
}


def verification_text(point: RestorePoint) -> Text:
    return Text(point.verification.value, style=VERIFICATION_STYLE[point.verification])


class RestorePointScreen(SendenseScreen):
    BINDINGS = bindings(
        "point.export",
        "point.unexport",
        "point.browse",
        "point.restore_disk",
        "point.restore_vm",
        "point.verify",
        "point.merge",
        "point.delete",
        "point.refresh",
        "point.back",
    )

    def __init__(self, state: ConsoleState, point: RestorePoint) -> None:
        super().__init__(state)
        self.point = point
        self.exports: list[RestoreExport] = []

    def compose(self) -> ComposeResult:
        yield HubHeader(self.state)
        yield Static(id="point-title")
        yield VerificationLine(self.state.client, self.point.point_id, id="point-verify")
        yield Label(Text("disks", style="bold"), classes="point-heading")
        yield DataTable(id="point-disks", cursor_type="row")
        yield Label(Text("instant exports", style="bold"), classes="point-heading")
        yield DataTable(id="point-exports", cursor_type="row")
        yield Static(self._ways_back(), id="point-ways")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#point-disks", DataTable).focus()
        self._show_point(self.point)
        self._show_exports([])
        self.action_refresh()
        self.set_interval(EXPIRY_TICK_SECONDS, self._load_exports)

    # -- what the point is ------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.call_hub(self.state.client.restore_point(self.point.point_id), self._show_point)
        self._load_exports()

    def _load_exports(self) -> None:
        self.call_hub(self.state.client.restore_exports(), self._show_exports, name="exports")

    def _show_point(self, point: RestorePoint) -> None:
        self.point = point
        self.query_one("#point-title", Static).update(self._title(point))
        rows = [
            (
                str(disk.disk_key),
                fmt.size(disk.capacity_bytes),
                fmt.size(disk.qcow2_size_bytes),
                disk.qcow2_path,
            )
            for disk in point.disks
        ]
        refill(self.query_one("#point-disks", DataTable), DISK_COLUMNS, rows)

    @staticmethod
    def _title(point: RestorePoint) -> Text:
        text = Text()
        text.append(f"{point.vm_name} ", style="bold")
        text.append(f"{point.point_id}  ")
        text.append_text(verification_text(point))
        if point.verification_detail:
            damaged = point.verification is Verification.DAMAGED
            text.append(f" ({point.verification_detail})", style="bold red" if damaged else "dim")
        text.append(f"\n{point.backup_type.value}")
        if point.parent_point_id:
            text.append(f" on {point.parent_point_id}")
        text.append(f", chain of {len(point.chain) or 1}")
        text.append(f" · completed {fmt.moment(point.completed_at)}")
        if len(point.chain) > 1:
            text.append("\nchain " + " → ".join(point.chain), style="dim")
        where = [
            f"{fmt.size(point.size_bytes)} stored",
            f"disks {fmt.size(point.bytes_total)}",
            f"repository {point.repository_name or point.repository_id}",
            f"node {point.node_name or point.node_id or '—'}",
        ]
        if point.snapshot_kind:
            where.append(f"snapshot {point.snapshot_kind.value}")
        where.append("configuration recorded" if point.has_config else "no configuration")
        text.append("\n" + " · ".join(where), style="dim")
        return text

    def _ways_back(self) -> Text:
        text = Text()
        text.append("ways back\n", style="bold")
        for binding_id, words in WAYS_BACK.items():
            text.append(
                f"  {pretty(keys_for(binding_id, self.state.keymap)):<6}", style="bold cyan"
            )
            text.append(f"{words}\n")
        return text

    def _show_exports(self, exports: list[RestoreExport]) -> None:
        self.exports = [e for e in exports if e.point_id == self.point.point_id]
        now = self.state.store.clock()
        rows: list[tuple[Any, ...]] = [
            (str(e.disk_key), expiry(e.expires_at, now), e.uri) for e in self.exports
        ]
        if not rows:
            rows = [("", Text("none: x starts one", style="dim"), "")]
        refill(self.query_one("#point-exports", DataTable), EXPORT_COLUMNS, rows)

    def _disk_under_cursor(self) -> int | None:
        table = self.query_one("#point-disks", DataTable)
        if not self.point.disks:
            return None
        return self.point.disks[min(table.cursor_row, len(self.point.disks) - 1)].disk_key

    # -- the ways back ----------------------------------------------------------------------

    def action_export(self) -> None:
        if not self.point.disks:
            return

        def closed(export: RestoreExport | None) -> None:
            self._load_exports()
            self.call_hub(self.state.client.restore_point(self.point.point_id), self._show_point)

        modal = ExportModal(self.state, self.point, self._disk_under_cursor())
        self.app.push_screen(modal, closed)

    def action_unexport(self) -> None:
        table = self.query_one("#point-exports", DataTable)
        if not self.exports:
            self.notify("This point has no live export.", severity="warning")
            return
        export = self.exports[min(table.cursor_row, len(self.exports) - 1)]

        def ended(_: None) -> None:
            self.notify(f"Export {export.name} ended.")
            self.action_refresh()

        self.call_hub(self.state.client.unexport(export.name), ended)

    def action_browse(self) -> None:
        disk_key = self._disk_under_cursor()
        if disk_key is not None:
            self.app.push_screen(FilesScreen(self.state, self.point, disk_key))

    def action_verify(self) -> None:
        self.query_one("#point-verify", VerificationLine).start()

    def on_verification_line_finished(self, event: VerificationLine.Finished) -> None:
        """The verification changed the point's state: read it again (the points list
        reads every point again when it is back on top)."""
        self.call_hub(self.state.client.restore_point(self.point.point_id), self._show_point)

    def action_restore_disk(self) -> None:
        if self.point.disks:
            modal = DiskRestoreModal(self.state, self.point, self._disk_under_cursor())
            self.app.push_screen(modal, self._started)

    def action_restore_vm(self) -> None:
        self.app.push_screen(VMRestoreModal(self.state, self.point), self._started)

    def _started(self, job: RestoreJob | None) -> None:
        if job is None:
            return
        self.state.store.apply(job)
        self.post_message(OpenRestore(job.restore_id))

    def action_delete_point(self) -> None:
        point = self.point

        def deleted(_: None) -> None:
            self.notify(f"Restore point {point.point_id} deleted.")
            self.app.pop_screen()

        def decided(yes: bool | None) -> None:
            if yes:
                self.call_hub(self.state.client.delete_restore_point(point.point_id), deleted)

        question = (
            f"Delete the restore point {point.point_id} of {point.vm_name}? "
            "Its files go from the repository; this cannot be undone."
        )
        self.app.push_screen(ConfirmModal(question, yes="Yes, delete it"), decided)

    def action_merge_point(self) -> None:
        """Ask which point builds on this one (the hub's list), then whether to fold it in."""
        point = self.point

        def merged(result: MergeResult) -> None:
            self.notify(f"{result.merged_point_id} merged into {result.into_point_id}.")
            self.app.pop_screen()

        def decided(yes: bool | None) -> None:
            if yes:
                self.call_hub(self.state.client.merge_point(point.point_id), merged)

        def ask(points: list[RestorePoint]) -> None:
            children = [p.point_id for p in points if p.parent_point_id == point.point_id]
            if len(children) != 1:
                why = "no point builds on it" if not children else "several points build on it"
                self.notify(f"Nothing to merge {point.point_id} into: {why}.", severity="warning")
                return
            question = merge_question(point, children[0])
            self.app.push_screen(ConfirmModal(question, yes="Yes, merge it"), decided)

        self.call_hub(self.state.client.restore_points(point.vm_path or point.vm_name), ask)

    def action_back(self) -> None:
        self.app.pop_screen()


def merge_question(point: RestorePoint, child: str) -> str:
    after = (
        f"{child} then builds on {point.parent_point_id}"
        if point.parent_point_id
        else f"{child} becomes a full on its own"
    )
    return (
        f"Merge {point.point_id} into {child}? {point.point_id} is folded into {child}; "
        f"{child} reads exactly as before, {after}, and {point.point_id} is gone "
        "(its own restore point can no longer be restored)."
    )


def expiry(expires_at: datetime, now: float) -> Text:
    """When an export ends, and how long that is from now."""
    left = expires_at.timestamp() - now
    text = Text(expires_at.strftime("%m-%d %H:%M"))
    if left > 0:
        text.append(f" (in {fmt.duration(left)})", style="dim")
    else:
        text.append(" (ending)", style="yellow")
    return text
