"""The command palette (ctrl+p or `:`): jump to a screen, a VM or a job."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from sendense_tui.messages import OpenJob, OpenRestore, OpenRestorePoints, OpenVM
from sendense_tui.screens.base import SendenseScreen

SCREENS = {
    "inventory": "Inventory: vCenters, datacenters, VMs",
    "jobs": "Jobs: running and history",
    "repositories": "Repositories",
    "vcenters": "vCenters and credentials",
    "nodes": "Nodes and tunnel",
    "restore-points": "Restore points: what can be given back",
    "restores": "Restores: running and history",
    "policies": "Policies: scheduled backups, their runs and retention",
}
MAX_VMS = 2000


class SendenseCommands(Provider):
    def _targets(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.app
        targets: list[tuple[str, Callable[[], object], str]] = [
            (f"screen {name}", partial(app.switch_mode, name), help_text)
            for name, help_text in SCREENS.items()
        ]
        screen = self.screen  # the one the palette was opened on
        if not isinstance(screen, SendenseScreen):
            return targets
        state = screen.state
        for job in state.store.ordered():
            targets.append(
                (
                    f"job {job.vm_name} {job.backup_id}",
                    partial(self._open_job, job.backup_id),
                    f"{job.status} backup of {job.vm_name}",
                )
            )
        for restore in state.store.ordered_restores():
            targets.append(
                (
                    f"restore {restore.vm_name} {restore.restore_id}",
                    partial(self.app.post_message, OpenRestore(restore.restore_id)),
                    f"{restore.status} restore of {restore.vm_name} to {restore.target}",
                )
            )
        for path in state.contexts:  # the VMs the hub has backed up or may back up
            targets.append(
                (
                    f"points {path.rsplit('/', 1)[-1]}",
                    partial(self.app.post_message, OpenRestorePoints(path)),
                    f"restore points of {path}",
                )
            )
        for vcenter_id, inventory in state.inventories.items():
            for vm in inventory.vms[:MAX_VMS]:
                targets.append(
                    (f"vm {vm.name}", partial(self._open_vm, vcenter_id, vm.path), vm.path)
                )
        return targets

    def _open_job(self, backup_id: str) -> None:
        self.app.post_message(OpenJob(backup_id))

    def _open_vm(self, vcenter_id: int, path: str) -> None:
        self.app.post_message(OpenVM(vcenter_id, path))

    async def discover(self) -> Hits:
        for text, callback, help_text in self._targets()[: len(SCREENS)]:
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, callback, help_text in self._targets():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, help=help_text)
