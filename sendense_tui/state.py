"""What the console knows, in one owner: the app makes it, every screen is handed it.

Screens read and change this object, never the app's fields; what only the app can do
(switch screens, show a hub error) they ask for with a message (``messages.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from engine.contract.hub import NodeInfo, Repository, VCenter, VMContext
from engine.contract.status import NodeState
from engine.hub_client import HubClient
from sendense_tui.config import ConsoleConfig
from sendense_tui.inventory import InventoryIndex
from sendense_tui.live import LiveStore


class LoginState(StrEnum):
    """A vCenter's login as this console last saw it (read its inventory, or tested it)."""

    UNTESTED = "untested"
    OK = "ok"
    FAILED = "failed"


@dataclass
class HubStatus:
    """The header's view of the hub, refreshed by the app's status poll."""

    hub_ok: bool = False
    vcenters: list[VCenter] = field(default_factory=list)
    nodes: list[NodeInfo] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.hub_ok and all(node.state is NodeState.UP for node in self.nodes)


class ConsoleState:
    def __init__(
        self, config: ConsoleConfig, client: HubClient, clock: Callable[[], float]
    ) -> None:
        self.config = config
        self.client = client
        self.store = LiveStore(clock)
        self.status = HubStatus()
        self.inventories: dict[int, InventoryIndex] = {}  # by vCenter id
        self.contexts: dict[str, VMContext] = {}  # by VM path
        self.repositories: list[Repository] = []
        self.marks: set[tuple[int, str]] = set()  # (vCenter id, VM path)
        self.logins: dict[int, LoginState] = {}  # by vCenter id
        self.keymap: dict[str, str] = {}  # the user's rebindings, by binding id
        # A job to show once the jobs screen is up (asked for before it mounted).
        self.pending_job: str | None = None
        self.pending_restore: str | None = None  # the same, for the restores screen
        # Whose restore points the restore-points screen lists (a VM path); None: every VM.
        self.points_vm: str | None = None

    def login(self, vcenter_id: int) -> LoginState:
        return self.logins.get(vcenter_id, LoginState.UNTESTED)

    def set_contexts(self, contexts: list[VMContext]) -> None:
        self.contexts = {c.vm_path: c for c in contexts}

    def set_repositories(self, repositories: list[Repository]) -> None:
        self.repositories = repositories
