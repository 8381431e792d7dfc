"""The list screens: repositories, vCenters, nodes (state, load, throughput, tunnel).

One base class: a header, a keyed table, a line of notes; each screen says only which
request fills it and how a row reads.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Generic, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Static

from engine.contract.hub import NodeInfo, Repository, VCenter, VCenterTest
from engine.contract.policy import Policy
from engine.contract.status import NodeState
from sendense_tui import fmt
from sendense_tui.keymap import bindings
from sendense_tui.screens.base import SendenseScreen
from sendense_tui.screens.modals import AddVCenterModal
from sendense_tui.state import ConsoleState, LoginState
from sendense_tui.widgets.header import HubHeader, tunnel_of

Item = TypeVar("Item", Repository, VCenter, NodeInfo, Policy)


class ListScreen(SendenseScreen, Generic[Item]):
    COLUMNS: tuple[str, ...] = ()
    NOTE = ""
    BINDINGS = bindings("list.refresh")

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(state)
        self.items: list[Item] = []

    def compose(self) -> ComposeResult:
        yield HubHeader(self.state)
        yield DataTable(cursor_type="row", zebra_stripes=True, classes="list-table")
        yield from self.below()
        yield Static(Text(self.NOTE, style="dim"), classes="list-note")
        yield Footer()

    def below(self) -> ComposeResult:
        """What a screen shows between its table and its note (nothing by default)."""
        yield from ()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for column in self.COLUMNS:
            table.add_column(column, key=column)
        table.focus()
        self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def fetch(self) -> Awaitable[list[Item]]:
        raise NotImplementedError

    def row(self, item: Item) -> list[Any]:
        raise NotImplementedError

    def show(self, items: list[Item]) -> None:
        """The rows anew, the cursor left on its line (a refresh does not send it home)."""
        self.items = items
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for item in items:
            table.add_row(*self.row(item), key=str(item.id))
        table.move_cursor(row=row)

    def action_refresh(self) -> None:
        self.call_hub(self.fetch(), self.show, name="list")

    def current(self) -> Item | None:
        table = self.query_one(DataTable)
        if not self.items or table.cursor_row >= len(self.items):
            return None
        return self.items[table.cursor_row]


class RepositoriesScreen(ListScreen[Repository]):
    COLUMNS = ("id", "name", "path", "used", "free", "total")
    NOTE = "Add a repository with `sendense repo add NAME PATH` on the hub."

    def fetch(self) -> Awaitable[list[Repository]]:
        return self.state.client.repositories()

    def row(self, item: Repository) -> list[Any]:
        return [
            str(item.id),
            item.name,
            item.path,
            fmt.size(item.used_bytes),
            fmt.size(item.free_bytes),
            fmt.size(item.total_bytes),
        ]

    def show(self, items: list[Repository]) -> None:
        self.state.set_repositories(items)
        super().show(items)


class VCentersScreen(ListScreen[VCenter]):
    COLUMNS = ("id", "name", "host", "user", "thumbprint", "state")
    NOTE = "a adds a vCenter (its thumbprint is shown for you to confirm), t tests its login."
    BINDINGS = bindings("list.refresh", "vcenters.add", "vcenters.test")

    def fetch(self) -> Awaitable[list[VCenter]]:
        return self.state.client.vcenters()

    def row(self, item: VCenter) -> list[Any]:
        thumb = item.thumbprint or "—"
        return [
            str(item.id),
            item.name,
            item.host,
            item.username,
            thumb[:23] + "…" if len(thumb) > 24 else thumb,
            str(self.state.login(item.id)),
        ]

    def action_add_vcenter(self) -> None:
        def added(ok: bool | None) -> None:
            if ok:
                self.notify("vCenter added.")
                self.action_refresh()

        self.app.push_screen(AddVCenterModal(self.state.client), added)

    def action_test_vcenter(self) -> None:
        item = self.current()
        if item is None:
            return

        def tested(result: VCenterTest) -> None:
            self.state.logins[item.id] = LoginState.OK if result.ok else LoginState.FAILED
            self.notify(
                result.message or ("login ok" if result.ok else "login failed"),
                severity="information" if result.ok else "error",
            )
            self.show(self.items)

        self.call_hub(self.state.client.test_vcenter(item.id), tested, name="test")


class NodesScreen(ListScreen[NodeInfo]):
    """Each node's state (down: why), its load against its capacity, what it copies now
    and copied in the last hour, the vCenters it serves, when the hub last heard it."""

    COLUMNS = (
        "name",
        "state",
        "jobs",
        "disks",
        "now",
        "last hour",
        "vCenters",
        "last seen",
        "tunnel",
        "rtt",
        "url",
    )
    NOTE = (
        "jobs and disks: running / capacity. "
        "Add a node with `sendense nodes add --name NAME --url URL` on the hub."
    )

    def fetch(self) -> Awaitable[list[NodeInfo]]:
        return self.state.client.nodes()

    def below(self) -> ComposeResult:
        yield Static(id="nodes-why")

    def show(self, items: list[NodeInfo]) -> None:
        super().show(items)
        self.query_one("#nodes-why", Static).update(why_not(items))

    def row(self, item: NodeInfo) -> list[Any]:
        tunnel = item.tunnel
        rtt = tunnel.rtt_ms if tunnel else None
        since = f" {tunnel.since[5:16].replace('T', ' ')}" if tunnel and tunnel.since else ""
        return [
            item.name,
            node_state(item),
            load(item.jobs_active, item.max_jobs),
            load(item.disks_active, item.max_disks),
            fmt.rate(item.throughput_bps),
            fmt.size(item.bytes_last_hour),
            ", ".join(item.vcenters) or "every vCenter",
            fmt.moment(item.last_seen_at),
            tunnel_of(item) + since,
            f"{rtt:.1f} ms" if rtt is not None else "",
            item.url,
        ]


def node_state(node: NodeInfo) -> Text:
    """``up`` or ``down`` (the reason is below the table); a disabled node says so."""
    up = node.state is NodeState.UP
    text = Text(str(node.state), style="green" if up else "bold yellow")
    if not node.enabled:
        text.append(", disabled", style="dim")
    return text


def why_not(nodes: list[NodeInfo]) -> Text:
    """One line per node that gets no new job: down (and why), or disabled."""
    text = Text()
    for node in nodes:
        if node.state is NodeState.UP and node.enabled:
            continue
        if text:
            text.append("\n")
        text.append(node.name, style="bold")
        if node.state is not NodeState.UP:
            text.append(f" is down: {node.error or 'the hub has no answer from it'}", "yellow")
        else:
            text.append(" is disabled: the hub gives it no new job", "dim")
    return text


def load(active: int, capacity: int) -> str:
    """``2/8``; without a capacity of its own (0), the count alone."""
    return f"{active}/{capacity}" if capacity else str(active)
