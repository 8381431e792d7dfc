"""The header: hub, vCenters, node and tunnel state, running jobs.

Two lines on a comfortable terminal; one line under 30 rows or 100 columns, so an
80x24 SSH session keeps its rows for data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widget import Widget

if TYPE_CHECKING:
    from sendense_tui.app import SendenseApp

OK_STATES = {"ok", "up", "connected", "online"}


def tunnel_of(node: dict[str, object]) -> str:
    """A node's tunnel state; one that never ran (hub and node on one machine) is "none"."""
    tunnel = node.get("tunnel")
    if isinstance(tunnel, dict) and (tunnel.get("since") or tunnel.get("state") == "up"):
        return str(tunnel.get("state"))
    return "none"


def _state(text: Text, label: str, state: str) -> None:
    good = state.lower() in OK_STATES
    text.append(label, style="bold")
    text.append(f" {'●' if good else '○'} {state}", style="green" if good else "yellow")


class HubHeader(Widget):
    """Each screen has its own header; each redraws itself when what it shows changed."""

    DEFAULT_CSS = "HubHeader { height: auto; }"
    CHECKS_PER_SECOND = 3

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[object, ...] = ()

    def on_mount(self) -> None:
        self.set_interval(1 / self.CHECKS_PER_SECOND, self._check)

    def _signature(self) -> tuple[object, ...]:
        app: SendenseApp = self.app  # type: ignore[assignment]
        status = app.status
        return (
            status.hub_ok,
            tuple(
                (vc["id"], vc.get("name"), app.vcenter_state(vc["id"])) for vc in status.vcenters
            ),
            repr(status.nodes),
            app.store.running_count(),
            app.size.height < 30 or app.size.width < 100,
        )

    def _check(self) -> None:
        signature = self._signature()
        if signature != self._shown:
            self._shown = signature
            self.refresh(layout=True)

    def render(self) -> Text:
        app: SendenseApp = self.app  # type: ignore[assignment]
        status = app.status
        compact = app.size.height < 30 or app.size.width < 100
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(" Sendense ", style="reverse bold")
        line.append(" ")
        _state(line, "hub", "up" if status.hub_ok else "down")
        if not compact:
            line.append(f" {app.config.hub_url}", style="dim")
        detail = Text(no_wrap=True, overflow="ellipsis")
        if not status.vcenters:
            detail.append("  ")
            _state(detail, "vCenter", "none yet")
        for vc in status.vcenters:
            detail.append("  ")
            _state(
                detail, f"vCenter {vc.get('name') or vc.get('host')}", app.vcenter_state(vc["id"])
            )
        for node in status.nodes or [{"name": "none", "state": "unknown", "tunnel": None}]:
            detail.append("  ")
            _state(detail, f"node {node.get('name')}", str(node.get("state") or "unknown"))
            tunnel_state = tunnel_of(node)
            if not compact or tunnel_state != "none":
                detail.append(f" tunnel {tunnel_state}", style="dim")
        running = app.store.running_count()
        detail.append("  ")
        detail.append(f"jobs {running} running", style="bold cyan" if running else "dim")
        if compact:
            return line + detail
        return Text("\n").join([line, detail])
