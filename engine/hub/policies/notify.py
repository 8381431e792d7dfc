"""Notifications of policy runs through Apprise (mail, webhooks, chat): one message per
run with every VM's outcome, bytes and duration, and every failure's reason."""

from __future__ import annotations

from engine.contract.policy import PolicyRun


class Notifier:
    def send(self, urls: list[str], run: PolicyRun) -> str | None:
        """Send the run's message to every URL; the error (secrets hidden) when any failed."""
        raise NotImplementedError
