"""Notifications of policy runs through Apprise (mail, webhooks, chat): one message per
run with every VM's outcome, bytes and duration, and every failure's reason."""

from __future__ import annotations

from engine.contract.policy import PolicyRun


class Notifier:
    def send(self, urls: list[str], run: PolicyRun) -> str | None:
        """Send the run's message to every URL; the error (secrets hidden) when any failed."""
        raise NotImplementedError


def seal_urls(key: bytes, urls: list[str]) -> bytes | None:
    """The URLs sealed for the database (AES-256-GCM with the master key); None for none."""
    raise NotImplementedError


def open_urls(key: bytes, sealed: bytes | None) -> list[str]:
    raise NotImplementedError


def redact(url: str) -> str:
    """The URL as an answer or a log may show it: Apprise's privacy form, with its tokens
    and passwords hidden."""
    raise NotImplementedError
