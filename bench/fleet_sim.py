"""A night of backups in simulated time, for bench_fleet: a generated fleet (vCenters,
clusters of ESXi hosts with their datastores, VMs with 1-4 disks of lognormal sizes,
policies, nodes), and a discrete-event run of it that drives the hub's real dispatch
decision (``engine.hub.queue.dispatch.assign``) once per job end and per policy run,
exactly as the hub does, with stand-in nodes that copy nothing.

A stand-in node copies each running disk at ``Pace.disk_bps`` at most, its disks
sharing ``Pace.node_bps`` equally; a job holds its slots for ``Pace.job_overhead_s``
(snapshot, plan, the client's start and end) before its disks copy, and until its last
disk is done (the hub counts a job's disks until the job ends). Only wall time spent in
the dispatch (the queue's read, ``assign``, the queue's writes) is measured; the night
itself is simulated time.

The queue is kept either in memory or in the database the way the hub keeps it
(``backup_jobs`` rows ``queued`` in ``queue_order``; see ``SqlQueue``), so that the
cost per job can include the database's reads and writes.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice, zip_longest
from typing import Protocol, TypeVar

from sqlalchemy import Connection, Engine, Insert, insert, update

from engine.db.models import (
    BackupJob,
    BackupPolicy,
    BackupRepository,
    Node,
    PolicyRun,
    VMDisk,
    VMReplicationContext,
)
from engine.db.session import engine_for, session_scope, upgrade
from engine.hub.queue import store
from engine.hub.queue.dispatch import (
    Assignment,
    Limits,
    Load,
    NodeSlot,
    QueuedJob,
    assign,
    has_room,
)

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
T = TypeVar("T")

# The night's start in the database's rows; simulated time counts from here.
NIGHT = datetime(2026, 12, 1, 22, 0)


@dataclass(frozen=True)
class Shape:
    """How big the fleet is and how it is laid out."""

    vms: int = 10_000
    policies: int = 20
    nodes: int = 50
    vcenters: int = 2
    hosts: int = 100
    datastores: int = 60
    jobs_per_node: int = 4
    disks_per_node: int = 8
    seed: int = 13


@dataclass(frozen=True)
class Pace:
    """How fast the stand-in nodes copy, and when the policies fire."""

    disk_bps: float = 150 * MiB  # one disk's read over NBD
    node_bps: float = 1 * GiB  # one node's network and repository write
    job_overhead_s: float = 60.0  # snapshot, plan and exports, the client's start and end
    stagger_s: float = 300.0  # policy k fires at k x stagger_s


@dataclass(frozen=True)
class VM:
    name: str
    vcenter: str
    esxi_host: str
    datastores: tuple[str, ...]
    capacities: tuple[int, ...]
    sizes: tuple[int, ...]  # allocated bytes per disk: what a full backup copies
    policy: int

    @property
    def backup_id(self) -> str:
        return f"backup-{self.name}-1"

    @property
    def context_id(self) -> str:
        return f"ctx-{self.name}-20261201-220000"

    def queued(self) -> QueuedJob:
        return QueuedJob(self.backup_id, self.vcenter, self.esxi_host, self.datastores)


@dataclass(frozen=True)
class Fleet:
    shape: Shape
    vms: list[VM]
    nodes: list[NodeSlot]

    def of_policy(self, k: int) -> list[VM]:
        return [vm for vm in self.vms if vm.policy == k]


def make_fleet(shape: Shape) -> Fleet:
    """Clusters of ~10 hosts, each cluster in one vCenter with its own datastores; a VM
    runs on a host of its cluster and keeps its disks mostly on one datastore. Disks are
    lognormal around 40 GiB (1 GiB to 4 TiB), 30-70 % allocated. A fifth of the nodes
    serve every vCenter, the others one each."""
    rng = random.Random(shape.seed)
    clusters = max(1, min(max(shape.vcenters, shape.hosts // 10), shape.hosts, shape.datastores))
    hosts: list[list[str]] = [[] for _ in range(clusters)]
    stores: list[list[str]] = [[] for _ in range(clusters)]
    for h in range(shape.hosts):
        hosts[h % clusters].append(f"esx-{h:03d}")
    for d in range(shape.datastores):
        stores[d % clusters].append(f"ds-{d:03d}")
    vms = []
    for i in range(shape.vms):
        c = rng.randrange(clusters)
        count = rng.choices((1, 2, 3, 4), weights=(50, 30, 15, 5))[0]
        first = rng.choice(stores[c])
        datastores = tuple(
            first if n == 0 or rng.random() < 0.7 else rng.choice(stores[c]) for n in range(count)
        )
        capacities = tuple(
            min(4 * TiB, max(GiB, round(rng.lognormvariate(math.log(40), 0.8)) * GiB))
            for _ in range(count)
        )
        sizes = tuple(int(cap * rng.uniform(0.3, 0.7)) for cap in capacities)
        vms.append(
            VM(
                name=f"vm{i:05d}",
                vcenter=f"vc{c % shape.vcenters + 1}.example.net",
                esxi_host=rng.choice(hosts[c]),
                datastores=datastores,
                capacities=capacities,
                sizes=sizes,
                policy=i * shape.policies // shape.vms,
            )
        )
    nodes = []
    for n in range(shape.nodes):
        serves = (
            frozenset()
            if shape.vcenters == 1 or n % 5 == 4
            else frozenset({f"vc{n % shape.vcenters + 1}.example.net"})
        )
        nodes.append(
            NodeSlot(n + 1, f"node{n + 1:02d}", shape.jobs_per_node, shape.disks_per_node, serves)
        )
    return Fleet(shape, vms, nodes)


# ---- the queue ----------------------------------------------------------------------


class Queue(Protocol):
    """Where the queue lives: its reads and writes are what the dispatch pays besides
    ``assign``. A round reads as the hub's does (``Dispatcher._dispatch``): the jobs
    that hold room first, then the queue a chunk at a time while anything could start."""

    # Whether this round reads the database (a round whose cost is measured with it).
    read_db: bool

    def __len__(self) -> int: ...

    def enqueue(self, vms: Sequence[VM], at: float) -> None: ...

    def running(self) -> int:
        """A round begins: the jobs that hold room, read; how many."""
        ...

    def chunks(self) -> Generator[list[QueuedJob], None, None]:
        """The queue in queue order, ``store.QUEUE_CHUNK`` jobs at a time."""
        ...

    def started(self, assignments: Sequence[Assignment], at: float) -> None: ...

    def ended(self, backup_id: str, bytes_done: int, at: float) -> None: ...


class MemoryQueue:
    """The queue as a dict in queue order: no database, only ``assign``'s cost."""

    read_db = False

    def __init__(self) -> None:
        self.jobs: dict[str, QueuedJob] = {}
        self.active = 0

    def __len__(self) -> int:
        return len(self.jobs)

    def enqueue(self, vms: Sequence[VM], at: float) -> None:
        for vm in vms:
            self.jobs[vm.backup_id] = vm.queued()

    def running(self) -> int:
        return self.active

    def chunks(self) -> Generator[list[QueuedJob], None, None]:
        jobs = iter(self.jobs.values())
        while chunk := list(islice(jobs, store.QUEUE_CHUNK)):
            yield chunk

    def started(self, assignments: Sequence[Assignment], at: float) -> None:
        for a in assignments:
            del self.jobs[a.job.backup_id]
        self.active += len(assignments)

    def ended(self, backup_id: str, bytes_done: int, at: float) -> None:
        self.active -= 1


def night_time(at: float) -> datetime:
    return NIGHT + timedelta(seconds=at)


@dataclass(frozen=True)
class Seeded:
    """The rows a fleet's jobs refer to."""

    repository_id: int
    run_of: dict[int, int]  # policy index: its night's policy_runs id


def seed(
    engine: Engine,
    fleet: Fleet,
    credential_of: dict[str, int] | None = None,
    nodes_enabled: bool = True,
) -> Seeded:
    """The fleet as the hub's rows: a repository, the nodes (at a closed port: stand-ins
    that no real call reaches), each VM's context (with its ESXi host and, when given, its
    vCenter's credential) and disks (with their datastores), the policies and tonight's
    run of each."""
    credential_of = credential_of or {}
    with engine.begin() as conn:
        repository_id = _new_id(
            conn, insert(BackupRepository).values(name="fleet", path="/var/tmp/fleet-repository")
        )
        conn.execute(
            insert(Node),
            [
                {
                    "id": n.id,
                    "name": n.name,
                    "url": "http://127.0.0.1:9",
                    "enabled": nodes_enabled,
                    "vcenters": json.dumps(sorted(n.vcenters)),
                    "max_jobs": n.max_jobs,
                    "max_disks": n.max_disks,
                }
                for n in fleet.nodes
            ],
        )
        for chunk in _chunks(fleet.vms, 2000):
            conn.execute(
                insert(VMReplicationContext),
                [
                    {
                        "context_id": vm.context_id,
                        "vm_name": vm.name,
                        "vmware_vm_id": f"vm-{vm.name[2:]}",
                        "vm_path": f"/DC/vm/policy{vm.policy + 1:02d}/{vm.name}",
                        "vcenter_host": vm.vcenter,
                        "datacenter": "DC",
                        "credential_id": credential_of.get(vm.vcenter),
                        "power_state": "poweredOn",
                        "cbt_enabled": True,
                        "esxi_host": vm.esxi_host,
                    }
                    for vm in chunk
                ],
            )
            conn.execute(
                insert(VMDisk),
                [
                    {
                        "vm_context_id": vm.context_id,
                        "disk_key": 2000 + n,
                        "capacity_bytes": vm.capacities[n],
                        "datastore": ds,
                        "vmdk_path": f"[{ds}] {vm.name}/{vm.name}_{n}.vmdk",
                    }
                    for vm in chunk
                    for n, ds in enumerate(vm.datastores)
                ],
            )
        run_of = {}
        for k in range(fleet.shape.policies):
            policy_id = _new_id(
                conn,
                insert(BackupPolicy).values(
                    name=f"policy{k + 1:02d}",
                    repository_id=repository_id,
                    schedule=f"{5 * k % 60} {(22 + 5 * k // 60) % 24} * * *",
                    includes=json.dumps([f"/DC/vm/policy{k + 1:02d}"]),
                ),
            )
            run_of[k] = _new_id(
                conn,
                insert(PolicyRun).values(
                    policy_id=policy_id, trigger="schedule", scheduled_for=NIGHT
                ),
            )
    return Seeded(repository_id, run_of)


def _new_id(conn: Connection, statement: Insert) -> int:
    key = conn.execute(statement).inserted_primary_key
    assert key is not None
    return int(key[0])


class SqlQueue:
    """The queue in the hub's tables, read and written with the hub's own queries
    (``engine.hub.queue.store``): each round reads the jobs that hold room
    (``running_jobs``: the hub rebuilds its ``Load`` from them) and then the queue a
    chunk at a time (``queued_jobs``) while anything could start; the started ones leave
    the queue with ``take`` (one transaction per round); each job's end is written on
    its own. A policy run's jobs are inserted as queued rows in one go (the hub's own
    enqueue checks each VM first: the API part of the bench goes through it).

    Every write goes to the database. The reads come from the database every
    ``read_every``-th round (and are checked to agree with the simulation's queue and
    running jobs), from the simulation's own otherwise: a whole night of them would
    take the bench far longer than the night's decisions. The caller extrapolates, and
    says so."""

    def __init__(self, url: str, fleet: Fleet, read_every: int = 1) -> None:
        upgrade(url)
        self.url = url
        self.engine: Engine = engine_for(url)
        self.seeded = seed(self.engine, fleet)
        self.read_every = read_every
        self.rounds = 0
        self.read_db = False
        self.mirror = MemoryQueue()
        self.active: set[str] = set()
        self.order = 0

    def __len__(self) -> int:
        return len(self.mirror)

    def enqueue(self, vms: Sequence[VM], at: float) -> None:
        rows = []
        for vm in vms:
            self.order += 1
            rows.append(queued_values(vm, self.seeded, int(at * 1e9) + self.order, at))
        with self.engine.begin() as conn:
            for chunk in _chunks(rows, 2000):
                conn.execute(insert(BackupJob), chunk)
        self.mirror.enqueue(vms, at)

    def running(self) -> int:
        self.read_db = self.rounds % self.read_every == 0
        self.rounds += 1
        if not self.read_db:
            return len(self.active)
        with session_scope(self.url) as s:
            running = store.running_jobs(s)
        if {job.backup_id for job, _ in running} != self.active:
            raise RuntimeError("the database's running jobs and the simulation's disagree")
        return len(running)

    def chunks(self) -> Generator[list[QueuedJob], None, None]:
        if not self.read_db:
            yield from self.mirror.chunks()
            return
        with session_scope(self.url) as s:
            for chunk, mine in zip_longest(store.queued_jobs(s), self.mirror.chunks()):
                if chunk != mine:
                    raise RuntimeError("the database's queue and the simulation's disagree")
                yield chunk

    def started(self, assignments: Sequence[Assignment], at: float) -> None:
        if not assignments:
            return
        self.mirror.started(assignments, at)
        with session_scope(self.url) as s:
            for a in assignments:
                if not store.take(s, a.job.backup_id, a.node.id):
                    raise RuntimeError(f"{a.job.backup_id} was not queued in the database")
                self.active.add(a.job.backup_id)

    def ended(self, backup_id: str, bytes_done: int, at: float) -> None:
        self.mirror.ended(backup_id, bytes_done, at)
        self.active.discard(backup_id)
        with self.engine.begin() as conn:
            conn.execute(
                update(BackupJob)
                .where(BackupJob.id == backup_id)
                .values(
                    status="completed",
                    completed_at=night_time(at),
                    bytes_transferred=bytes_done,
                    total_bytes=bytes_done,
                )
            )


def queued_values(vm: VM, seeded: Seeded, order: int, at: float) -> dict[str, object]:
    """A queued ``backup_jobs`` row of the VM's job, as ``store.queued_row`` makes it."""
    return {
        "id": vm.backup_id,
        "vm_context_id": vm.context_id,
        "vm_name": vm.name,
        "repository_id": seeded.repository_id,
        "backup_type": "auto",
        "requested_type": "auto",
        "status": "queued",
        "queue_order": order,
        "policy_run_id": seeded.run_of[vm.policy],
        "created_at": night_time(at),
    }


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- the night ----------------------------------------------------------------------


@dataclass
class Round:
    """One dispatch round: the queue's length, the jobs it started, its wall times."""

    queued: int  # the queue's length
    started: int
    read_db: bool  # the reads were the database's (else the simulation's own)
    rows: int  # jobs read: the running ones, and the queue's chunks read
    read_s: float
    assign_s: float
    write_s: float  # the started jobs' flips, and the job ends written since the last round


class Watch:
    """The limits as a node and vCenter see them: counted from the running jobs
    themselves (not from dispatch's ``Load``), checked at every job start, the only
    event at which a counter grows. A disk counter may exceed its limit only while one
    job alone holds it (dispatch lets a job bigger than a limit start on an idle
    counter, so that it never starves)."""

    def __init__(self, limits: Limits, nodes: Sequence[NodeSlot]) -> None:
        self.limits = limits
        self.nodes = {n.id: n for n in nodes}
        self.jobs: Counter[str] = Counter()  # "total", "node:ID", "host:KEY", "ds:KEY"
        self.disks: Counter[str] = Counter()
        self.peaks: Counter[str] = Counter()  # "jobs total", "disks per host", ...
        self.violations: list[str] = []

    @staticmethod
    def _keys(job: QueuedJob, node_id: int) -> Iterator[tuple[str, str, int]]:
        """(counter, kind, disks) for each counter the job adds to."""
        yield "total", "total", job.disks
        yield f"node:{node_id}", "node", job.disks
        if job.host_key:
            yield f"host:{job.host_key}", "host", job.disks
        for key, count in job.datastore_counts().items():
            yield f"ds:{key}", "datastore", count

    def add(self, job: QueuedJob, node_id: int, at: float) -> None:
        for key, kind, disks in self._keys(job, node_id):
            self.jobs[key] += 1
            self.disks[key] += disks
            self.peaks[f"disks {kind}"] = max(self.peaks[f"disks {kind}"], self.disks[key])
            if kind in ("total", "node"):
                self.peaks[f"jobs {kind}"] = max(self.peaks[f"jobs {kind}"], self.jobs[key])
            jobs_limit, disks_limit = self._limit(kind, node_id)
            if jobs_limit is not None and self.jobs[key] > jobs_limit:
                self.violations.append(f"t={at:.0f}s {key}: {self.jobs[key]} jobs > {jobs_limit}")
            if self.disks[key] > disks_limit and self.jobs[key] > 1:
                self.violations.append(
                    f"t={at:.0f}s {key}: {self.disks[key]} disks > {disks_limit}"
                )

    def remove(self, job: QueuedJob, node_id: int) -> None:
        for key, _, disks in self._keys(job, node_id):
            self.jobs[key] -= 1
            self.disks[key] -= disks

    def _limit(self, kind: str, node_id: int) -> tuple[int | None, int]:
        """(jobs limit or None, disks limit) of a counter kind."""
        if kind == "total":
            return self.limits.jobs_total, self.limits.disks_total
        if kind == "node":
            node = self.nodes[node_id]
            return node.max_jobs, node.max_disks
        if kind == "host":
            return None, self.limits.disks_per_host
        return None, self.limits.disks_per_datastore

    def idle(self) -> bool:
        return not +self.jobs and not +self.disks


@dataclass
class _NodeCopy:
    """A stand-in node's copying disks: all progress alike (an equal share of the node's
    bandwidth, at most one disk's rate), so one progress counter ``done`` (bytes per
    disk since the start) and each disk's end on that counter describe them."""

    done: float = 0.0
    at: float = 0.0
    rate: float = 0.0
    ends: list[tuple[float, str]] = field(default_factory=list)  # (done at its end, backup)
    version: int = 0

    def advance(self, now: float) -> None:
        self.done += self.rate * (now - self.at)
        self.at = now


@dataclass
class Night:
    """What happened: the night's length, every round, each job's wait, the limits."""

    makespan: float
    rounds: list[Round]
    enqueue_s: float
    waits: list[float]
    durations: list[float]  # each job's, start to end
    watch: Watch
    bytes_total: int
    jobs: int


class _Run:
    """One simulated night (see the module's docstring)."""

    RELEASE, COPY, NODE = 0, 1, 2

    def __init__(self, fleet: Fleet, limits: Limits, pace: Pace, queue: Queue) -> None:
        self.fleet, self.limits, self.pace, self.queue = fleet, limits, pace, queue
        self.load = Load()
        self.watch = Watch(limits, fleet.nodes)
        self.vm_of = {vm.backup_id: vm for vm in fleet.vms}
        self.copies = {n.id: _NodeCopy() for n in fleet.nodes}
        self.running: dict[str, tuple[QueuedJob, int]] = {}  # backup id: (job, node id)
        self.disks_left: dict[str, int] = {}
        self.queued_at: dict[str, float] = {}
        self.started_at: dict[str, float] = {}
        self.durations: list[float] = []
        self.events: list[tuple[float, int, int, object]] = []
        self.seq = 0
        self.rounds: list[Round] = []
        self.waits: list[float] = []
        self.enqueue_s = 0.0
        self.pending_write_s = 0.0
        self.last_end = 0.0

    def push(self, at: float, kind: int, ref: object) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, ref))

    def run(self) -> Night:
        for k in range(self.fleet.shape.policies):
            self.push(k * self.pace.stagger_s, self.RELEASE, k)
        while self.events:
            now, _, kind, ref = heapq.heappop(self.events)
            if kind == self.RELEASE:
                assert isinstance(ref, int)
                self.release(ref, now)
            elif kind == self.COPY:
                assert isinstance(ref, str)
                self.copy(ref, now)
            else:
                assert isinstance(ref, tuple)
                node_id, version = ref
                self.node_step(node_id, version, now)
        if self.queued_at and len(self.waits) < len(self.queued_at):
            raise RuntimeError(f"{len(self.queued_at) - len(self.waits)} jobs never started")
        return Night(
            makespan=self.last_end,
            rounds=self.rounds,
            enqueue_s=self.enqueue_s,
            waits=self.waits,
            durations=self.durations,
            watch=self.watch,
            bytes_total=sum(sum(vm.sizes) for vm in self.fleet.vms),
            jobs=len(self.waits),
        )

    def release(self, k: int, now: float) -> None:
        """Policy k's run queues one job per VM, then a round (as the hub does)."""
        vms = self.fleet.of_policy(k)
        t = time.perf_counter()
        self.queue.enqueue(vms, now)
        self.enqueue_s += time.perf_counter() - t
        for vm in vms:
            self.queued_at[vm.backup_id] = now
        self.dispatch(now)

    def dispatch(self, now: float) -> None:
        """One round as the hub's: the running jobs read, then the queue a chunk at a
        time through ``assign`` while anything could start (``has_room``)."""
        nodes, load, limits = self.fleet.nodes, self.load, self.limits
        queued = len(self.queue)
        t = time.perf_counter()
        rows = self.queue.running()
        read_s = time.perf_counter() - t
        t = time.perf_counter()
        room = has_room(nodes, load, limits)
        assign_s = time.perf_counter() - t
        out: list[Assignment] = []
        if room:
            chunks = self.queue.chunks()
            while room:
                t = time.perf_counter()
                chunk = next(chunks, None)
                read_s += time.perf_counter() - t
                if chunk is None:
                    break
                rows += len(chunk)
                t = time.perf_counter()
                out += assign(chunk, nodes, load, limits)
                room = has_room(nodes, load, limits)
                assign_s += time.perf_counter() - t
            t = time.perf_counter()
            chunks.close()
            read_s += time.perf_counter() - t
        t = time.perf_counter()
        self.queue.started(out, now)
        write_s = time.perf_counter() - t + self.pending_write_s
        self.rounds.append(
            Round(queued, len(out), self.queue.read_db, rows, read_s, assign_s, write_s)
        )
        self.pending_write_s = 0.0
        for a in out:
            backup_id = a.job.backup_id
            self.watch.add(a.job, a.node.id, now)
            self.running[backup_id] = (a.job, a.node.id)
            self.disks_left[backup_id] = a.job.disks
            self.waits.append(now - self.queued_at[backup_id])
            self.started_at[backup_id] = now
            self.push(now + self.pace.job_overhead_s, self.COPY, backup_id)

    def copy(self, backup_id: str, now: float) -> None:
        """The job's snapshot is taken: its disks start copying on its node."""
        node_id = self.running[backup_id][1]
        node = self.copies[node_id]
        node.advance(now)
        for size in self.vm_of[backup_id].sizes:
            heapq.heappush(node.ends, (node.done + size, backup_id))
        self.reschedule(node_id, now)

    def node_step(self, node_id: int, version: int, now: float) -> None:
        """A node's next disk end: the disks that are done leave; a job whose last disk
        is done ends, and a round follows each end."""
        node = self.copies[node_id]
        if version != node.version:
            return  # superseded: the node's disks changed since this was planned
        node.advance(now)
        ended = []
        while node.ends and node.ends[0][0] <= node.done + 1.0:
            _, backup_id = heapq.heappop(node.ends)
            self.disks_left[backup_id] -= 1
            if self.disks_left[backup_id] == 0:
                ended.append(backup_id)
        self.reschedule(node_id, now)
        for backup_id in ended:
            self.end(backup_id, now)
            self.dispatch(now)

    def end(self, backup_id: str, now: float) -> None:
        job, node_id = self.running.pop(backup_id)
        self.load.remove(job, node_id)
        self.watch.remove(job, node_id)
        t = time.perf_counter()
        self.queue.ended(backup_id, sum(self.vm_of[backup_id].sizes), now)
        self.pending_write_s += time.perf_counter() - t
        self.durations.append(now - self.started_at[backup_id])
        self.last_end = max(self.last_end, now)

    def reschedule(self, node_id: int, now: float) -> None:
        node = self.copies[node_id]
        node.version += 1
        count = len(node.ends)
        node.rate = min(self.pace.disk_bps, self.pace.node_bps / count) if count else 0.0
        if count:
            due = now + max(0.0, node.ends[0][0] - node.done) / node.rate
            self.push(due, self.NODE, (node_id, node.version))


def simulate(fleet: Fleet, limits: Limits, pace: Pace, queue: Queue) -> Night:
    """Run the night: every policy fires on its stagger, every VM is backed up once."""
    return _Run(fleet, limits, pace, queue).run()


# ---- what capacity allows -------------------------------------------------------------


def lower_bounds(fleet: Fleet, limits: Limits, pace: Pace) -> dict[str, float]:
    """Lower bounds on the night's length (seconds from the first policy's run), one
    per resource; the night cannot be shorter than the largest.

    A job lasts at least its overhead plus its largest disk at one disk's rate, and
    holds each of its disks' slots that long. Policy k's jobs cannot start before its
    run: a shared resource's bound is the largest, over k, of policy k's start plus the
    work queued from then on over the resource's capacity."""
    releases = [k * pace.stagger_s for k in range(fleet.shape.policies)]

    def job_s(vm: VM) -> float:
        return pace.job_overhead_s + max(vm.sizes) / pace.disk_bps

    def released(work: dict[int, float], capacity: float) -> float:
        return max(
            r + sum(work.get(j, 0.0) for j in range(k, len(releases))) / capacity
            for k, r in enumerate(releases)
        )

    by_bytes: defaultdict[int, float] = defaultdict(float)
    by_job_s: defaultdict[int, float] = defaultdict(float)
    by_disk_s: defaultdict[int, float] = defaultdict(float)
    host_disk_s: defaultdict[str, float] = defaultdict(float)
    ds_disk_s: defaultdict[str, float] = defaultdict(float)
    host_widest: Counter[str] = Counter()
    ds_widest: Counter[str] = Counter()
    longest = 0.0
    for vm in fleet.vms:
        seconds = job_s(vm)
        by_bytes[vm.policy] += sum(vm.sizes)
        by_job_s[vm.policy] += seconds
        by_disk_s[vm.policy] += seconds * len(vm.sizes)
        host = f"{vm.vcenter}/{vm.esxi_host}"
        host_disk_s[host] += seconds * len(vm.sizes)
        host_widest[host] = max(host_widest[host], len(vm.sizes))
        for ds, count in Counter(vm.datastores).items():
            key = f"{vm.vcenter}/{ds}"
            ds_disk_s[key] += seconds * count
            ds_widest[key] = max(ds_widest[key], count)
        longest = max(longest, releases[vm.policy] + seconds)
    node_bps = sum(min(pace.node_bps, n.max_disks * pace.disk_bps) for n in fleet.nodes)
    bounds = {
        "the nodes' bandwidth": released(by_bytes, node_bps),
        "the NBD ports (disks overall)": released(by_disk_s, limits.disks_total),
        "jobs overall": released(by_job_s, limits.jobs_total),
        "the nodes' job slots": released(by_job_s, sum(n.max_jobs for n in fleet.nodes)),
        "the nodes' disk slots": released(by_disk_s, sum(n.max_disks for n in fleet.nodes)),
        "the busiest ESXi host": max(
            s / max(limits.disks_per_host, host_widest[h]) for h, s in host_disk_s.items()
        ),
        "the busiest datastore": max(
            s / max(limits.disks_per_datastore, ds_widest[d]) for d, s in ds_disk_s.items()
        ),
        "the longest job": longest,
    }
    vcenters = sorted({vm.vcenter for vm in fleet.vms})
    if any(n.vcenters for n in fleet.nodes):
        for vc in vcenters:
            serving = [n for n in fleet.nodes if n.serves(vc)]
            vc_bytes: defaultdict[int, float] = defaultdict(float)
            for vm in fleet.vms:
                if vm.vcenter == vc:
                    vc_bytes[vm.policy] += sum(vm.sizes)
            bps = sum(min(pace.node_bps, n.max_disks * pace.disk_bps) for n in serving)
            bounds[f"the bandwidth of the nodes serving {vc}"] = released(vc_bytes, bps)
    return bounds
