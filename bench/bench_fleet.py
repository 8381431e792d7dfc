"""A night of a fleet in simulation: 10,000 VMs in 20 policies across 50 stand-in nodes, the
queue on MariaDB, the hub's real dispatch decision.

The fleet (bench/fleet_sim.py): 2 vCenters, 100 ESXi hosts in clusters of 10, 60
datastores, VMs with 1-4 disks lognormal around 40 GiB, 30-70 % allocated, a full
backup each (the first night: the most there is to copy). Policy k fires at k x 5 min
and queues its VMs. Stand-in nodes copy nothing: a disk goes at 150 MiB/s at most, a
node's disks share 1 GiB/s, a job spends 60 s on its snapshot and start before its disks
copy. Limits: the shipped per-node, per-host and per-datastore ones (4 jobs and 8 disks
per node, 8 disks per host and per datastore), jobs overall = nodes x 4, and an NBD port
range of 400 (an operator's for 50 nodes; the shipped 101 is simulated beside it).

Measured and printed:

1. The dispatch's wall time per job started (mean, p99 of the rounds), over a night
   whose queue is in memory (``assign`` alone) and one whose queue is in the database
   (the hub's own queries, ``engine.hub.queue.store``: each round's reads of the
   running jobs and of the queue a chunk at a time while anything could start, each
   start's ``take``, each end's write); the database's share. The database reads are
   sampled (every n-th round, checked against the simulation) and extrapolated from a
   fit of their time to the rows read; the print says so.
2. That every limit held, counted from the running jobs at every start: "limits held:
   yes", or the violations and exit status 1.
3. The night's length (simulated) over the lower bound its capacity allows (bandwidth,
   each kind of slot, the busiest host and datastore, the longest job; the largest
   dominates), and whether it fits the night window.
4. ``GET /api/v1/backups`` (and ``?status=queued``) on a real hub process on the same
   database server, with 10,000 finished jobs (last night's, with their disks): p50/p99
   of sequential calls with nothing queued, and with 5,000 jobs queued (the first 500,
   one policy's run, through ``POST /api/v1/backups/queue``, timed; the others as rows
   alike), in alternating blocks (the queued rows deleted and put back between them);
   the nodes disabled, so none starts, while the hub's dispatch still reads the queue
   every round. The ratio queued / idle, and the hub process's CPU share in each state.
5. Where the hub stops scaling, computed from the numbers above.

    .venv/bin/python -m bench fleet [--vms 10000] [--nodes 50] [--policies 20]
        [--queued 5000] [--via-api 500] [--gets 200] [--blocks 4] [--db-reads 500]
        [--sqlite] [--skip-api]

A smoke run: ``--vms 600 --nodes 5 --policies 4 --hosts 10 --datastores 6 --queued 300
--via-api 100 --gets 40`` (about a minute).
"""

from __future__ import annotations

import argparse
import inspect
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bench.fleet_sim import (
    Fleet,
    GiB,
    Limits,
    MemoryQueue,
    MiB,
    Night,
    Pace,
    Round,
    Shape,
    SqlQueue,
    TiB,
    make_fleet,
    night_time,
    queued_values,
    seed,
)
from bench.fleet_sim import lower_bounds as bounds_of
from bench.fleet_sim import simulate as simulate_night
from engine.hub.queue.store import QUEUE_CHUNK

HOUR = 3600.0


def p(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


# ---- 1. the dispatch's cost ------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """A round's database reads: ``fixed + per_row x rows read`` (least squares over
    the rounds that read the database)."""

    fixed: float
    per_row: float
    sampled: int

    @classmethod
    def of(cls, rounds: Sequence[Round]) -> Fit:
        xs = [r.rows for r in rounds]
        ys = [r.read_s for r in rounds]
        if len(set(xs)) < 2:
            return cls(statistics.fmean(ys), 0.0, len(rounds))
        slope, intercept = statistics.linear_regression(xs, ys)
        return cls(max(0.0, intercept), slope, len(rounds))

    def at(self, rows: int) -> float:
        return self.fixed + self.per_row * rows


@dataclass(frozen=True)
class Cost:
    """Wall time of a night's dispatch, split in the decision and the database."""

    assign_s: float
    read_s: float
    write_s: float
    jobs: int
    per_round: list[float]  # the rounds that started a job: their time per job started

    @property
    def total_s(self) -> float:
        return self.assign_s + self.read_s + self.write_s

    @property
    def db_share(self) -> float:
        return (self.read_s + self.write_s) / self.total_s if self.total_s else 0.0


def memory_cost(night: Night) -> Cost:
    rounds = night.rounds
    return Cost(
        assign_s=sum(r.assign_s for r in rounds),
        read_s=sum(r.read_s for r in rounds),
        write_s=sum(r.write_s for r in rounds),
        jobs=night.jobs,
        per_round=[(r.read_s + r.assign_s + r.write_s) / r.started for r in rounds if r.started],
    )


def db_cost(night: Night, fit: Fit) -> Cost:
    """The database night's cost, its reads extrapolated to every round from ``fit``
    (the rounds that read the database weigh with their own times)."""
    rounds = night.rounds
    reads = [r.read_s if r.read_db else fit.at(r.rows) for r in rounds]
    return Cost(
        assign_s=sum(r.assign_s for r in rounds),
        read_s=sum(reads),
        write_s=sum(r.write_s for r in rounds),
        jobs=night.jobs,
        per_round=[
            (r.read_s + r.assign_s + r.write_s) / r.started
            for r in rounds
            if r.started and r.read_db
        ],
    )


def print_cost(label: str, cost: Cost) -> None:
    print(
        f"{label}: {ms(cost.total_s / cost.jobs)} per job started (mean; p99 of the rounds "
        f"{ms(p(cost.per_round, 0.99))}, max {ms(max(cost.per_round))}); total "
        f"{cost.total_s:.1f} s for {cost.jobs} jobs"
    )


def worst_round(fleet: Fleet, limits: Limits, night_queue: int) -> tuple[float, int]:
    """``assign`` over a queue of ``night_queue`` jobs when every node has a job slot
    but no disk room: no job fits, every job is tried on every node (O(queue x nodes),
    what a round costs when the fleet is busy and the queue long). Its best time of 3."""
    from engine.hub.queue.dispatch import Load, assign

    queue = [vm.queued() for vm in fleet.vms[:night_queue]]
    times = []
    for _ in range(3):
        load = Load()
        for node in fleet.nodes:
            load.node_jobs[node.id] = node.max_jobs - 1
            load.node_disks[node.id] = node.max_disks
            load.jobs_total += node.max_jobs - 1
        t = time.perf_counter()
        started = assign(queue, fleet.nodes, load, replace(limits, jobs_total=10**9))
        times.append(time.perf_counter() - t)
        assert not started
    return min(times), len(queue)


# ---- 2. the limits ---------------------------------------------------------------------


def print_limits(nights: dict[str, Night], limits: Limits, shape: Shape) -> bool:
    """The peaks of the first night, and whether every night kept every limit."""
    peaks = next(iter(nights.values())).watch.peaks
    pairs = [
        ("jobs overall", peaks["jobs total"], limits.jobs_total),
        ("disks overall (NBD ports)", peaks["disks total"], limits.disks_total),
        ("jobs per node", peaks["jobs node"], shape.jobs_per_node),
        ("disks per node", peaks["disks node"], shape.disks_per_node),
        ("disks per ESXi host", peaks["disks host"], limits.disks_per_host),
        ("disks per datastore", peaks["disks datastore"], limits.disks_per_datastore),
    ]
    print("  peaks (checked at every job start, counted from the running jobs):")
    for name, peak, limit in pairs:
        print(f"    {name:<28} {peak:5d} of {limit}")
    held = True
    for label, night in nights.items():
        for line in night.watch.violations[:10]:
            print(f"  violation ({label}): {line}")
        if not night.watch.idle():
            print(f"  ({label}): counters not back to zero at the night's end")
        held = held and not night.watch.violations and night.watch.idle()
    print(f"limits held: {'yes' if held else 'NO'} (nights: {', '.join(nights)})")
    return held


# ---- 3. the night against its capacity ---------------------------------------------------


def print_capacity(night: Night, bounds: dict[str, float], window_h: float) -> None:
    bound_name, bound = max(bounds.items(), key=lambda kv: kv[1])
    print(
        f"the night: {night.jobs} jobs, {night.bytes_total / TiB:.1f} TiB in "
        f"{night.makespan / HOUR:.2f} h simulated ({night.bytes_total / night.makespan / GiB:.1f}"
        f" GiB/s on average); wait in the queue: median "
        f"{statistics.median(night.waits) / HOUR:.2f} h, max {max(night.waits) / HOUR:.2f} h"
    )
    print("lower bounds from capacity (the night cannot be shorter than any):")
    for name, seconds in sorted(bounds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<48} {seconds / HOUR:6.2f} h")
    ratio = night.makespan / bound
    fits = night.makespan <= window_h * HOUR
    print(
        f"makespan / lower bound: {ratio:.3f} (bound: {bound_name}); fits a {window_h:g} h "
        f"night: {'yes' if fits else 'NO'} ({night.makespan / HOUR:.2f} h)"
    )


# ---- 4. the API while jobs are queued -----------------------------------------------------


@dataclass(frozen=True)
class Latency:
    p50: float
    p99: float
    calls: int

    @classmethod
    def of(cls, times: Sequence[float]) -> Latency:
        return cls(statistics.median(times), p(times, 0.99), len(times))

    def __str__(self) -> str:
        return f"p50 {ms(self.p50)}, p99 {ms(self.p99)} ({self.calls} calls)"


def timed_gets(get: Callable[[], Any], count: int, warmup: int = 5) -> list[float]:
    """Each call's time, after a few untimed ones."""
    for _ in range(warmup):
        get().raise_for_status()
    times = []
    for _ in range(count):
        t = time.perf_counter()
        answer = get()
        times.append(time.perf_counter() - t)
        answer.raise_for_status()
    return times


def finished_jobs(engine: Any, fleet: Fleet, repository_id: int) -> None:
    """Last night's jobs: one completed full per VM, with its disks' rows."""
    from sqlalchemy import insert

    from engine.db.models import BackupDisk, BackupJob

    yesterday = night_time(0) - timedelta(days=1)
    with engine.begin() as conn:
        for start in range(0, len(fleet.vms), 2000):
            chunk = fleet.vms[start : start + 2000]
            conn.execute(
                insert(BackupJob),
                [
                    {
                        "id": f"backup-{vm.name}-0",
                        "vm_context_id": vm.context_id,
                        "vm_name": vm.name,
                        "repository_id": repository_id,
                        "backup_type": "full",
                        "requested_type": "auto",
                        "status": "completed",
                        "bytes_transferred": sum(vm.sizes),
                        "total_bytes": sum(vm.sizes),
                        "created_at": yesterday + timedelta(seconds=i),
                        "started_at": yesterday + timedelta(seconds=i),
                        "completed_at": yesterday + timedelta(seconds=i + 600),
                    }
                    for i, vm in enumerate(chunk, start)
                ],
            )
            conn.execute(
                insert(BackupDisk),
                [
                    {
                        "backup_job_id": f"backup-{vm.name}-0",
                        "disk_key": 2000 + n,
                        "nbd_export_name": f"backup-{vm.name}-0-{2000 + n}",
                        "qcow2_path": f"/var/tmp/fleet-repository/{vm.name}/{2000 + n}.qcow2",
                        "capacity_bytes": vm.capacities[n],
                        "status": "completed",
                        "bytes_done": size,
                        "bytes_total": size,
                    }
                    for vm in chunk
                    for n, size in enumerate(vm.sizes)
                ],
            )


@dataclass(frozen=True)
class Api:
    idle: dict[str, Latency]
    queued: dict[str, Latency]
    cpu: dict[str, float]  # the hub process's CPU time over wall time, per state, calling
    quiet: dict[str, float]  # ... and between the calls (its own rounds alone)
    how_queued: str
    settled_s: float  # from the hub's health answer to its start's work done
    enqueue_s: float | None  # per job, through the route
    blocks: int

    def ratio(self, call: str, q: str = "p99") -> float:
        return float(getattr(self.queued[call], q) / getattr(self.idle[call], q))


QUIET_S = 3.0

CALLS: dict[str, dict[str, str]] = {
    "GET /api/v1/backups": {},
    "GET /api/v1/backups?status=queued": {"status": "queued"},
}


def cpu_seconds(pid: int) -> float:
    """A process's user and system time so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, limit_s: float = 60.0) -> float:
    """Wait until the hub's start's work is done (two quiet seconds in a row: under 15 %
    of a CPU each), so that it weighs on no state; how long that took."""
    t0 = time.perf_counter()
    quiet = 0
    while quiet < 2 and time.perf_counter() - t0 < limit_s:
        cpu = cpu_seconds(pid)
        time.sleep(1.0)
        quiet = quiet + 1 if cpu_seconds(pid) - cpu < 0.15 else 0
    return time.perf_counter() - t0


def measure_api(home: Path, url: str, fleet: Fleet, args: argparse.Namespace) -> Api:
    """A hub process on ``url``; the calls timed in ``args.blocks`` alternations of idle
    and queued (the queued rows deleted and put back between them), so that a
    machine's load that comes and goes weighs on both states alike. The first
    ``args.via_api`` jobs are queued through the route (timed), the others as the rows
    the route wrote, shaped alike."""
    from sqlalchemy import delete, insert, select

    from engine.config import get_settings
    from engine.credentials import VMwareCredentialService
    from engine.db.models import BackupJob
    from engine.db.session import engine_for, session_scope, upgrade
    from tests.fixtures.services import make_services

    os.environ.update(SENDENSE_HOME=str(home), SENDENSE_CONFIG="", SENDENSE_DATABASE_URL=url)
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(url)
    engine = engine_for(url)
    with session_scope(url) as s:  # a login per vCenter, sealed with the hub's key
        service = VMwareCredentialService(s, settings.key_path)
        credential_of = {
            vc: service.add(host=vc, username="backup", password=secrets.token_urlsafe(16)).id
            for vc in sorted({vm.vcenter for vm in fleet.vms})
        }
    seeded = seed(engine, fleet, credential_of, nodes_enabled=False)
    finished_jobs(engine, fleet, seeded.repository_id)
    is_queued = BackupJob.status == "queued"
    svc = make_services(home, extra_env={"SENDENSE_DATABASE_URL": url})
    svc.start(svc.hub)
    assert svc.hub.proc is not None
    pid = svc.hub.proc.pid
    settled = settle(pid)
    times: dict[str, dict[str, list[float]]] = {"idle": {}, "queued": {}}
    spent = {"idle": [0.0, 0.0], "queued": [0.0, 0.0]}  # CPU, wall
    quiet = {"idle": 0.0, "queued": 0.0}  # CPU over QUIET_S per block
    try:
        with svc.client(timeout=900.0) as api:

            def block(state: str) -> None:
                cpu = cpu_seconds(pid)
                time.sleep(QUIET_S)
                quiet[state] += cpu_seconds(pid) - cpu
                cpu, wall = cpu_seconds(pid), time.perf_counter()
                for call, query in CALLS.items():
                    get = partial(api.get, "/api/v1/backups", params=query)
                    times[state].setdefault(call, []).extend(
                        timed_gets(get, args.gets // args.blocks)
                    )
                spent[state][0] += cpu_seconds(pid) - cpu
                spent[state][1] += time.perf_counter() - wall

            block("idle")
            vms = fleet.vms[: args.queued]
            through = vms[: args.via_api]
            body = {
                "backups": [
                    {"vm_context_id": vm.context_id, "repository_id": seeded.repository_id}
                    for vm in through
                ]
            }
            enqueue_s = None
            t = time.perf_counter()
            answer = api.post("/api/v1/backups/queue", json=body) if through else None
            if answer is not None and answer.is_success:
                enqueue_s = (time.perf_counter() - t) / len(through)
                how = f"({len(through)} through POST /api/v1/backups/queue, the rest as rows alike)"
                rest = vms[len(through) :]
            else:  # the route refused: rows as the hub writes them, said so
                how = "(directly in the database"
                if answer is not None:
                    how += f"; the route answered {answer.status_code}: {answer.text[:200]}"
                how += ")"
                rest = vms
            with engine.begin() as conn:
                if rest:
                    conn.execute(
                        insert(BackupJob),
                        [queued_values(vm, seeded, 2**62 + i, 0.0) for i, vm in enumerate(rest)],
                    )
                rows = [
                    dict(r._mapping)
                    for r in conn.execute(select(BackupJob.__table__).where(is_queued))
                ]
            if len(rows) != args.queued:
                raise SystemExit(f"error: {len(rows)} jobs queued, not {args.queued}")
            for n in range(args.blocks):
                if n:
                    with engine.begin() as conn:
                        conn.execute(insert(BackupJob), rows)
                block("queued")
                with engine.begin() as conn:
                    conn.execute(delete(BackupJob).where(is_queued))
                block("idle")
        return Api(
            idle={c: Latency.of(t) for c, t in times["idle"].items()},
            queued={c: Latency.of(t) for c, t in times["queued"].items()},
            cpu={state: cpu / wall for state, (cpu, wall) in spent.items()},
            quiet={
                "idle": quiet["idle"] / (QUIET_S * (args.blocks + 1)),
                "queued": quiet["queued"] / (QUIET_S * args.blocks),
            },
            how_queued=how,
            settled_s=settled,
            enqueue_s=enqueue_s,
            blocks=args.blocks,
        )
    finally:
        svc.stop()


def print_api(api: Api, queued: int, finished: int) -> None:
    print(
        f"  one hub process; {finished} finished jobs with their disks in both states; "
        f"{queued} queued {api.how_queued}; nodes disabled, so none starts; the hub's start "
        f"settled in {api.settled_s:.0f} s; sequential calls in {api.blocks} alternations "
        f"of idle and queued ({api.blocks + 1} idle blocks), each after 5 untimed"
    )
    if api.enqueue_s is not None:
        print(f"  POST /api/v1/backups/queue: {ms(api.enqueue_s)} per job queued")
    print(
        f"  the hub process's CPU over wall time, with no call ({QUIET_S:g} s before each "
        f"block): idle {api.quiet['idle']:.0%}, queued {api.quiet['queued']:.0%}; during the "
        f"calls: idle {api.cpu['idle']:.0%}, queued {api.cpu['queued']:.0%}"
    )
    for call in CALLS:
        print(f"  {call}")
        print(f"    idle:        {api.idle[call]}")
        print(f"    {queued} queued: {api.queued[call]}")
        print(
            f"    ratio queued / idle: p99 {api.ratio(call):.2f}, p50 {api.ratio(call, 'p50'):.2f}"
        )


# ---- 5. where it stops scaling ------------------------------------------------------------


def qemu_nbd_rss_mib(folder: Path) -> float | None:
    """One qemu-nbd serving a qcow2, as the hub runs one per running disk: its RSS."""
    if shutil.which("qemu-nbd") is None:
        return None
    image = folder / "probe.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "40G"], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["qemu-nbd", "-f", "qcow2", "-b", "127.0.0.1", "-p", str(port), "-x", "probe", "-t"]
    proc = subprocess.Popen(
        [*argv, str(image)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def conclusions(
    *,
    fleet: Fleet,
    limits: Limits,
    night: Night,
    fit: Fit,
    cost: Cost,
    worst: tuple[float, int],
    shipped: tuple[Night, dict[str, float], Limits],
    dispatch_seconds: float,
    api: Api | None,
    rss_mib: float | None,
) -> None:
    from engine.config import CopySettings
    from engine.node.client.copying import DIGESTS_PER_LINE
    from engine.node.copier.digests import DIGEST_SIZE
    from engine.node.copier.engine import copy

    peak_disks = night.watch.peaks["disks total"]
    print("where the hub stops scaling:")
    s_night, s_bounds, s_limits = shipped
    s_name, s_bound = max(s_bounds.items(), key=lambda kv: kv[1])
    rss = (
        f", ~{rss_mib * peak_disks:.0f} MiB of qemu-nbd at {rss_mib:.1f} MiB each"
        if rss_mib
        else ""
    )
    print(
        f"- NBD ports: one export (a qemu-nbd process and a port) per running disk on the one "
        f"hub: the night peaked at {peak_disks} disks{rss}. With the shipped "
        f"{s_limits.disks_total} ports and jobs_total {s_limits.jobs_total} the same night "
        f"takes {s_night.makespan / HOUR:.2f} h (bound {s_bound / HOUR:.2f} h: {s_name}), "
        f"against {night.makespan / HOUR:.2f} h with {limits.disks_total} ports and "
        f"jobs_total {limits.jobs_total}: widen nbd.port_min..port_max and raise "
        "queue.jobs_total with the nodes."
    )
    rounds_per_s = night.jobs / night.makespan + 1 / dispatch_seconds
    worst_s, worst_q = worst
    per_pair = worst_s / worst_q / len(fleet.nodes)
    print(
        f"- The dispatch decision: a round that finds no room tries every queued job on every "
        f"node, O(queue x nodes): {ms(worst_s)} for {worst_q} queued x {len(fleet.nodes)} "
        f"nodes ({per_pair * 1e9:.0f} ns per pair); a night's rounds with room cost "
        f"{ms(cost.assign_s / cost.jobs)} per job."
    )
    rows = [r.rows for r in night.rounds]
    running = night.watch.peaks["jobs total"]
    whole = fit.at(worst_q + running) + worst_s
    saturated = (1 / rounds_per_s - fit.at(running)) / (fit.per_row + per_pair * len(fleet.nodes))
    print(
        f"- The queue's reads: a round reads the running jobs, then the queue "
        f"{QUEUE_CHUNK} at a time while anything could start: {statistics.fmean(rows):.0f} "
        f"rows a round on average (max {max(rows)}; {sum(rows) / night.jobs:.0f} per job "
        f"started), {ms(fit.fixed)} + "
        f"{fit.per_row * 1e6:.1f} us per row (fit over {fit.sampled} rounds read from the "
        f"database); the database is {cost.db_share:.1%} of the dispatch's time per job. "
        f"A round with room in which nothing near the head fits (the queued VMs' hosts or "
        f"datastores full) reads and tries the whole queue: {ms(whole)} for {worst_q} "
        f"queued and {running} running; at {rounds_per_s:.2f} rounds/s (a job end every "
        f"{night.makespan / night.jobs:.1f} s and the {dispatch_seconds:g} s tick) such "
        f"rounds would keep the dispatch busy all the time from ~{max(0.0, saturated):,.0f} "
        "queued jobs."
    )
    print(
        f"- The database's writes: {ms(cost.write_s / cost.jobs)} per job (its take and "
        f"its end, a commit each): the writes alone would fill a connection at "
        f"~{cost.jobs / cost.write_s:.0f} jobs a second; the night needs "
        f"{night.jobs / night.makespan:.2f}."
    )
    if api is not None:
        listing, queued_page = CALLS
        print(
            f"- The API: {listing} with the queue is {api.ratio(listing):.2f}x (p99) and "
            f"{api.ratio(listing, 'p50'):.2f}x (p50) the idle hub's; {queued_page} "
            f"{api.ratio(queued_page):.2f}x (p99) and {api.ratio(queued_page, 'p50'):.2f}x "
            "(p50): a page of queued jobs reads only its stretch of the queue for their "
            "positions (store.positions: the rows before it counted on the index), and "
            "the idle hub answers that page empty, so this ratio is mostly the page's "
            f"own rows. With no call, the hub process's own rounds take {api.quiet['idle']:.0%} "
            f"of a CPU idle and {api.quiet['queued']:.0%} with the queue (3 s windows, "
            "noisy): one process, one GIL, for the API and every round."
        )
        if api.enqueue_s is not None:
            print(
                f"- Queueing: POST /api/v1/backups/queue takes {ms(api.enqueue_s)} per job: "
                f"the night's {fleet.shape.vms} jobs spend "
                f"~{api.enqueue_s * fleet.shape.vms:.0f} s being queued."
            )
    interval = inspect.signature(copy).parameters["interval"].default
    chunk = CopySettings().chunk_size
    rate = night.bytes_total / night.makespan
    digest_lines = rate / (DIGESTS_PER_LINE * chunk)
    print(
        f"- Progress: the one hub process takes every running disk's progress "
        f"({1 / interval:.0f} lines/s each: {peak_disks / interval:,.0f} lines/s at the peak, "
        f"batched per job by each node's relay) and its chunk digests ({DIGEST_SIZE} bytes per "
        f"{chunk // 1024} KiB: {digest_lines:.0f} lines of {DIGESTS_PER_LINE} a second, "
        f"{rate / chunk * DIGEST_SIZE / MiB:.1f} MiB/s at the night's "
        f"{rate / GiB:.1f} GiB/s); how many of those one process takes in is not measured "
        "here."
    )


# ---- the run ---------------------------------------------------------------------------------


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return (
        f"{cpu}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}; load average "
        f"{os.getloadavg()[0]:.1f} (other work on the machine weighs on every wall time)"
    )


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=10_000)
    ap.add_argument("--policies", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--vcenters", type=int, default=2)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--datastores", type=int, default=60)
    ap.add_argument("--jobs-per-node", type=int, default=4)
    ap.add_argument("--disks-per-node", type=int, default=8)
    ap.add_argument("--disks-per-host", type=int, default=8)
    ap.add_argument("--disks-per-datastore", type=int, default=8)
    ap.add_argument("--jobs-total", type=int, help="default: nodes x jobs per node")
    ap.add_argument("--nbd-ports", type=int, default=400)
    ap.add_argument("--disk-mib-s", type=float, default=150.0, help="one disk's copy rate")
    ap.add_argument("--node-mib-s", type=float, default=1024.0, help="one node's bandwidth")
    ap.add_argument("--overhead-s", type=float, default=60.0, help="a job's fixed time")
    ap.add_argument("--stagger-s", type=float, default=300.0, help="between policies' runs")
    ap.add_argument("--window-h", type=float, default=8.0, help="the night window")
    ap.add_argument("--db-reads", type=int, default=500, help="rounds read from the database")
    ap.add_argument("--queued", type=int, default=5000, help="jobs queued for the API part")
    ap.add_argument("--via-api", type=int, default=500, help="of them through the route")
    ap.add_argument("--gets", type=int, default=200, help="timed calls per state and call")
    ap.add_argument("--blocks", type=int, default=4, help="alternations of idle and queued")
    ap.add_argument("--sqlite", action="store_true", help="SQLite instead of MariaDB")
    ap.add_argument("--skip-api", action="store_true", help="no hub process, no API part")
    ap.add_argument("--seed", type=int, default=13)
    return ap.parse_args()


def main() -> None:
    args = parse()
    shape = Shape(
        vms=args.vms,
        policies=args.policies,
        nodes=args.nodes,
        vcenters=args.vcenters,
        hosts=args.hosts,
        datastores=args.datastores,
        jobs_per_node=args.jobs_per_node,
        disks_per_node=args.disks_per_node,
        seed=args.seed,
    )
    limits = Limits(
        jobs_total=args.jobs_total or args.nodes * args.jobs_per_node,
        disks_total=args.nbd_ports,
        disks_per_host=args.disks_per_host,
        disks_per_datastore=args.disks_per_datastore,
    )
    pace = Pace(
        disk_bps=args.disk_mib_s * MiB,
        node_bps=args.node_mib_s * MiB,
        job_overhead_s=args.overhead_s,
        stagger_s=args.stagger_s,
    )
    with tempfile.TemporaryDirectory(prefix="bench-fleet-", dir="/var/tmp") as tmp:
        held = run(Path(tmp), shape, limits, pace, args)
    sys.exit(0 if held else 1)


def run(tmp: Path, shape: Shape, limits: Limits, pace: Pace, args: argparse.Namespace) -> bool:
    from engine.config import NbdSettings, QueueSettings
    from tests.conftest import MariaDB

    fleet = make_fleet(shape)
    print(machine())
    disks = sum(len(vm.sizes) for vm in fleet.vms)
    print(
        f"fleet: {shape.vms} VMs ({disks} disks, {sum(sum(vm.sizes) for vm in fleet.vms) / TiB:.1f}"
        f" TiB allocated of {sum(sum(vm.capacities) for vm in fleet.vms) / TiB:.1f} TiB) in "
        f"{shape.policies} policies (every {pace.stagger_s / 60:g} min), {shape.vcenters} "
        f"vCenters, {shape.hosts} ESXi hosts, {shape.datastores} datastores; {shape.nodes} "
        f"nodes of {shape.jobs_per_node} jobs / {shape.disks_per_node} disks, "
        f"{pace.disk_bps / MiB:.0f} MiB/s per disk, {pace.node_bps / MiB:.0f} MiB/s per node, "
        f"{pace.job_overhead_s:g} s per job before its copy; limits {limits}"
    )
    bounds = bounds_of(fleet, limits, pace)

    t = time.perf_counter()
    memory = simulate_night(fleet, limits, pace, MemoryQueue())
    print(f"night with the queue in memory: simulated in {time.perf_counter() - t:.1f} s")
    mem_cost = memory_cost(memory)

    shipped_limits = Limits(
        QueueSettings().jobs_total,
        NbdSettings().port_max - NbdSettings().port_min + 1,
        limits.disks_per_host,
        limits.disks_per_datastore,
    )
    shipped = simulate_night(fleet, shipped_limits, pace, MemoryQueue())
    shipped_bounds = bounds_of(fleet, shipped_limits, pace)

    server = None if args.sqlite else MariaDB(tmp / "mariadb")
    try:
        if server is not None:
            server.start()

        def new_url(name: str) -> str:
            return server.new_database() if server else f"sqlite:///{tmp / name}.db"

        read_every = max(1, (shape.vms + shape.policies) // max(1, args.db_reads))
        t = time.perf_counter()
        queue = SqlQueue(new_url("night"), fleet, read_every)
        in_db = simulate_night(fleet, limits, pace, queue)
        engine_name = "MariaDB" if server else "SQLite"
        print(
            f"night with the queue in {engine_name}: simulated in {time.perf_counter() - t:.1f} s "
            f"(reads from the database every {read_every} round(s), each checked against the "
            "simulation's queue)"
        )
        if in_db.makespan != memory.makespan:
            raise SystemExit("error: the two nights differ: the queue's order was not kept")
        fit = Fit.of([r for r in in_db.rounds if r.read_db])
        cost = db_cost(in_db, fit)
        print()
        print(f"1. dispatch cost per job (wall time; the {len(memory.rounds)} rounds of a night)")
        print_cost("  queue in memory (assign alone)", mem_cost)
        print_cost(f"  queue in {engine_name} (the hub's queries)", cost)
        print(
            f"  of which: assign {ms(cost.assign_s / cost.jobs)}, reads "
            f"{ms(cost.read_s / cost.jobs)} (extrapolated: {ms(fit.fixed)} + "
            f"{fit.per_row * 1e6:.1f} us per row read, fit over {fit.sampled} rounds), writes "
            f"{ms(cost.write_s / cost.jobs)}; database share {cost.db_share:.1%}; enqueue "
            f"(bulk insert of each policy's rows) {ms(in_db.enqueue_s / in_db.jobs)}/job"
        )
        print(
            f"  ratio: the dispatch's wall time per job / a job's mean simulated duration "
            f"({statistics.fmean(memory.durations):.0f} s): "
            f"{cost.total_s / cost.jobs / statistics.fmean(memory.durations):.1e}"
        )
        print()
        print("2. limits")
        held = print_limits(
            {"queue in memory": memory, f"queue in {engine_name}": in_db}, limits, shape
        )
        print()
        print("3. the night against its capacity")
        print_capacity(memory, bounds, args.window_h)
        print()
        api = None
        if not args.skip_api:
            print("4. GET /api/v1/backups, queued against idle", flush=True)
            t = time.perf_counter()
            api = measure_api(tmp / "home", new_url("api"), fleet, args)
            print_api(api, args.queued, len(fleet.vms))
            print(f"  (the API part took {time.perf_counter() - t:.0f} s)")
            print()
        print("5. conclusion")
        conclusions(
            fleet=fleet,
            limits=limits,
            night=memory,
            fit=fit,
            cost=cost,
            worst=worst_round(
                fleet, limits, min(len(fleet.vms), max(r.queued for r in memory.rounds))
            ),
            shipped=(shipped, shipped_bounds, shipped_limits),
            dispatch_seconds=QueueSettings().dispatch_seconds,
            api=api,
            rss_mib=qemu_nbd_rss_mib(tmp),
        )
        print(f"(load average at the end: {os.getloadavg()[0]:.1f})")
    finally:
        if server is not None:
            server.stop()
    return held


if __name__ == "__main__":
    main()
