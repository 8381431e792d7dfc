"""The dispatch decision alone (engine/hub/queue/dispatch.py): which queued jobs start
now and on which node, within every limit, first come first served, skipping a job
that has no room yet; and the words that say why a job still waits."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.hub.queue.dispatch import (
    Limits,
    Load,
    NodeSlot,
    QueuedJob,
    assign,
    has_room,
    no_room_reason,
    waiting_reason,
)

ROOMY = Limits(jobs_total=100, disks_total=1000, disks_per_host=100, disks_per_datastore=100)


def job(
    n: int, host: str = "host-1", disks: tuple[str, ...] = ("ds1",), vc: str = "vc1"
) -> QueuedJob:
    return QueuedJob(f"backup-{n}", vc, host, disks)


def node(
    i: int, max_jobs: int = 10, max_disks: int = 100, vcenters: tuple[str, ...] = ()
) -> NodeSlot:
    return NodeSlot(i, f"node{i}", max_jobs, max_disks, frozenset(vcenters))


def started(assignments: list) -> list[str]:
    return [a.job.backup_id for a in assignments]


def test_jobs_start_in_queue_order_when_all_fit() -> None:
    queue = [job(i, host=f"host-{i}") for i in range(5)]
    out = assign(queue, [node(1)], Load(), ROOMY)
    assert started(out) == [f"backup-{i}" for i in range(5)]


def test_a_job_without_room_is_skipped_and_the_next_one_starts() -> None:
    limits = Limits(jobs_total=10, disks_total=100, disks_per_host=2, disks_per_datastore=100)
    queue = [
        job(1, host="h1", disks=("ds1", "ds1")),
        job(2, host="h1"),  # h1 is full after job 1
        job(3, host="h2"),
        job(4, host="h1"),
    ]
    load = Load()
    out = assign(queue, [node(1)], load, limits)
    assert started(out) == ["backup-1", "backup-3"]
    assert waiting_reason(queue[1], [node(1)], load, limits) == (
        "ESXi host h1 has its limit of 2 disk(s) running"
    )


def test_the_hub_wide_job_limit_stops_the_round() -> None:
    limits = Limits(jobs_total=3, disks_total=100, disks_per_host=100, disks_per_datastore=100)
    queue = [job(i, host=f"h{i}") for i in range(6)]
    load = Load.of([(job(99, host="other"), 1)])  # one runs already
    out = assign(queue, [node(1)], load, limits)
    assert started(out) == ["backup-0", "backup-1"]
    assert load.jobs_total == 3
    assert waiting_reason(queue[2], [node(1)], load, limits) == "the hub runs its limit of 3 job(s)"


def test_the_hubs_nbd_ports_bound_the_disks_running() -> None:
    limits = Limits(jobs_total=100, disks_total=4, disks_per_host=100, disks_per_datastore=100)
    queue = [
        job(1, host="h1", disks=("a", "b", "c")),
        job(2, host="h2", disks=("a", "b")),  # 3 + 2 > 4
        job(3, host="h3", disks=("a",)),
    ]
    load = Load()
    out = assign(queue, [node(1)], load, limits)
    assert started(out) == ["backup-1", "backup-3"]
    assert load.disks_total == 4
    assert waiting_reason(queue[1], [node(1)], load, limits) == "the hub's 4 NBD ports are in use"


def test_disks_per_datastore_are_counted_per_vcenter_and_datastore() -> None:
    limits = Limits(jobs_total=100, disks_total=100, disks_per_host=100, disks_per_datastore=2)
    queue = [
        job(1, host="h1", disks=("ds1", "ds2")),
        job(2, host="h2", disks=("ds1",)),
        job(3, host="h3", disks=("ds1",)),  # ds1 has 2 now
        job(4, host="h4", disks=("ds1",), vc="vc2"),  # vc2's ds1 is another datastore
        job(5, host="h5", disks=("ds2",)),
    ]
    load = Load()
    out = assign(queue, [node(1)], load, limits)
    assert started(out) == ["backup-1", "backup-2", "backup-4", "backup-5"]
    assert load.datastore_disks == Counter({"vc1/ds1": 2, "vc1/ds2": 2, "vc2/ds1": 1})
    assert waiting_reason(queue[2], [node(1)], load, limits) == (
        "datastore ds1 has its limit of 2 disk(s) running"
    )


def test_a_nodes_own_job_and_disk_capacity_hold() -> None:
    nodes = [node(1, max_jobs=2, max_disks=100), node(2, max_jobs=100, max_disks=3)]
    queue = [job(i, host=f"h{i}", disks=("a", "b")) for i in range(5)]
    load = Load()
    out = assign(queue, nodes, load, ROOMY)
    per_node = Counter(a.node.id for a in out)
    # node 1: two jobs; node 2: one 2-disk job, then 2 + 2 > 3 disks.
    assert per_node == Counter({1: 2, 2: 1})
    assert load.node_disks[2] == 2
    assert waiting_reason(queue[4], nodes, load, ROOMY) == (
        "every node that serves vCenter vc1 is full (node1, node2)"
    )


def test_each_job_goes_to_the_least_loaded_node() -> None:
    nodes = [node(1, max_jobs=4), node(2, max_jobs=4), node(3, max_jobs=2)]
    load = Load.of([(job(90, host="x"), 1)])  # node 1 runs one already
    queue = [job(i, host=f"h{i}") for i in range(4)]
    out = assign(queue, nodes, load, ROOMY)
    # By share of max_jobs: node 2 (0/4), node 3 (0/2), then nodes 1 and 2 tie at 1/4
    # (the lower id first), then node 2 (1/4 against 2/4 and 1/2).
    assert [a.node.id for a in out] == [2, 3, 1, 2]
    assert load.node_jobs == Counter({1: 2, 2: 2, 3: 1})


def test_a_node_serves_only_its_vcenters() -> None:
    nodes = [node(1, vcenters=("vc-a",)), node(2, vcenters=("vc-b",))]
    queue = [job(1, vc="vc-b"), job(2, vc="vc-a"), job(3, vc="vc-c")]
    load = Load()
    out = assign(queue, nodes, load, ROOMY)
    assert [(a.job.backup_id, a.node.id) for a in out] == [("backup-1", 2), ("backup-2", 1)]
    assert waiting_reason(queue[2], nodes, load, ROOMY) == "no node that serves vCenter vc-c is up"


def test_a_node_with_no_vcenters_listed_serves_every_vcenter() -> None:
    out = assign([job(1, vc="anywhere")], [node(1)], Load(), ROOMY)
    assert started(out) == ["backup-1"]


def test_a_job_larger_than_a_limit_starts_alone_once_that_counter_is_zero() -> None:
    limits = Limits(jobs_total=100, disks_total=100, disks_per_host=2, disks_per_datastore=100)
    big = job(1, host="h1", disks=("a", "b", "c", "d"))
    busy = Load.of([(job(90, host="h1"), 1)])
    assert assign([big], [node(1)], busy, limits) == []
    assert waiting_reason(big, [node(1)], busy, limits) == (
        "ESXi host h1 has its limit of 2 disk(s) running"
    )
    idle = Load()
    assert started(assign([big, job(2, host="h1")], [node(1)], idle, limits)) == ["backup-1"]
    assert idle.host_disks["vc1/h1"] == 4


def test_a_node_smaller_than_a_job_takes_it_when_idle() -> None:
    small = node(1, max_disks=2)
    big = job(1, disks=("a", "b", "c"))
    assert started(assign([big], [small], Load(), ROOMY)) == ["backup-1"]


def test_a_job_with_no_esxi_host_known_is_limited_by_the_rest() -> None:
    limits = Limits(jobs_total=100, disks_total=100, disks_per_host=1, disks_per_datastore=100)
    queue = [QueuedJob(f"backup-{i}", "vc1", None, ("a",)) for i in range(3)]
    assert len(assign(queue, [node(1)], Load(), limits)) == 3


def test_the_first_in_line_with_room_is_next_in_line() -> None:
    assert waiting_reason(job(1), [node(1)], Load(), ROOMY) == "next in line"


def test_a_running_job_whose_node_was_deleted_still_holds_the_hubs_room() -> None:
    limits = Limits(jobs_total=1, disks_total=100, disks_per_host=100, disks_per_datastore=100)
    load = Load.of([(job(90), None)])
    assert assign([job(1, host="h2")], [node(1)], load, limits) == []
    assert load.node_jobs == Counter()


def test_removing_a_job_gives_its_room_back() -> None:
    load = Load()
    running = job(1, disks=("a", "b"))
    load.add(running, 1)
    load.remove(running, 1)
    assert (load.jobs_total, load.disks_total) == (0, 0)
    assert all(v == 0 for v in (*load.host_disks.values(), *load.datastore_disks.values()))


# ---- any queue --------------------------------------------------------------------------

hosts = st.sampled_from(["h1", "h2", "h3", None])
datastores = st.lists(st.sampled_from(["ds1", "ds2", "ds3", ""]), min_size=0, max_size=4)
vcenters = st.sampled_from(["vc1", "vc2"])


@st.composite
def queues(draw: st.DrawFn) -> list[QueuedJob]:
    shapes = draw(st.lists(st.tuples(vcenters, hosts, datastores), max_size=40))
    return [QueuedJob(f"backup-{i}", vc, h, tuple(d)) for i, (vc, h, d) in enumerate(shapes)]


@st.composite
def fleets(draw: st.DrawFn) -> list[NodeSlot]:
    count = draw(st.integers(0, 4))
    return [
        NodeSlot(
            i + 1,
            f"node{i + 1}",
            draw(st.integers(1, 5)),
            draw(st.integers(1, 8)),
            frozenset(draw(st.sets(vcenters, max_size=2))),
        )
        for i in range(count)
    ]


limits_any = st.builds(
    Limits,
    jobs_total=st.integers(1, 12),
    disks_total=st.integers(1, 20),
    disks_per_host=st.integers(1, 6),
    disks_per_datastore=st.integers(1, 6),
)


def _fits(used: int, adding: int, limit: int) -> bool:
    """The rule, written again: within the limit, or alone on a counter at zero."""
    return used + adding <= limit or used == 0


@settings(max_examples=300, deadline=None)
@given(queue=queues(), nodes=fleets(), limits=limits_any, running=queues())
def test_limits_hold_for_any_queue(
    queue: list[QueuedJob], nodes: list[NodeSlot], limits: Limits, running: list[QueuedJob]
) -> None:
    """Replaying the assignments on the load they started from: every start had room on
    every counter, on a node that serves its vCenter; nothing left waiting could still
    start (each has a reason); the queue's order is kept."""
    ids = [n.id for n in nodes] or [None]
    before = [(j, ids[i % len(ids)]) for i, j in enumerate(running)]
    load = Load.of(before)
    out = assign(queue, nodes, load, limits)

    replay = Load.of(before)
    for a in out:
        j, n = a.job, a.node
        assert n.serves(j.vcenter_host)
        assert replay.jobs_total < limits.jobs_total
        assert _fits(replay.disks_total, j.disks, limits.disks_total)
        if j.host_key:
            assert _fits(replay.host_disks[j.host_key], j.disks, limits.disks_per_host)
        for key, count in j.datastore_counts().items():
            assert _fits(replay.datastore_disks[key], count, limits.disks_per_datastore)
        assert replay.node_jobs[n.id] < n.max_jobs
        assert _fits(replay.node_disks[n.id], j.disks, n.max_disks)
        replay.add(j, n.id)
    assert replay == load

    order = [j.backup_id for j in queue]
    assert started(out) == sorted(started(out), key=order.index)
    assigned = set(started(out))
    for j in queue:
        if j.backup_id not in assigned:
            assert waiting_reason(j, nodes, load, limits) != "next in line"


def test_there_is_room_only_below_the_hubs_limits_and_with_a_node_not_full() -> None:
    limits = Limits(jobs_total=2, disks_total=3, disks_per_host=100, disks_per_datastore=100)
    nodes = [node(1, max_jobs=1)]
    assert has_room(nodes, Load(), limits)
    assert not has_room([], Load(), limits)
    assert not has_room(nodes, Load.of([(job(1), 1)]), limits)  # the node's one job
    assert not has_room([*nodes, node(2)], Load.of([(job(1), 1), (job(2), 2)]), limits)
    ports = Load.of([(job(1, disks=("a", "b", "c")), 2)])
    assert not has_room(nodes, ports, limits)


def test_when_nothing_can_start_every_queued_job_hears_the_one_reason_why() -> None:
    limits = Limits(jobs_total=2, disks_total=3, disks_per_host=100, disks_per_datastore=100)
    nodes = [node(1, max_jobs=1), node(2, max_jobs=1)]
    assert no_room_reason(nodes, Load(), limits) is None
    assert no_room_reason([], Load(), limits) == "no node is up and enabled"
    two = Load.of([(job(1), 1), (job(2), 2)])
    assert no_room_reason(nodes, two, limits) == "the hub runs its limit of 2 job(s)"
    wide = Limits(jobs_total=9, disks_total=3, disks_per_host=100, disks_per_datastore=100)
    assert no_room_reason(nodes, two, wide) == "every node runs its limit of jobs"
    ports = Load.of([(job(1, disks=("a", "b", "c")), 1)])
    assert no_room_reason(nodes, ports, wide) == "the hub's 3 NBD ports are in use"
    # Whenever there is no room there is a reason, and the other way round.
    for load in (Load(), two, ports):
        for fleet in ([], nodes):
            for lim in (limits, wide):
                assert (no_room_reason(fleet, load, lim) is None) == has_room(fleet, load, lim)
