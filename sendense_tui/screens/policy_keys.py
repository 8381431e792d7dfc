"""What the policies list and one policy's screen share: the keys add, edit, run now,
enable/disable, delete (running and deleting ask first; the add and edit forms are
``PolicyModal``), and asking again while a run is on: a run ends after its last job,
and the hub sends no event of its own for that. A screen says which policy the keys
act on and what it does after."""

from __future__ import annotations

from collections.abc import Callable

from textual.timer import Timer

from engine.contract.hub import Repository
from engine.contract.policy import Policy, PolicyRun
from sendense_tui.screens.base import SendenseScreen
from sendense_tui.screens.modals import ConfirmModal
from sendense_tui.screens.policy_modal import PolicyModal
from sendense_tui.state import ConsoleState

RUN_POLL_SECONDS = 2.0


class PolicyKeys(SendenseScreen):
    def __init__(self, state: ConsoleState) -> None:
        super().__init__(state)
        self._again: Timer | None = None

    # -- what a screen says -------------------------------------------------------------------

    def chosen_policy(self) -> Policy | None:
        """The policy the keys act on (the list's cursor, or the screen's own)."""
        raise NotImplementedError

    def policy_changed(self, policy: Policy | None) -> None:
        """After a save, an enable or disable (the hub's answer), or a delete (None)."""
        raise NotImplementedError

    def run_started(self, run: PolicyRun) -> None:
        """After ``run now``: the hub's run, its VMs queued."""
        raise NotImplementedError

    def reload(self) -> None:
        """What the screen shows, asked of the hub again."""
        raise NotImplementedError

    def again_while(self, running: bool) -> None:
        """While a run is on, ``reload`` once more in a moment (one waiting at a time)."""
        if running and self._again is None:
            self._again = self.set_timer(RUN_POLL_SECONDS, self._reload_again)

    def _reload_again(self) -> None:
        self._again = None
        self.reload()

    # -- the keys -------------------------------------------------------------------------

    def _chosen(self) -> Policy | None:
        policy = self.chosen_policy()
        if policy is None:
            self.notify("No policy here yet: add one on the policies screen.", severity="warning")
        return policy

    def _with_repositories(self, then: Callable[[], object]) -> None:
        """The hub's repositories asked again first: the form picks one of them."""

        def arrived(repositories: list[Repository]) -> None:
            self.state.set_repositories(repositories)
            then()

        self.call_hub(self.state.client.repositories(), arrived, name="repositories")

    def _saved(self, policy: Policy | None) -> None:
        if policy is not None:
            self.notify(f"Policy {policy.name} saved.")
            self.policy_changed(policy)

    def action_add_policy(self) -> None:
        """A new policy, its paths those of the VMs marked in the inventory."""
        include = sorted(path for _, path in self.state.marks)
        self._with_repositories(
            lambda: self.app.push_screen(PolicyModal(self.state, include=include), self._saved)
        )

    def action_edit_policy(self) -> None:
        policy = self._chosen()
        if policy is not None:
            self._with_repositories(
                lambda: self.app.push_screen(PolicyModal(self.state, policy), self._saved)
            )

    def action_run_policy(self) -> None:
        policy = self._chosen()
        if policy is None:
            return

        def decided(yes: bool | None) -> None:
            if yes:
                self.call_hub(self.state.client.run_policy(policy.name), self.run_started, "run")

        question = (
            f"Run policy {policy.name} now? Its VMs are resolved now and each gets a backup, "
            "queued; the hub starts them as its limits allow."
        )
        self.app.push_screen(ConfirmModal(question, yes="Yes, run it now"), decided)

    def action_toggle_policy(self) -> None:
        policy = self._chosen()
        if policy is None:
            return

        def toggled(answer: Policy) -> None:
            self.notify(f"Policy {answer.name} {'enabled' if answer.enabled else 'disabled'}.")
            self.policy_changed(answer)

        request = self.state.client.set_policy_enabled(policy.name, not policy.enabled)
        self.call_hub(request, toggled, name="toggle")

    def action_delete_policy(self) -> None:
        policy = self._chosen()
        if policy is None:
            return

        def deleted(_: None) -> None:
            self.notify(f"Policy {policy.name} deleted.")
            self.policy_changed(None)

        def decided(yes: bool | None) -> None:
            if yes:
                self.call_hub(self.state.client.delete_policy(policy.name), deleted, "delete")

        question = f"Delete policy {policy.name}? It will not run again."
        self.app.push_screen(ConfirmModal(question, yes="Yes, delete it"), decided)
