"""The console application: hub connection, live event stream, screens and keys."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from textual.app import App
from textual.binding import Binding
from textual.containers import ScrollableContainer
from textual.css.query import NoMatches
from textual.dom import DOMNode
from textual.widgets import DataTable, Tree

from sendense_tui.commands import SendenseCommands
from sendense_tui.config import ConsoleConfig, load_config
from sendense_tui.hub_client import HubClient, HubError
from sendense_tui.inventory import Inventory
from sendense_tui.keymap import KeymapError, bindings, load_keymap
from sendense_tui.live import LiveStore
from sendense_tui.screens.help import HelpScreen
from sendense_tui.screens.inventory import InventoryScreen
from sendense_tui.screens.jobs import JobsScreen
from sendense_tui.screens.lists import NodesScreen, RepositoriesScreen, VCentersScreen

T = TypeVar("T")
STATUS_POLL_SECONDS = 10.0
# Sooner while the hub or a node is down: a node started with the console comes up late.
STATUS_RETRY_SECONDS = 2.0
RECONNECT_MAX_SECONDS = 10.0


@dataclass
class HubStatus:
    hub_ok: bool = False
    vcenters: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)


class SendenseApp(App[None]):
    CSS_PATH = "sendense.tcss"
    TITLE = "Sendense"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS = App.COMMANDS | {SendenseCommands}
    MODES = {
        "inventory": InventoryScreen,
        "jobs": JobsScreen,
        "repositories": RepositoriesScreen,
        "vcenters": VCentersScreen,
        "nodes": NodesScreen,
    }
    DEFAULT_MODE = "inventory"
    BINDINGS = [
        *bindings(
            "app.help",
            "app.palette",
            "app.quit",
            "screen.inventory",
            "screen.jobs",
            "screen.repositories",
            "screen.vcenters",
            "screen.nodes",
            "nav.down",
            "nav.up",
            "nav.top",
            "nav.bottom",
        ),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        config: ConsoleConfig,
        *,
        clock: Callable[[], float] = time.time,
        live: bool = True,  # False: no event stream or rate sampling (frozen snapshots)
        fps: float = 3.0,
        note: str | None = None,
        client: HubClient | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.client = client or HubClient(config.hub_url, config.token)
        self.clock = clock
        self.live = live
        self.fps = fps
        self.note = note
        self.store = LiveStore(clock)
        self.status = HubStatus()
        self.vcenter_states: dict[int, str] = {}
        self.inventories: dict[int, Inventory] = {}
        self.contexts: dict[str, dict[str, Any]] = {}  # VM path -> VMContext
        self.repositories: list[dict[str, Any]] = []
        self.marks: set[tuple[int, str]] = set()
        self.keymap_overrides: dict[str, str] = {}
        self.pending_job: str | None = None
        self._drawn_version = -1
        self._said_down = False

    # -- start and stop -------------------------------------------------------------------

    async def on_mount(self) -> None:
        try:
            self.keymap_overrides = load_keymap(self.config.keymap_file)
            self.set_keymap(self.keymap_overrides)
        except KeymapError as exc:
            self.notify(str(exc), severity="error", timeout=10)
        self._watch_terminal()
        if self.note:
            # After the first screen is up: a toast raised before it would not show.
            self.call_after_refresh(self.notify, self.note, title="started", timeout=15)
        self.call_hub(self._load_status(), name="status")
        self.call_hub(self.client.jobs(), self.store.load, name="jobs")
        self.call_hub(self.client.repositories(), self._set_repositories, name="repositories")
        self.call_hub(self.client.vms(), self._set_contexts, name="vms")
        self.set_interval(1.0 / self.fps, self._frame)
        if self.live:
            self.run_worker(self._follow_events(), name="events", exclusive=True)
            self.set_interval(1.0, self.store.sample)

    def _watch_terminal(self) -> None:
        """Quit cleanly when the terminal goes away (SSH dropped, tmux killed)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.exit)
            except (NotImplementedError, RuntimeError, ValueError):
                return  # not the main thread (tests): the test harness owns signals

    async def on_unmount(self) -> None:
        await self.client.aclose()

    # -- talking to the hub ----------------------------------------------------------------

    def call_hub(
        self,
        request: Awaitable[T],
        on_done: Callable[[T], object] | None = None,
        *,
        name: str = "hub",
        node: DOMNode | None = None,
    ) -> None:
        """Run one hub request in a worker; the single place hub errors become messages."""

        async def run() -> None:
            try:
                result = await request
            except HubError as exc:
                self.show_error(exc.plain)
                return
            if on_done is None:
                return
            try:
                on_done(result)
            except NoMatches:
                return  # its screen was torn down (quit, mode change) while the hub answered

        (node or self).run_worker(run(), name=name, group=name)

    def show_error(self, message: str) -> None:
        self.notify(message, title="hub", severity="error", timeout=8)

    async def _load_status(self) -> None:
        healthy = False
        try:
            await self.client.health()
            self.status.hub_ok = True
            self.status.vcenters = await self.client.vcenters()
            self.status.nodes = await self.client.nodes()
            healthy = all(node.get("state") == "up" for node in self.status.nodes)
        except HubError as exc:
            # Said once when the hub goes away; after that the header's "hub ○ down" says it.
            if self.status.hub_ok or not self._said_down:
                self.show_error(exc.plain)
            self.status.hub_ok, self._said_down = False, True
        else:
            self._said_down = False
        finally:
            self.set_timer(
                STATUS_POLL_SECONDS if healthy else STATUS_RETRY_SECONDS, self._poll_status
            )

    def _poll_status(self) -> None:
        """Rescheduled after each answer (never on a fixed beat) so polls cannot pile up."""
        self.call_hub(self._load_status(), name="status")

    def set_vcenter_state(self, vcenter_id: int, state: str) -> None:
        self.vcenter_states[vcenter_id] = state

    def vcenter_state(self, vcenter_id: int) -> str:
        return self.vcenter_states.get(vcenter_id, "untested")

    def _set_repositories(self, repositories: list[dict[str, Any]]) -> None:
        self.repositories = repositories

    def _set_contexts(self, contexts: list[dict[str, Any]]) -> None:
        self.contexts = {str(c.get("vm_path")): c for c in contexts}

    async def _follow_events(self) -> None:
        """Feed the store from the event stream, reconnecting with backoff."""
        delay = 0.5
        while True:
            try:
                async for kind, data in self.client.events():
                    self.store.apply(kind, data)
                    delay = 0.5
            except HubError as exc:
                self.status.hub_ok = False
                self.log.warning(exc.plain)
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_SECONDS, delay * 2)
            try:
                self.store.load(await self.client.jobs())
                self.status.hub_ok = True
            except HubError:
                continue

    # -- drawing ---------------------------------------------------------------------------

    def _frame(self) -> None:
        """The steady redraw: screens read the store only here, never per event."""
        if self.store.version == self._drawn_version:
            return
        self._drawn_version = self.store.version
        self.redraw_live()

    def redraw_live(self) -> None:
        redraw = getattr(self.screen, "redraw_live", None)
        if redraw is not None:
            redraw()

    # -- actions ---------------------------------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_nav(self, where: str) -> None:
        """j/k/g/G for whichever list or tree has the focus."""
        widget = self.focused
        if isinstance(widget, Tree):
            if where in ("up", "down"):
                getattr(widget, f"action_cursor_{where}")()
            else:
                widget.cursor_line = 0 if where == "top" else widget.last_line
        elif isinstance(widget, DataTable):
            if where in ("up", "down"):
                getattr(widget, f"action_cursor_{where}")()
            else:
                widget.move_cursor(row=0 if where == "top" else widget.row_count - 1)
        elif isinstance(widget, ScrollableContainer):  # help, the log
            {
                "up": widget.scroll_up,
                "down": widget.scroll_down,
                "top": widget.scroll_home,
                "bottom": widget.scroll_end,
            }[where]()

    def open_vm(self, vcenter_id: int, path: str) -> None:
        self.switch_mode("inventory")
        screen = self.screen
        if isinstance(screen, InventoryScreen):
            screen.reveal(vcenter_id, path)

    def open_job(self, backup_id: str) -> None:
        """Show this job; the jobs screen picks it up when it mounts or resumes."""
        self.pending_job = backup_id
        if isinstance(self.screen, JobsScreen):
            self.screen.take_pending_job()
        else:
            self.switch_mode("jobs")


def main() -> None:
    from sendense_tui.launcher import ensure_hub

    # Textual sizes itself from COLUMNS/LINES when set; a stale exported value (shells and
    # test runners leak them) would draw past the edge of the real terminal.
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
    config = load_config()
    note = ensure_hub(config)
    if note:
        from sendense_tui.config import reload_token

        config = reload_token(config)
    app = SendenseApp(config, note=note)
    app.run()
    sys.exit(app.return_code or 0)
