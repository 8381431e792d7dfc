"""The hub's watch on its nodes: a heartbeat (the node's health check) every
``fleet.heartbeat_seconds``, and from it which nodes may take jobs.

A node unanswered for ``fleet.down_after_seconds`` is down: the dispatch gives it no new
jobs (its queued work was never bound to it: it goes to another node that serves the
VM's vCenter), and the jobs it runs fail with the reason. The state is in memory; the
database keeps ``last_seen_at``.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.config import Settings
from engine.contract.hub import NodeInfo
from engine.hub.nodes import NodeRef
from engine.hub.queue.dispatch import NodeSlot


class NodeWatch:
    def __init__(self, settings: Settings, token: str) -> None:
        self.settings = settings
        self.token = token

    def beat(self) -> None:
        """One heartbeat round: ask every enabled node for its health."""
        raise NotImplementedError

    def slots(self) -> list[NodeSlot]:
        """The nodes that may take jobs now: enabled and up, with their capacity."""
        raise NotImplementedError

    def pick(self, vcenter_host: str) -> NodeRef:
        """The node for a backup started at once (``POST /backups``): the least loaded up
        node that serves the vCenter; ``NodeUnreachable`` when there is none."""
        raise NotImplementedError

    def mark_down(self, node_id: int, reason: str) -> None:
        """A call to the node failed (a start): down now, not after the heartbeat's wait."""
        raise NotImplementedError

    def down_reason(self, node_id: int) -> str | None:
        """Why the node counts as gone (``node X: no heartbeat for 31 s: <error>``), or None."""
        raise NotImplementedError

    def infos(self, live_rates: Mapping[str, float]) -> list[NodeInfo]:
        """Every node as ``GET /api/v1/nodes`` shows it: state, capacity, load, and
        throughput (``live_rates``: each running job's bytes per second, by backup id)."""
        raise NotImplementedError
