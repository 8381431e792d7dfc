"""The list screens: repositories, vCenters, nodes and their tunnels.

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
from engine.contract.status import NodeState
from sendense_tui import fmt
from sendense_tui.keymap import bindings
from sendense_tui.screens.base import SendenseScreen
from sendense_tui.screens.modals import AddVCenterModal
from sendense_tui.state import ConsoleState, LoginState
from sendense_tui.widgets.header import HubHeader, tunnel_of

Item = TypeVar("Item", Repository, VCenter, NodeInfo)


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
        yield Static(Text(self.NOTE, style="dim"), classes="list-note")
        yield Footer()

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
        self.items = items
        table = self.query_one(DataTable)
        table.clear()
        for item in items:
            table.add_row(*self.row(item), key=str(item.id))

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
    COLUMNS = ("id", "name", "url", "state", "tunnel", "tunnel since", "rtt")
    NOTE = "Add a node with `sendense nodes add --name NAME --url URL` on the hub."

    def fetch(self) -> Awaitable[list[NodeInfo]]:
        return self.state.client.nodes()

    def row(self, item: NodeInfo) -> list[Any]:
        tunnel = item.tunnel
        rtt = tunnel.rtt_ms if tunnel else None
        return [
            str(item.id),
            item.name,
            item.url,
            Text(str(item.state), style="green" if item.state is NodeState.UP else "yellow"),
            tunnel_of(item),
            (tunnel.since or "")[:19] if tunnel else "",
            f"{rtt:.1f} ms" if rtt is not None else "",
        ]
