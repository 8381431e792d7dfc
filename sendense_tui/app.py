"""The console application: hub connection, live event stream, screens and keys."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from functools import partial

from textual.app import App
from textual.binding import Binding

from engine.errors import SendenseError
from engine.hub_client import HubClient
from sendense_tui.calls import call_hub, plain
from sendense_tui.commands import SendenseCommands
from sendense_tui.config import ConsoleConfig, load_config, reload_token
from sendense_tui.keymap import KeymapError, bindings, load_keymap
from sendense_tui.launcher import LaunchNote, ensure_hub
from sendense_tui.messages import HubFailed, OpenJob, OpenRestore, OpenRestorePoints, OpenVM
from sendense_tui.screens.base import SendenseScreen, navigate
from sendense_tui.screens.help import HelpScreen
from sendense_tui.screens.inventory import InventoryScreen
from sendense_tui.screens.jobs import JobsScreen
from sendense_tui.screens.lists import NodesScreen, RepositoriesScreen, VCentersScreen
from sendense_tui.screens.policies import PoliciesScreen
from sendense_tui.screens.restore_job import RestoresScreen
from sendense_tui.screens.restore_points import RestorePointsScreen
from sendense_tui.state import ConsoleState

STATUS_POLL_SECONDS = 10.0
# Sooner while the hub or a node is down: a node started with the console comes up late.
STATUS_RETRY_SECONDS = 2.0
RECONNECT_MAX_SECONDS = 10.0
SCREENS: dict[str, Callable[[ConsoleState], SendenseScreen]] = {
    "inventory": InventoryScreen,
    "jobs": JobsScreen,
    "repositories": RepositoriesScreen,
    "vcenters": VCentersScreen,
    "nodes": NodesScreen,
    "restore-points": RestorePointsScreen,
    "restores": RestoresScreen,
    "policies": PoliciesScreen,
}


class SendenseApp(App[None]):
    CSS_PATH = "sendense.tcss"
    TITLE = "Sendense"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS = App.COMMANDS | {SendenseCommands}
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
            "screen.restore_points",
            "screen.restores",
            "screen.policies",
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
        note: LaunchNote | None = None,
        client: HubClient | None = None,
    ) -> None:
        super().__init__()
        self.state = ConsoleState(config, client or HubClient(config.hub_url, config.token), clock)
        for mode, screen in SCREENS.items():
            self.add_mode(mode, partial(screen, self.state))
        self.live = live
        self.fps = fps
        self.note = note
        self._drawn_version = -1
        self._said_down = False

    # -- start and stop -------------------------------------------------------------------

    async def on_mount(self) -> None:
        state = self.state
        try:
            state.keymap = load_keymap(state.config.keymap_file)
            self.set_keymap(state.keymap)
        except KeymapError as exc:
            self.notify(str(exc), severity="error", timeout=10)
        self._watch_terminal()
        if self.note:
            # After the first screen is up: a toast raised before it would not show.
            self.call_after_refresh(
                self.notify,
                self.note.text,
                title="not started" if self.note.failed else "started",
                severity="error" if self.note.failed else "information",
                timeout=15,
            )
        self._poll_status()
        call_hub(self, state.client.jobs(), state.store.load, name="jobs")
        call_hub(self, state.client.restores(), state.store.load_restores, name="restores")
        call_hub(self, state.client.repositories(), state.set_repositories, name="repositories")
        call_hub(self, state.client.vms(), state.set_contexts, name="vms")
        self.set_interval(1.0 / self.fps, self._frame)
        if self.live:
            self.run_worker(self._follow_events(), name="events", exclusive=True)
            self.set_interval(1.0, state.store.sample)

    def _watch_terminal(self) -> None:
        """Quit cleanly when the terminal goes away (SSH dropped, tmux killed)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.exit)
            except (NotImplementedError, RuntimeError, ValueError):
                return  # not the main thread (tests): the test harness owns signals

    async def on_unmount(self) -> None:
        await self.state.client.aclose()

    # -- what screens ask for --------------------------------------------------------------

    def on_hub_failed(self, message: HubFailed) -> None:
        self.notify(message.words, title="hub", severity="error", timeout=8)

    def on_open_job(self, message: OpenJob) -> None:
        """Show this job; the jobs screen picks it up when it mounts or resumes."""
        self.state.pending_job = message.backup_id
        if isinstance(self.screen, JobsScreen):
            self.screen.take_pending()
        else:
            self.switch_mode("jobs")

    def on_open_restore(self, message: OpenRestore) -> None:
        """As ``on_open_job``, on the restores screen."""
        self.state.pending_restore = message.restore_id
        if isinstance(self.screen, RestoresScreen):
            self.screen.take_pending()
        else:
            self.switch_mode("restores")

    def on_open_restore_points(self, message: OpenRestorePoints) -> None:
        """The list, scoped to the VM; a point opened on top of it earlier is left."""
        self.state.points_vm = message.vm
        self.switch_mode("restore-points")
        while len(self.screen_stack) > 1 and not isinstance(self.screen, RestorePointsScreen):
            self.pop_screen()
        screen = self.screen
        if isinstance(screen, RestorePointsScreen) and screen.is_mounted:
            screen.reload()  # once mounted it reloads itself (on mount, on resume)

    def on_open_vm(self, message: OpenVM) -> None:
        self.switch_mode("inventory")
        screen = self.screen
        if isinstance(screen, InventoryScreen):
            screen.reveal(message.vcenter_id, message.path)

    # -- the hub's state --------------------------------------------------------------------

    async def _load_status(self) -> None:
        state, status = self.state, self.state.status
        try:
            await state.client.health()
            status.hub_ok = True
            status.vcenters = await state.client.vcenters()
            status.nodes = await state.client.nodes()
        except SendenseError as exc:
            # Said once when the hub goes away; after that the header's "hub ○ down" says it.
            if status.hub_ok or not self._said_down:
                self.post_message(HubFailed(plain(exc)))
            status.hub_ok, self._said_down = False, True
        else:
            self._said_down = False
        finally:
            self.set_timer(
                STATUS_POLL_SECONDS if status.healthy else STATUS_RETRY_SECONDS, self._poll_status
            )

    def _poll_status(self) -> None:
        """Rescheduled after each answer (never on a fixed beat) so polls cannot pile up."""
        self.run_worker(self._load_status(), name="status", group="status")

    async def _follow_events(self) -> None:
        """Feed the store from the event stream, reconnecting with backoff."""
        state, delay = self.state, 0.5
        while True:
            try:
                async for event in state.client.events():
                    state.store.apply(event)
                    delay = 0.5
            except SendenseError as exc:
                state.status.hub_ok = False
                self.log.warning(plain(exc))
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_SECONDS, delay * 2)
            try:
                state.store.load(await state.client.jobs())
                state.store.load_restores(await state.client.restores())
                state.status.hub_ok = True
            except SendenseError:
                continue

    # -- drawing ---------------------------------------------------------------------------

    def _frame(self) -> None:
        """The steady redraw: screens read the store only here, never per event."""
        if self.state.store.version == self._drawn_version:
            return
        self._drawn_version = self.state.store.version
        if isinstance(self.screen, SendenseScreen):
            self.screen.redraw_live()

    # -- actions ---------------------------------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.state.keymap, self.state.config.keymap_file))

    def action_nav(self, where: str) -> None:
        navigate(self.focused, where)


def main() -> None:
    # Textual sizes itself from COLUMNS/LINES when set; a stale exported value (shells and
    # test runners leak them) would draw past the edge of the real terminal.
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
    config = load_config()
    note = ensure_hub(config)
    if note:
        config = reload_token(config)
    app = SendenseApp(config, note=note)
    app.run()
    sys.exit(app.return_code or 0)
