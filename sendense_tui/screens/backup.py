"""The back-up modal: repository, type (auto, full, incremental), what will happen to
each VM and why, confirm. One VM is started at once; several are queued, one job each
(``queue_backups``), and the hub starts them as its limits allow.

Each VM's line is the hub's own preview of the same request (``preview_backup``), asked
again whenever the type or repository changes, so the modal never guesses what the
hub's plan will decide. Hub refusals (no credential, VM busy, node down) stay in the
modal in plain words, so the operator sees why and can go back without losing the choice.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, RadioButton, RadioSet, Static

from engine.contract.hub import BackupRequest, QueueRequest, Repository
from engine.contract.inventory import VMInfo
from engine.contract.status import BackupType
from engine.errors import NotFound, SendenseError
from sendense_tui import fmt
from sendense_tui.calls import plain
from sendense_tui.contexts import ensure_context
from sendense_tui.inventory import total_bytes
from sendense_tui.keymap import bindings, keys_for
from sendense_tui.preview import failed_text, first_backup_text, preview_text
from sendense_tui.screens.help import pretty
from sendense_tui.state import ConsoleState

TYPES = (BackupType.AUTO, BackupType.FULL, BackupType.INCREMENTAL)
TYPE_WORDS = {
    BackupType.AUTO: "auto (incremental where the VM has a usable chain)",
    BackupType.FULL: "full",
    BackupType.INCREMENTAL: "incremental",
}
WAITING = "…"


class BackupModal(ModalScreen[list[str] | None]):
    """Dismissed with the ids of the backups it started, or None when left."""

    BINDINGS = bindings("modal.confirm", "modal.cancel")

    def __init__(self, state: ConsoleState, vms: list[tuple[int, VMInfo]]) -> None:
        super().__init__()
        self.state = state
        self.vms = vms
        self._busy = False
        self._asked = 0  # which round of previews the lines show (older answers are dropped)

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
                for kind in TYPES:
                    yield RadioButton(TYPE_WORDS[kind], value=kind is BackupType.AUTO)
            if self.queues:
                what = f"Will queue {len(self.vms)} VMs, one job each, disks {fmt.size(total)}"
                yield Label(f"{what} (the hub starts them as its limits allow):")
            else:
                yield Label(f"Will back up {len(self.vms)} VM(s), disks {fmt.size(total)}:")
            with Vertical(id="backup-preview"):
                for n, (_, vm) in enumerate(self.vms):
                    yield Static(f"{vm.name}: {WAITING}", id=f"preview-{n}", classes="preview")
            yield Static(id="backup-error")
            action = "queues the backups" if self.queues else "starts the backup"
            yield Label(Text(f"enter {action} · esc goes back", style="dim"))

    def on_mount(self) -> None:
        if not self.state.repositories:
            self._error("the hub has no repository: add one on the repositories screen (3)")
        self.query_one("#repository", RadioSet).focus()
        self._preview()

    @property
    def queues(self) -> bool:
        """Several VMs go through the hub's queue; one starts at once."""
        return len(self.vms) > 1

    @staticmethod
    def _repo_label(repo: Repository) -> str:
        return f"{repo.name}  {fmt.size(repo.free_bytes)} free  ({repo.path})"

    def _error(self, message: str) -> None:
        self.query_one("#backup-error", Static).update(Text(message, style="bold red"))

    @property
    def backup_type(self) -> BackupType:
        return TYPES[max(self.query_one("#backup-type", RadioSet).pressed_index, 0)]

    def _repository(self) -> Repository | None:
        repositories = self.state.repositories
        index = self.query_one("#repository", RadioSet).pressed_index
        return repositories[max(index, 0)] if repositories else None

    def on_radio_set_changed(self, _: RadioSet.Changed) -> None:
        self._preview()

    # -- what will happen --------------------------------------------------------------------

    def _preview(self) -> None:
        """Each VM's line back to "…", then one worker per VM asks the hub."""
        repo = self._repository()
        if repo is None:
            return
        self._asked += 1
        for n, (vcenter_id, vm) in enumerate(self.vms):
            self.query_one(f"#preview-{n}", Static).update(f"{vm.name}: {WAITING}")
            self.run_worker(
                self._preview_one(self._asked, n, vcenter_id, vm, repo.id),
                group="preview",
            )

    async def _preview_one(
        self, asked: int, n: int, vcenter_id: int, vm: VMInfo, repository_id: int
    ) -> None:
        cbt_key = pretty(keys_for("inventory.cbt", self.state.keymap))
        try:
            preview = await self.state.client.preview_backup(
                self._request(vm, repository_id, self.backup_type)
            )
            line = preview_text(preview, cbt_key)
        except SendenseError as exc:
            if isinstance(exc, NotFound) and vm.path not in self.state.contexts:
                line = first_backup_text(vm, cbt_key)  # the hub never saw it: no chain yet
            else:
                line = failed_text(vm.name, plain(exc))
        if asked == self._asked:
            self.query_one(f"#preview-{n}", Static).update(line)

    def _request(self, vm: VMInfo, repository_id: int, kind: BackupType) -> BackupRequest:
        """By context when the hub has one for the VM, else by its inventory path."""
        context = self.state.contexts.get(vm.path)
        return BackupRequest(
            vm_context_id=context.context_id if context else None,
            vm_path=None if context else vm.path,
            repository_id=repository_id,
            backup_type=kind,
        )

    # -- start -----------------------------------------------------------------------------

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)

    def action_confirm(self) -> None:
        repo = self._repository()
        if self._busy or repo is None:
            return
        self._busy = True
        self.query_one("#backup-error", Static).update("queueing…" if self.queues else "starting…")
        start = self._queue if self.queues else self._start
        self.run_worker(start(repo.id, self.backup_type), exclusive=True)

    async def _start(self, repository_id: int, kind: BackupType) -> None:
        """The VM becomes a context the hub knows (once), then a backup of that context."""
        ((vcenter_id, vm),) = self.vms
        try:
            await ensure_context(self.state, vcenter_id, vm)
            started = await self.state.client.start_backup(self._request(vm, repository_id, kind))
        except SendenseError as exc:
            self._refused(f"{vm.name}: {plain(exc)}")
            return
        self.dismiss([started.backup_id])

    async def _queue(self, repository_id: int, kind: BackupType) -> None:
        """Each VM a context the hub knows, then one request for all: the hub queues every
        one or, refusing one (a VM queued or running already), none."""
        for vcenter_id, vm in self.vms:
            try:
                await ensure_context(self.state, vcenter_id, vm)
            except SendenseError as exc:
                self._refused(f"{vm.name}: {plain(exc)}")
                return
        backups = [self._request(vm, repository_id, kind) for _, vm in self.vms]
        try:
            jobs = await self.state.client.queue_backups(QueueRequest(backups=backups))
        except SendenseError as exc:
            self._refused(f"nothing queued: {plain(exc)}")
            return
        for job in jobs:
            self.state.store.apply(job)
        self.dismiss([job.backup_id for job in jobs])

    def _refused(self, message: str) -> None:
        self._busy = False
        self._error(message)
