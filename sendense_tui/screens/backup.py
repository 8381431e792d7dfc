"""The back-up modal: repository, full or incremental, what will be copied, confirm.

Hub refusals (no credential, VM busy, node down) stay in the modal in plain words, so
the operator sees why and can go back without losing the choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, RadioButton, RadioSet, Static

from sendense_tui import fmt
from sendense_tui.hub_client import HubError
from sendense_tui.inventory import VM
from sendense_tui.keymap import bindings

if TYPE_CHECKING:
    from sendense_tui.app import SendenseApp

INCREMENTAL_REASON = "incremental backups are not available yet"


class BackupModal(ModalScreen[list[str] | None]):
    BINDINGS = bindings("modal.confirm", "modal.cancel")

    def __init__(self, vms: list[tuple[int, VM]]) -> None:
        super().__init__()
        self.vms = vms
        self._busy = False

    @property
    def sendense(self) -> SendenseApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        total = sum(vm.total_bytes for _, vm in self.vms)
        names = ", ".join(vm.name for _, vm in self.vms)
        with Vertical(id="backup-modal", classes="modal"):
            yield Label(Text(f"Back up {names}", style="bold"), id="backup-title")
            yield Label("Repository")
            with RadioSet(id="repository"):
                for repo in self.sendense.repositories:
                    yield RadioButton(
                        self._repo_label(repo), value=repo is self.sendense.repositories[0]
                    )
            yield Label("Type")
            with RadioSet(id="backup-type"):
                yield RadioButton("full", value=True)
                yield RadioButton(f"incremental ({INCREMENTAL_REASON})", disabled=True)
            yield Label(f"Will copy {len(self.vms)} VM(s), {fmt.size(total)}:")
            yield DataTable(id="backup-disks", cursor_type="none", show_cursor=False)
            yield Static(id="backup-error")
            yield Label(Text("enter starts the backup · esc goes back", style="dim"))

    def on_mount(self) -> None:
        table = self.query_one("#backup-disks", DataTable)
        table.add_columns("VM", "disk", "size", "datastore")
        for _, vm in self.vms:
            for disk in vm.disks:
                table.add_row(vm.name, str(disk.key), fmt.size(disk.capacity_bytes), disk.datastore)
        if not self.sendense.repositories:
            self._error("the hub has no repository: add one on the repositories screen (3)")
        self.query_one("#repository", RadioSet).focus()

    @staticmethod
    def _repo_label(repo: dict[str, Any]) -> str:
        return f"{repo['name']}  {fmt.size(repo.get('free_bytes'))} free  ({repo.get('path', '')})"

    def _error(self, message: str) -> None:
        self.query_one("#backup-error", Static).update(Text(message, style="bold red"))

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)

    def action_confirm(self) -> None:
        if self._busy or not self.sendense.repositories:
            return
        index = self.query_one("#repository", RadioSet).pressed_index
        repo = self.sendense.repositories[max(index, 0)]
        self._busy = True
        self.query_one("#backup-error", Static).update("starting…")
        self.run_worker(self._start(repo["id"]), exclusive=True)

    async def _start(self, repository_id: int) -> None:
        app = self.sendense
        started: list[str] = []
        try:
            for vcenter_id, vm in self.vms:
                if vm.path not in app.contexts:
                    app.contexts[vm.path] = await app.client.add_vm(vcenter_id, vm.path)
                answer = await app.client.start_backup(vm.name, repository_id, "full")
                started.append(str(answer["backup_id"]))
        except HubError as exc:
            self._busy = False
            done = f" ({len(started)} started before)" if started else ""
            self._error(f"{vm.name}: {exc.plain}{done}")
            return
        self.dismiss(started)
