"""The back-up modal: repository, full or incremental, what will be copied, confirm.

Hub refusals (no credential, VM busy, node down) stay in the modal in plain words, so
the operator sees why and can go back without losing the choice.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, RadioButton, RadioSet, Static

from engine.contract.hub import BackupRequest, Repository, VMIn
from engine.contract.inventory import VMInfo
from engine.contract.status import BackupType
from engine.errors import SendenseError
from sendense_tui import fmt
from sendense_tui.calls import plain
from sendense_tui.inventory import total_bytes
from sendense_tui.keymap import bindings
from sendense_tui.state import ConsoleState

INCREMENTAL_REASON = "incremental backups are not available yet"


class BackupModal(ModalScreen[list[str] | None]):
    """Dismissed with the ids of the backups it started, or None when left."""

    BINDINGS = bindings("modal.confirm", "modal.cancel")

    def __init__(self, state: ConsoleState, vms: list[tuple[int, VMInfo]]) -> None:
        super().__init__()
        self.state = state
        self.vms = vms
        self._busy = False

    def compose(self) -> ComposeResult:
        total = sum(total_bytes(vm) for _, vm in self.vms)
        names = ", ".join(vm.name for _, vm in self.vms)
        repositories = self.state.repositories
        with Vertical(id="backup-modal", classes="modal"):
            yield Label(Text(f"Back up {names}", style="bold"), id="backup-title")
            yield Label("Repository")
            with RadioSet(id="repository"):
                for repo in repositories:
                    yield RadioButton(self._repo_label(repo), value=repo is repositories[0])
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
        if not self.state.repositories:
            self._error("the hub has no repository: add one on the repositories screen (3)")
        self.query_one("#repository", RadioSet).focus()

    @staticmethod
    def _repo_label(repo: Repository) -> str:
        return f"{repo.name}  {fmt.size(repo.free_bytes)} free  ({repo.path})"

    def _error(self, message: str) -> None:
        self.query_one("#backup-error", Static).update(Text(message, style="bold red"))

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)

    def action_confirm(self) -> None:
        if self._busy or not self.state.repositories:
            return
        index = self.query_one("#repository", RadioSet).pressed_index
        repo = self.state.repositories[max(index, 0)]
        self._busy = True
        self.query_one("#backup-error", Static).update("starting…")
        self.run_worker(self._start(repo.id), exclusive=True)

    async def _start(self, repository_id: int) -> None:
        """Each VM becomes a context the hub knows (once), then a backup of that context."""
        state, client = self.state, self.state.client
        started: list[str] = []
        for vcenter_id, vm in self.vms:
            try:
                context = state.contexts.get(vm.path)
                if context is None:
                    context = await client.add_vm(VMIn(vcenter_id=vcenter_id, path=vm.path))
                    state.contexts[vm.path] = context
                request = BackupRequest(
                    vm_context_id=context.context_id,
                    repository_id=repository_id,
                    backup_type=BackupType.FULL,
                )
                started.append((await client.start_backup(request)).backup_id)
            except SendenseError as exc:
                self._busy = False
                done = f" ({len(started)} started before)" if started else ""
                self._error(f"{vm.name}: {plain(exc)}{done}")
                return
        self.dismiss(started)
