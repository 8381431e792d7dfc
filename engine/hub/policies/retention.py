"""Retention: which points a policy keeps (GFS), and expiring the rest without ever
breaking a chain: a point another builds on is merged into its child, not deleted."""

from __future__ import annotations

from engine.config import Settings
from engine.contract.policy import RetentionPlan
from engine.hub.restores.manager import RestoreManager
from engine.hub.restores.merge import ChainMerges, Readers


class RetentionService:
    def __init__(
        self, settings: Settings, chains: ChainMerges, restores: RestoreManager, readers: Readers
    ) -> None:
        self.settings = settings
        self.chains = chains
        self.restores = restores
        self.readers = readers

    def plan(self, policy: str | None = None) -> RetentionPlan:
        """What expiring would do now, for one policy or every one (nothing is done)."""
        raise NotImplementedError

    def apply(self, policy_id: int) -> list[str]:
        """Expire what the policy's retention lets go; one line per point expired, or
        left for a later run with why."""
        raise NotImplementedError
