"""Which queued jobs start now, and on which node: first come, first served, skipping a
job that has no room yet (so one busy ESXi host does not hold back the others).

Limits: jobs overall, each node's jobs and disks (its own capacity), disks per ESXi host
(vSphere's NBD transport caps connections per host) and per datastore, and the hub's
NBD ports (one export per disk). A job whose disks alone exceed a disk limit starts
when that counter is at zero, so it waits for room but never starves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine.config import Settings


@dataclass(frozen=True)
class Limits:
    jobs_total: int
    disks_total: int  # the hub's NBD ports
    disks_per_host: int
    disks_per_datastore: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        q = settings.queue
        ports = settings.nbd.port_max - settings.nbd.port_min + 1
        return cls(q.jobs_total, ports, q.disks_per_host, q.disks_per_datastore)


@dataclass(frozen=True)
class NodeSlot:
    """A node that may take jobs now (enabled, heartbeat up), with its capacity."""

    id: int
    name: str
    max_jobs: int
    max_disks: int
    vcenters: frozenset[str] = frozenset()  # empty: serves every vCenter

    def serves(self, vcenter_host: str) -> bool:
        return not self.vcenters or vcenter_host in self.vcenters


@dataclass(frozen=True)
class QueuedJob:
    """What dispatch needs of a queued job: where its VM's disks are read from."""

    backup_id: str
    vcenter_host: str
    esxi_host: str | None
    datastores: tuple[str, ...]  # one entry per disk (a datastore may repeat)

    @property
    def disks(self) -> int:
        return max(1, len(self.datastores))

    @property
    def host_key(self) -> str | None:
        return f"{self.vcenter_host}/{self.esxi_host}" if self.esxi_host else None

    def datastore_counts(self) -> Counter[str]:
        return Counter(f"{self.vcenter_host}/{d}" for d in self.datastores if d)


@dataclass
class Load:
    """What runs now: counters the dispatch fills as it assigns."""

    jobs_total: int = 0
    disks_total: int = 0
    node_jobs: Counter[int] = field(default_factory=Counter)
    node_disks: Counter[int] = field(default_factory=Counter)
    host_disks: Counter[str] = field(default_factory=Counter)
    datastore_disks: Counter[str] = field(default_factory=Counter)

    def add(self, job: QueuedJob, node_id: int | None) -> None:
        self._change(job, node_id, 1)

    def remove(self, job: QueuedJob, node_id: int | None) -> None:
        self._change(job, node_id, -1)

    def _change(self, job: QueuedJob, node_id: int | None, sign: int) -> None:
        """``node_id`` None: a job whose node was deleted still holds the hub's ports
        and its host's and datastores' room."""
        self.jobs_total += sign
        self.disks_total += sign * job.disks
        if node_id is not None:
            self.node_jobs[node_id] += sign
            self.node_disks[node_id] += sign * job.disks
        if job.host_key:
            self.host_disks[job.host_key] += sign * job.disks
        for key, count in job.datastore_counts().items():
            self.datastore_disks[key] += sign * count

    @classmethod
    def of(cls, running: Iterable[tuple[QueuedJob, int | None]]) -> Load:
        load = cls()
        for job, node_id in running:
            load.add(job, node_id)
        return load


@dataclass(frozen=True)
class Assignment:
    job: QueuedJob
    node: NodeSlot


def _fits(used: int, adding: int, limit: int) -> bool:
    return used + adding <= limit or used == 0


def _node_room(node: NodeSlot, job: QueuedJob, load: Load) -> bool:
    return load.node_jobs[node.id] < node.max_jobs and _fits(
        load.node_disks[node.id], job.disks, node.max_disks
    )


def _shared_block(job: QueuedJob, load: Load, limits: Limits) -> str | None:
    """Why a job cannot start on any node now; None when only the nodes decide."""
    if load.jobs_total >= limits.jobs_total:
        return f"the hub runs its limit of {limits.jobs_total} job(s)"
    if not _fits(load.disks_total, job.disks, limits.disks_total):
        return f"the hub's {limits.disks_total} NBD ports are in use"
    if job.host_key and not _fits(load.host_disks[job.host_key], job.disks, limits.disks_per_host):
        return f"ESXi host {job.esxi_host} has its limit of {limits.disks_per_host} disk(s) running"
    for key, count in job.datastore_counts().items():
        if not _fits(load.datastore_disks[key], count, limits.disks_per_datastore):
            name = key.split("/", 1)[1]
            return f"datastore {name} has its limit of {limits.disks_per_datastore} disk(s) running"
    return None


def _least_loaded(nodes: Iterable[NodeSlot], load: Load) -> NodeSlot | None:
    best: NodeSlot | None = None
    best_key: tuple[float, float, int] | None = None
    for node in nodes:
        key = (
            load.node_jobs[node.id] / node.max_jobs,
            load.node_disks[node.id] / node.max_disks,
            node.id,
        )
        if best_key is None or key < best_key:
            best, best_key = node, key
    return best


def has_room(nodes: Sequence[NodeSlot], load: Load, limits: Limits) -> bool:
    """Whether any job at all could start: the hub below its job limit and its ports
    not all taken, and some node below its job count (the queue need not be read when
    not)."""
    return (
        load.jobs_total < limits.jobs_total
        and load.disks_total < limits.disks_total
        and any(load.node_jobs[n.id] < n.max_jobs for n in nodes)
    )


def no_room_reason(nodes: Sequence[NodeSlot], load: Load, limits: Limits) -> str | None:
    """Why no job at all can start now (``has_room`` false), in words; None when some can."""
    if not nodes:
        return "no node is up and enabled"
    if load.jobs_total >= limits.jobs_total:
        return f"the hub runs its limit of {limits.jobs_total} job(s)"
    if load.disks_total >= limits.disks_total:
        return f"the hub's {limits.disks_total} NBD ports are in use"
    if all(load.node_jobs[n.id] >= n.max_jobs for n in nodes):
        return "every node runs its limit of jobs"
    return None


def assign(
    queue: Sequence[QueuedJob], nodes: Sequence[NodeSlot], load: Load, limits: Limits
) -> list[Assignment]:
    """The jobs of ``queue`` (in queue order) that start now, each on the least loaded
    node that serves its vCenter and has room; ``load`` is updated with them."""
    out: list[Assignment] = []
    full_vcenters: set[str] = set()  # no node of it has room: skip its jobs quickly
    for job in queue:
        if load.jobs_total >= limits.jobs_total:
            break
        if job.vcenter_host in full_vcenters or _shared_block(job, load, limits):
            continue
        serving = [n for n in nodes if n.serves(job.vcenter_host)]
        node = _least_loaded((n for n in serving if _node_room(n, job, load)), load)
        if node is None:
            if all(load.node_jobs[n.id] >= n.max_jobs for n in serving):
                full_vcenters.add(job.vcenter_host)
            continue
        load.add(job, node.id)
        out.append(Assignment(job, node))
    return out


def waiting_reason(job: QueuedJob, nodes: Sequence[NodeSlot], load: Load, limits: Limits) -> str:
    """Why a queued job has not started, in words for ``backup show`` and the console."""
    shared = _shared_block(job, load, limits)
    if shared:
        return shared
    serving = [n for n in nodes if n.serves(job.vcenter_host)]
    if not serving:
        return f"no node that serves vCenter {job.vcenter_host} is up"
    if not any(_node_room(n, job, load) for n in serving):
        names = ", ".join(n.name for n in serving)
        return f"every node that serves vCenter {job.vcenter_host} is full ({names})"
    return "next in line"
