"""The list screens: repositories, vCenters, nodes and their tunnels.

One base class: a header, a keyed table, a line of notes; each screen says only which
request fills it and how a row reads.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from sendense_tui import fmt
from sendense_tui.keymap import bindings
from sendense_tui.screens.modals import AddVCenterModal
from sendense_tui.widgets.header import HubHeader, tunnel_of

if TYPE_CHECKING:
    from sendense_tui.app import SendenseApp


class ListScreen(Screen[None]):
    COLUMNS: tuple[str, ...] = ()
    NOTE = ""
    BINDINGS = bindings("list.refresh")

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, Any]] = []

    @property
    def sendense(self) -> SendenseApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield HubHeader()
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

    def fetch(self) -> Awaitable[list[dict[str, Any]]]:
        raise NotImplementedError

    def row(self, item: dict[str, Any]) -> list[Any]:
        raise NotImplementedError

    def show(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        table = self.query_one(DataTable)
        table.clear()
        for item in items:
            table.add_row(*self.row(item), key=str(item.get("id")))

    def action_refresh(self) -> None:
        self.sendense.call_hub(self.fetch(), self.show, node=self, name="list")

    def current(self) -> dict[str, Any] | None:
        table = self.query_one(DataTable)
        if not self.items or table.cursor_row >= len(self.items):
            return None
        return self.items[table.cursor_row]


class RepositoriesScreen(ListScreen):
    COLUMNS = ("id", "name", "path", "used", "free", "total")
    NOTE = "Add a repository with `sendense repo add NAME PATH` on the hub."

    def fetch(self) -> Awaitable[list[dict[str, Any]]]:
        return self.sendense.client.repositories()

    def row(self, item: dict[str, Any]) -> list[Any]:
        return [
            str(item["id"]),
            item["name"],
            item.get("path", ""),
            fmt.size(item.get("used_bytes")),
            fmt.size(item.get("free_bytes")),
            fmt.size(item.get("total_bytes")),
        ]

    def show(self, items: list[dict[str, Any]]) -> None:
        self.sendense.repositories = items
        super().show(items)


class VCentersScreen(ListScreen):
    COLUMNS = ("id", "name", "host", "user", "thumbprint", "state")
    NOTE = "a adds a vCenter (its thumbprint is shown for you to confirm), t tests its login."
    BINDINGS = bindings("list.refresh", "vcenters.add", "vcenters.test")

    def fetch(self) -> Awaitable[list[dict[str, Any]]]:
        return self.sendense.client.vcenters()

    def row(self, item: dict[str, Any]) -> list[Any]:
        state = self.sendense.vcenter_state(int(item["id"]))
        thumb = str(item.get("thumbprint") or "—")
        return [
            str(item["id"]),
            item.get("name") or "",
            item["host"],
            item.get("username", ""),
            thumb[:23] + "…" if len(thumb) > 24 else thumb,
            state,
        ]

    def action_add_vcenter(self) -> None:
        def added(ok: bool | None) -> None:
            if ok:
                self.notify("vCenter added.")
                self.action_refresh()

        self.app.push_screen(AddVCenterModal(), added)

    def action_test_vcenter(self) -> None:
        item = self.current()
        if item is None:
            return
        app = self.sendense

        def tested(result: dict[str, Any]) -> None:
            ok = bool(result.get("ok"))
            app.set_vcenter_state(int(item["id"]), "ok" if ok else "failed")
            self.notify(
                str(result.get("message") or ("login ok" if ok else "login failed")),
                severity="information" if ok else "error",
            )
            self.show(self.items)

        app.call_hub(app.client.test_vcenter(int(item["id"])), tested, node=self, name="test")


class NodesScreen(ListScreen):
    COLUMNS = ("id", "name", "url", "state", "tunnel", "tunnel since", "rtt")
    NOTE = "Add a node with `sendense nodes add --name NAME --url URL` on the hub."

    def fetch(self) -> Awaitable[list[dict[str, Any]]]:
        return self.sendense.client.nodes()

    def row(self, item: dict[str, Any]) -> list[Any]:
        tunnel = item.get("tunnel") or {}
        state = str(item.get("state") or "unknown")
        rtt = tunnel.get("rtt_ms")
        return [
            str(item["id"]),
            item["name"],
            item.get("url", ""),
            Text(state, style="green" if state == "up" else "yellow"),
            tunnel_of(item),
            str(tunnel.get("since") or "")[:19],
            f"{rtt:.1f} ms" if isinstance(rtt, int | float) else "",
        ]
