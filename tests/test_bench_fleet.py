"""The fleet bench's simulation on a small night (bench/fleet_sim.py), so that the bench
cannot rot between its runs: the real dispatch decision keeps every limit, the night is
never shorter than its capacity allows, and the queue kept in the database (the hub's
own queries) gives the same night as the queue in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fleet_sim import Limits, MemoryQueue, Pace, Shape, SqlQueue, lower_bounds, make_fleet
from bench.fleet_sim import simulate as simulate_night

SHAPE = Shape(vms=200, policies=4, nodes=5, vcenters=2, hosts=12, datastores=6)
LIMITS = Limits(jobs_total=20, disks_total=40, disks_per_host=8, disks_per_datastore=8)
PACE = Pace(stagger_s=120.0)


def test_a_small_night_keeps_every_limit_and_takes_no_less_than_its_capacity_allows() -> None:
    fleet = make_fleet(SHAPE)
    night = simulate_night(fleet, LIMITS, PACE, MemoryQueue())

    assert night.jobs == SHAPE.vms
    assert night.watch.violations == []
    assert night.watch.idle()
    assert night.watch.peaks["jobs total"] == LIMITS.jobs_total  # the limit was reached
    assert night.makespan >= max(lower_bounds(fleet, LIMITS, PACE).values())


@pytest.mark.parametrize("per_host", [1, 3])
def test_a_vm_wider_than_the_host_limit_runs_alone_on_its_host(per_host: int) -> None:
    fleet = make_fleet(SHAPE)
    limits = Limits(jobs_total=20, disks_total=40, disks_per_host=per_host, disks_per_datastore=8)
    night = simulate_night(fleet, limits, PACE, MemoryQueue())

    assert night.jobs == SHAPE.vms
    assert night.watch.violations == []
    assert night.watch.peaks["disks host"] > per_host  # a wider VM ran, alone on its host
    assert night.makespan >= max(lower_bounds(fleet, limits, PACE).values())


def test_the_queue_in_the_database_gives_the_same_night_as_in_memory(tmp_path: Path) -> None:
    fleet = make_fleet(SHAPE)
    in_memory = simulate_night(fleet, LIMITS, PACE, MemoryQueue())
    # Every round reads the database, and each read is checked against the simulation.
    in_db = simulate_night(fleet, LIMITS, PACE, SqlQueue(f"sqlite:///{tmp_path / 'q.db'}", fleet))

    assert in_db.makespan == in_memory.makespan
    assert all(r.read_db for r in in_db.rounds)
    assert in_db.watch.violations == []
