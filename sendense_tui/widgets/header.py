"""The header: hub, vCenters, node and tunnel state, running and queued jobs.

Two lines on a comfortable terminal; one line under 30 rows or 100 columns, so an
80x24 SSH session keeps its rows for data.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from engine.contract.hub import NodeInfo
from engine.contract.status import NodeState, TunnelState
from sendense_tui.state import ConsoleState

OK_STATES = {"ok", "up", "connected", "online"}


def tunnel_of(node: NodeInfo) -> str:
    """A node's tunnel state; one that never ran (hub and node on one machine) is "none"."""
    tunnel = node.tunnel
    if tunnel is not None and (tunnel.since or tunnel.state is TunnelState.UP):
        return str(tunnel.state)
    return "none"


def _state(text: Text, label: str, state: str) -> None:
    good = state.lower() in OK_STATES
    text.append(label, style="bold")
    text.append(f" {'●' if good else '○'} {state}", style="green" if good else "yellow")


def _fleet(text: Text, nodes: list[NodeInfo]) -> None:
    """Several nodes as counts (each one's state and tunnel are on the nodes screen)."""
    up = sum(1 for node in nodes if node.state is NodeState.UP)
    text.append("  nodes", style="bold")
    text.append(f" ● {up} up", style="green" if up else "dim")
    if up < len(nodes):
        text.append(f" ○ {len(nodes) - up} down", style="yellow")


class HubHeader(Widget):
    """Each screen has its own header; each redraws itself when what it shows changed."""

    # Each line ends in "…" where it is too long (many nodes), never wraps into the next.
    DEFAULT_CSS = "HubHeader { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }"
    CHECKS_PER_SECOND = 3

    def __init__(self, state: ConsoleState) -> None:
        super().__init__()
        self.state = state
        self._shown: tuple[object, ...] = ()

    def on_mount(self) -> None:
        self.set_interval(1 / self.CHECKS_PER_SECOND, self._check)

    @property
    def _compact(self) -> bool:
        return self.app.size.height < 30 or self.app.size.width < 100

    def _signature(self) -> tuple[object, ...]:
        status = self.state.status
        return (
            status.hub_ok,
            tuple((vc.id, vc.name, self.state.login(vc.id)) for vc in status.vcenters),
            repr(status.nodes),
            self.state.store.running_count(),
            self.state.store.queued_count(),
            self._compact,
        )

    def _check(self) -> None:
        signature = self._signature()
        if signature != self._shown:
            self._shown = signature
            self.refresh(layout=True)

    def render(self) -> Text:
        status = self.state.status
        compact = self._compact
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(" Sendense ", style="reverse bold")
        line.append(" ")
        _state(line, "hub", "up" if status.hub_ok else "down")
        if not compact:
            line.append(f" {self.state.config.hub_url}", style="dim")
        detail = Text(no_wrap=True, overflow="ellipsis")
        if not status.vcenters:
            detail.append("  ")
            _state(detail, "vCenter", "none yet")
        for vc in status.vcenters:
            detail.append("  ")
            _state(detail, f"vCenter {vc.name or vc.host}", self.state.login(vc.id))
        if len(status.nodes) > 1:
            _fleet(detail, status.nodes)
        for node in status.nodes if len(status.nodes) == 1 else ():
            detail.append("  ")
            _state(detail, f"node {node.name}", str(node.state))
            tunnel_state = tunnel_of(node)
            if not compact or tunnel_state != "none":
                detail.append(f" tunnel {tunnel_state}", style="dim")
        if not status.nodes:
            detail.append("  ")
            _state(detail, "node none", "unknown")
            if not compact:
                detail.append(" tunnel none", style="dim")
        running = self.state.store.running_count()
        detail.append("  ")
        detail.append(f"jobs {running} running", style="bold cyan" if running else "dim")
        queued = self.state.store.queued_count()
        if queued:
            detail.append(f" · {queued} queued", style="cyan")
        if compact:
            return line + detail
        return Text("\n").join([line, detail])
