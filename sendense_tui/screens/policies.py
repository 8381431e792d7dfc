"""Policies: each with its schedule, next run, last run (its state and how many of its
VMs were backed up) and what it keeps; enter opens one (``PolicyScreen``).

Times are in each policy's own timezone, the one its schedule is read in. A run's jobs
reach the console as events; when one of them moves, the list is asked for again (and
every few seconds while a run is on), so a run that ends shows here without a key.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from engine.contract.policy import Policy, PolicyRun
from engine.contract.status import PolicyRunStatus
from sendense_tui import policy_text
from sendense_tui.keymap import bindings
from sendense_tui.screens.lists import ListScreen
from sendense_tui.screens.policy import PolicyScreen, policy_jobs
from sendense_tui.screens.policy_keys import PolicyKeys
from sendense_tui.state import ConsoleState

PATHS_SHOWN = 1


class PoliciesScreen(PolicyKeys, ListScreen[Policy]):
    COLUMNS = ("name", "on", "schedule", "next run", "last run", "keeps", "takes")
    NOTE = "enter opens a policy, a adds one; times in each policy's timezone"
    BINDINGS = bindings(
        "policies.open",
        "policies.add",
        "policies.edit",
        "policies.run",
        "policies.toggle",
        "policies.delete",
        "policies.refresh",
    )

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(state)
        self._jobs_seen: object = None

    def fetch(self) -> Awaitable[list[Policy]]:
        return self.state.client.policies()

    def reload(self) -> None:
        self.action_refresh()

    def show(self, items: list[Policy]) -> None:
        super().show(items)
        running = PolicyRunStatus.RUNNING
        self.again_while(any(p.last_run and p.last_run.status is running for p in items))

    def row(self, item: Policy) -> list[Any]:
        zone = item.timezone
        next_run = policy_text.when(item.next_run_at, zone)
        takes = item.include[0] if item.include else ""
        if len(item.include) > PATHS_SHOWN:
            takes += f" +{len(item.include) - PATHS_SHOWN}"
        if item.exclude:
            takes += f", {len(item.exclude)} out"
        return [
            item.name,
            policy_text.enabled_text(item.enabled),
            f"{item.schedule}  {zone}",
            next_run or Text("—", style="dim"),
            policy_text.last_run(item),
            policy_text.retention_words(item.retention),
            takes,
        ]

    def redraw_live(self) -> None:
        """A policy's job that moved (queued, started, ended): the list again."""
        seen = policy_jobs(self.state, None)
        if seen != self._jobs_seen:
            if self._jobs_seen is not None:
                self.action_refresh()
            self._jobs_seen = seen

    # -- the keys -----------------------------------------------------------------------

    def chosen_policy(self) -> Policy | None:
        return self.current()

    def policy_changed(self, policy: Policy | None) -> None:
        self.action_refresh()

    def run_started(self, run: PolicyRun) -> None:
        policy = next((p for p in self.items if p.id == run.policy_id), self.current())
        if policy is not None:
            self.app.push_screen(PolicyScreen(self.state, policy, run.id))

    def action_open_policy(self) -> None:
        policy = self.current()
        if policy is not None:
            self.app.push_screen(PolicyScreen(self.state, policy))

    def on_data_table_row_selected(self, _: DataTable.RowSelected) -> None:
        self.action_open_policy()
