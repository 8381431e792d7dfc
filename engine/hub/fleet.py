"""The hub's watch on its nodes: a heartbeat (the node's health check) every
``fleet.heartbeat_seconds``, and from it which nodes may take jobs.

A node unanswered for ``fleet.down_after_seconds`` is down, and so is a node whose own
health says its tunnel is not up (its forwards, the hub's NBD ports among them, are
gone), and a node a call just failed on (``mark_down``) until it answers again. A down
node gets no new jobs (its queued work was never bound to it: it goes to another node
that serves the VM's vCenter). The jobs it runs fail only when the loss lasts
(``down()``): no heartbeat for the wait, or its tunnel down that long; a tunnel that
reconnects in a second, or one start that timed out, fails nothing that runs. The state is
in memory; the database keeps ``last_seen_at``. Loads (jobs and disks on each node) are
the database's active jobs, so every hub thread and a restarted hub see the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.contract.hub import NodeInfo
from engine.contract.node import NodeHealth
from engine.contract.status import ACTIVE_JOB, NodeState, TunnelState
from engine.db.models import BackupDisk, BackupJob, Node, RestoreDisk, RestoreJob, utcnow
from engine.db.session import session_scope
from engine.errors import SendenseError
from engine.hub.nodes import (
    NodeClient,
    NodeRef,
    NodeUnreachable,
    capacity,
    default_node,
    list_nodes,
    ref_of,
    vcenters_of,
)
from engine.hub.queue.dispatch import NodeSlot

log = logging.getLogger("sendense.hub.fleet")

# Health checks of one round run side by side, at most this many at once.
BEAT_THREADS = 32
BYTES_WINDOW = timedelta(hours=1)
_ACTIVE = [str(s) for s in ACTIVE_JOB]


@dataclass
class _Seen:
    """What the heartbeat knows of one node (monotonic times)."""

    known_since: float  # when this watch first knew of it: its grace starts here
    last_ok: float | None = None
    last_error: str | None = None  # the last round's failure; None once it answered
    health: NodeHealth | None = None  # its last answer
    marked: str | None = None  # a failed call's reason, until it answers again
    tunnel_down_since: float | None = None  # its tunnel's loss began (heartbeat seen)


@dataclass
class _Load:
    """The database's active jobs and their disks per node, and bytes copied lately."""

    jobs: Counter[int] = field(default_factory=Counter)
    disks: Counter[int] = field(default_factory=Counter)
    bytes_recent: Counter[int] = field(default_factory=Counter)
    running: dict[str, int] = field(default_factory=dict)  # backup id: node id


def _tunnel_down(health: NodeHealth) -> str | None:
    """Why the node's tunnel is not up, or None when it has none or it is up. A status
    never written (``updated_at``) is no tunnel at all; ``stopped`` is an orderly end."""
    tunnel = health.tunnel
    if tunnel is None or tunnel.updated_at is None:
        return None
    if tunnel.state in (TunnelState.UP, TunnelState.STOPPED):
        return None
    return f"{tunnel.state}: {tunnel.last_error}" if tunnel.last_error else str(tunnel.state)


class NodeWatch:
    """The heartbeat's memory and the decisions made from it.

    ``standalone`` is a watch outside a hub (the CLI while no hub answers): no start-up
    grace, so a node that does not answer is down at once, and with no node registered
    it watches the default one a hub would register. ``monotonic`` is the clock that
    paces it (tests pass their own).
    """

    def __init__(
        self,
        settings: Settings,
        token: str,
        *,
        standalone: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.token = token
        self.standalone = standalone
        self._now = monotonic
        self._started: float | None = monotonic()  # until the nodes are first loaded
        self._lock = threading.Lock()
        self._seen: dict[int, _Seen] = {}
        self._names: dict[int, str] = {}

    # ---- the heartbeat ---------------------------------------------------------------

    def beat(self) -> None:
        """One heartbeat round: ask every node for its health, side by side. Disabled
        nodes are asked too: one may still finish jobs, and the views show its state."""
        nodes = [ref_of(n) for n in self._nodes()]
        if not nodes:
            return
        with ThreadPoolExecutor(min(BEAT_THREADS, len(nodes)), "heartbeat") as pool:
            answers = list(pool.map(self._ask, nodes))
        now = self._now()
        answered = []
        with self._lock:
            for ref, (health, error) in zip(nodes, answers, strict=True):
                seen = self._seen_of(ref.id, now)
                if health is not None:
                    seen.last_ok, seen.health = now, health
                    seen.last_error = seen.marked = None
                    if _tunnel_down(health) is None:
                        seen.tunnel_down_since = None
                    elif seen.tunnel_down_since is None:
                        seen.tunnel_down_since = now
                    answered.append(ref.id)
                else:
                    seen.last_error = error
        if answered and not self.standalone:
            with session_scope(self.settings.db_url) as s:
                s.execute(update(Node).where(Node.id.in_(answered)).values(last_seen_at=utcnow()))

    def _ask(self, ref: NodeRef) -> tuple[NodeHealth | None, str | None]:
        try:
            return NodeClient(ref, self.token).health(), None
        except NodeUnreachable as exc:
            return None, exc.reason
        except SendenseError as exc:
            return None, str(exc)

    def mark_down(self, node_id: int, reason: str) -> None:
        """A call to the node failed (a start): down now, not after the heartbeat's wait."""
        with self._lock:
            self._seen_of(node_id, self._now()).marked = reason
        log.warning("node %s marked down: %s", self._names.get(node_id, node_id), reason)

    # ---- states ----------------------------------------------------------------------

    def down_reason(self, node_id: int) -> str | None:
        """Why the node counts as gone (``node X: no heartbeat for 31 s (<error>)``), or
        None. A node this watch does not know yet is not gone."""
        with self._lock:
            seen = self._seen.get(node_id)
            name = self._names.get(node_id, str(node_id))
            return self._reason(name, seen, self._now()) if seen else None

    def _reason(self, name: str, seen: _Seen, now: float, *, lasting: bool = False) -> str | None:
        """Why the node takes no new job; with ``lasting``, why its running jobs are lost
        (the same, less what may pass in a moment: a failed call, a tunnel just down)."""
        prefix = f"node {name}"
        if seen.marked is not None and not lasting:
            marked = seen.marked
            return marked if marked.startswith(prefix) else f"{prefix}: {marked}"
        since = seen.last_ok if seen.last_ok is not None else seen.known_since
        if self.standalone and seen.last_ok is None and seen.last_error is not None:
            return f"{prefix}: no heartbeat ({seen.last_error})"
        if now - since > self.settings.fleet.down_after_seconds:
            error = f" ({seen.last_error})" if seen.last_error else ""
            return f"{prefix}: no heartbeat for {int(now - since)} s{error}"
        tunnel = _tunnel_down(seen.health) if seen.health else None
        if tunnel is None:
            return None
        if not lasting:
            return f"{prefix}: its tunnel is down ({tunnel})"
        down_for = now - (seen.tunnel_down_since if seen.tunnel_down_since is not None else now)
        if down_for > self.settings.fleet.down_after_seconds:
            return f"{prefix}: its tunnel is down for {int(down_for)} s ({tunnel})"
        return None

    def down(self) -> dict[int, str]:
        """Every node lost for good enough to fail its running jobs, with the reason
        (for the watch round): no heartbeat, or its tunnel down, for the whole wait."""
        with self._lock:
            now = self._now()
            reasons = {
                i: self._reason(self._names.get(i, str(i)), s, now, lasting=True)
                for i, s in self._seen.items()
            }
        return {i: r for i, r in reasons.items() if r is not None}

    def _seen_of(self, node_id: int, now: float) -> _Seen:
        """The node's record, made when first known (the caller holds the lock)."""
        seen = self._seen.get(node_id)
        if seen is None:
            seen = self._seen[node_id] = _Seen(known_since=now)
        return seen

    def _nodes(self) -> list[Node]:
        """Every registered node (the default one for a standalone watch with none),
        remembered by id; records of nodes no longer registered are dropped."""
        with session_scope(self.settings.db_url) as s:
            nodes = list_nodes(s)
        if not nodes and self.standalone:
            nodes = [default_node(self.settings)]
            nodes[0].id = 0
        now = self._now()
        with self._lock:
            # The nodes there at the start have their grace from the start on.
            known = now if self._started is None else self._started
            self._started = None
            self._names = {n.id: n.name for n in nodes}
            for gone in set(self._seen) - set(self._names):
                del self._seen[gone]
            for n in nodes:
                self._seen_of(n.id, known)
        return nodes

    # ---- capacity and choice ---------------------------------------------------------

    def _usable(self, nodes: Sequence[Node]) -> list[NodeSlot]:
        """Of ``nodes``, those enabled and up, with their capacity."""
        slots = []
        for n in nodes:
            if n.enabled and self.down_reason(n.id) is None:
                max_jobs, max_disks = capacity(n, self.settings)
                slots.append(NodeSlot(n.id, n.name, max_jobs, max_disks, frozenset(vcenters_of(n))))
        return slots

    def slots(self) -> list[NodeSlot]:
        """The nodes that may take jobs now: enabled and up, with their capacity."""
        return self._usable(self._nodes())

    def pick(self, vcenter_host: str) -> NodeRef:
        """The node for a backup started at once (``POST /backups``): the least loaded up
        node that serves the vCenter (by jobs, then disks, of its capacity);
        ``NodeUnreachable`` when there is none. With none up, the nodes are asked once
        more first: one may have come back since the last round."""
        for attempt in range(2):
            if attempt:
                self.beat()
            nodes = self._nodes()
            serving = [n for n in self._usable(nodes) if n.serves(vcenter_host)]
            if serving:
                with session_scope(self.settings.db_url) as s:
                    load = _load(s, recent=False)
                best = min(
                    serving,
                    key=lambda n: (
                        load.jobs[n.id] / n.max_jobs,
                        load.disks[n.id] / n.max_disks,
                        n.id,
                    ),
                )
                return next(ref_of(n) for n in nodes if n.id == best.id)
        raise NodeUnreachable(self._none_serves(nodes, vcenter_host))

    def _none_serves(self, nodes: Sequence[Node], vcenter_host: str) -> str:
        """``no node that serves vCenter X is up: nodes A (down: …), B (serves only Y)``."""
        if not nodes:
            return "no node is registered (sendense nodes add)"
        why = []
        for n in nodes:
            served = vcenters_of(n)
            if not n.enabled:
                why.append(f"{n.name} (disabled)")
            elif served and vcenter_host not in served:
                why.append(f"{n.name} (serves only {', '.join(served)})")
            else:
                reason = self.down_reason(n.id) or "down"
                why.append(f"{n.name} (down: {reason.removeprefix(f'node {n.name}: ')})")
        return f"no node that serves vCenter {vcenter_host} is up: nodes {', '.join(why)}"

    # ---- the views -------------------------------------------------------------------

    def infos(self, live_rates: Mapping[str, float]) -> list[NodeInfo]:
        """Every node as ``GET /api/v1/nodes`` shows it: state, capacity, load, and
        throughput (``live_rates``: each running job's bytes per second, by backup id)."""
        nodes = self._nodes()
        with session_scope(self.settings.db_url) as s:
            load = _load(s, recent=True)
        throughput: dict[int, float] = defaultdict(float)
        for backup_id, rate in live_rates.items():
            node_id = load.running.get(backup_id)
            if node_id is not None:
                throughput[node_id] += rate
        now = self._now()
        out = []
        for n in nodes:
            with self._lock:
                seen = self._seen_of(n.id, now)
                reason = self._reason(n.name, seen, now)
                health, error = seen.health, seen.last_error
            max_jobs, max_disks = capacity(n, self.settings)
            out.append(
                NodeInfo(
                    id=n.id,
                    name=n.name,
                    url=n.url,
                    enabled=n.enabled,
                    state=NodeState.DOWN if reason else NodeState.UP,
                    version=health.version if health else None,
                    jobs_running=health.jobs_running if health else None,
                    tunnel=health.tunnel if health else None,
                    error=reason or error,
                    vcenters=vcenters_of(n),
                    max_jobs=max_jobs,
                    max_disks=max_disks,
                    jobs_active=load.jobs[n.id],
                    disks_active=load.disks[n.id],
                    throughput_bps=throughput[n.id],
                    bytes_last_hour=load.bytes_recent[n.id],
                    last_seen_at=n.last_seen_at,
                )
            )
        return out


def _add(into: Counter[int], rows: Iterable[Any]) -> None:
    """Sum ``(node id, number)`` rows into ``into``."""
    for node_id, value in rows:
        if node_id is not None:
            into[node_id] += int(value or 0)


def _load(s: Session, *, recent: bool) -> _Load:
    """Active backups and VM restores per node, with their disks; with ``recent``, also
    the bytes of each node's jobs running or ended in the last hour, and which node each
    running backup is on."""
    load = _Load()
    kinds = (
        (BackupJob, BackupDisk, BackupDisk.backup_job_id),
        (RestoreJob, RestoreDisk, RestoreDisk.restore_job_id),
    )
    since = utcnow() - BYTES_WINDOW
    for job, disk, job_fk in kinds:
        active = (job.status.in_(_ACTIVE), job.node_id.is_not(None))
        per_node = select(job.node_id).group_by(job.node_id)
        _add(load.jobs, s.execute(per_node.add_columns(func.count()).where(*active)))
        counted = per_node.add_columns(func.count(disk.id)).join(disk, job_fk == job.id)
        _add(load.disks, s.execute(counted.where(*active)))
        if recent:
            lately = or_(job.status.in_(_ACTIVE), job.completed_at >= since)
            summed = per_node.add_columns(func.sum(job.bytes_transferred))
            _add(load.bytes_recent, s.execute(summed.where(job.node_id.is_not(None), lately)))
    if recent:
        running = s.execute(
            select(BackupJob.id, BackupJob.node_id).where(BackupJob.status.in_(_ACTIVE))
        )
        load.running = {b: n for b, n in running if n is not None}
    return load
