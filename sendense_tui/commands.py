"""The command palette (ctrl+p or `:`): jump to a screen, a VM or a job."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from sendense_tui.app import SendenseApp

SCREENS = {
    "inventory": "Inventory: vCenters, datacenters, VMs",
    "jobs": "Jobs: running and history",
    "repositories": "Repositories",
    "vcenters": "vCenters and credentials",
    "nodes": "Nodes and tunnel",
}
MAX_VMS = 2000


class SendenseCommands(Provider):
    @property
    def sendense(self) -> SendenseApp:
        return self.app  # type: ignore[return-value]

    def _targets(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.sendense
        targets: list[tuple[str, Callable[[], object], str]] = [
            (f"screen {name}", partial(app.switch_mode, name), help_text)
            for name, help_text in SCREENS.items()
        ]
        for job in app.store.ordered():
            targets.append(
                (
                    f"job {job['vm_name']} {job['backup_id']}",
                    partial(app.open_job, job["backup_id"]),
                    f"{job.get('status')} backup of {job['vm_name']}",
                )
            )
        for vcenter_id, inventory in app.inventories.items():
            for vm in inventory.vms[:MAX_VMS]:
                targets.append(
                    (f"vm {vm.name}", partial(app.open_vm, vcenter_id, vm.path), vm.path)
                )
        return targets

    async def discover(self) -> Hits:
        for text, callback, help_text in self._targets()[: len(SCREENS)]:
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, callback, help_text in self._targets():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, help=help_text)
