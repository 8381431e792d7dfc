"""``PolicyService``: the one object the policy routes and the scheduler round call."""

from __future__ import annotations

from engine.config import Settings
from engine.contract.policy import Policy, PolicyEdit, PolicyIn, PolicyPreview, PolicyRun
from engine.hub.policies.notify import Notifier
from engine.hub.policies.retention import RetentionService
from engine.hub.queue.dispatcher import Dispatcher


class PolicyService:
    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        retention: RetentionService,
        notifier: Notifier,
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.retention = retention
        self.notifier = notifier

    def add(self, request: PolicyIn) -> Policy:
        raise NotImplementedError

    def edit(self, name: str, request: PolicyEdit) -> Policy:
        raise NotImplementedError

    def get(self, name: str) -> Policy:
        raise NotImplementedError

    def all(self) -> list[Policy]:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def set_enabled(self, name: str, enabled: bool) -> Policy:
        raise NotImplementedError

    def preview(self, name: str) -> PolicyPreview:
        raise NotImplementedError

    def run(self, name: str) -> PolicyRun:
        """``policy run``: resolve and queue now (a manual run)."""
        raise NotImplementedError

    def runs(self, name: str, limit: int = 20) -> list[PolicyRun]:
        raise NotImplementedError

    def run_view(self, run_id: int) -> PolicyRun:
        raise NotImplementedError

    def tick(self) -> None:
        """The scheduler round: fire due runs (once each), and end running runs whose
        every job ended (retention, then the notification)."""
        raise NotImplementedError
