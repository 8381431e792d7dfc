"""The hub's watch on its nodes (engine/hub/fleet.py) and the node routes and commands.

The heartbeat asks real ``sendense node`` processes (and ports where nothing listens);
the watch's own clock is the test's, so "silent for 31 s" takes no waiting. Loads are
rows in a real database (SQLite and MariaDB).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from engine.config import Settings, get_settings
from engine.contract.hub import NodeEdit, NodeIn, NodeInfo, TunnelStatus
from engine.contract.status import JobStatus, TunnelState
from engine.db.models import BackupDisk, BackupJob, Node, utcnow
from engine.db.session import session_scope, upgrade
from engine.hub.fleet import NodeWatch
from engine.hub.nodes import NodeUnreachable, add_node, edit_node
from engine.hub.queue.dispatch import NodeSlot
from engine.node.tunnel.status import STATUS_FILE, write_status
from tests.conftest import free_port
from tests.fixtures.backups import seed_vm
from tests.fixtures.services import Services, make_services

MiB = 1024 * 1024
CONTEXT = "ctx-pgtest1-20251006-203401"  # seed_vm's pgtest1
NODES = "/api/v1/nodes"


class Ticks:
    """The watch's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def register(settings: Settings, name: str, url: str, **fields: object) -> int:
    with session_scope(settings.db_url) as s:
        return add_node(s, NodeIn(name=name, url=url, **fields)).id


def nowhere() -> str:
    """A URL where nothing listens: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def info_of(watch: NodeWatch, name: str, rates: dict[str, float] | None = None) -> NodeInfo:
    return next(i for i in watch.infos(rates or {}) if i.name == name)


@pytest.fixture
def db_settings(db_url: str, sendense_home: object, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on a fresh database of each engine, with small [queue] per-node limits."""
    monkeypatch.setenv("SENDENSE_DATABASE_URL", db_url)
    monkeypatch.setenv("SENDENSE_QUEUE__JOBS_PER_NODE", "3")
    monkeypatch.setenv("SENDENSE_QUEUE__DISKS_PER_NODE", "5")
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.db_url)
    return settings


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """One real ``sendense node`` for the heartbeat tests (a node start is seconds)."""
    svc = make_services(tmp_path_factory.mktemp("shared-node"))
    svc.start(svc.node)
    yield svc
    svc.stop()


@pytest.fixture
def node_process(shared_node: Services, settings: Settings) -> Services:
    """The shared node, and this test's database migrated to register it in."""
    upgrade(settings.db_url)
    return shared_node


# ---- the heartbeat -----------------------------------------------------------------


def test_a_node_that_answers_is_up_and_one_silent_too_long_is_down(
    node_process: Services, settings: Settings
) -> None:
    live = register(settings, "live", node_process.node.url)
    dead = register(settings, "dead", nowhere())
    ticks = Ticks()
    watch = NodeWatch(settings, node_process.token, monotonic=ticks)
    watch.beat()
    assert watch.down_reason(live) is None
    answered = info_of(watch, "live")
    assert answered.state == "up" and answered.version and answered.jobs_running == 0
    assert answered.last_seen_at is not None and answered.error is None
    # Never answered since the watch began: up (it may be starting) until the wait passes.
    silent = info_of(watch, "dead")
    assert silent.state == "up" and silent.error and silent.last_seen_at is None
    assert watch.down_reason(dead) is None

    ticks.now += settings.fleet.down_after_seconds + 1
    watch.beat()
    assert watch.down_reason(live) is None
    reason = watch.down_reason(dead)
    assert reason is not None and reason.startswith("node dead: no heartbeat for 31 s (")
    assert [s.name for s in watch.slots()] == ["live"]

    with session_scope(settings.db_url) as s:  # the way to it is gone (its host moved)
        edit_node(s, "live", NodeEdit(url=nowhere()))
    watch.beat()
    assert watch.down_reason(live) is None  # answered a moment ago
    ticks.now += settings.fleet.down_after_seconds + 1
    watch.beat()
    reason = watch.down_reason(live)
    assert reason is not None and reason.startswith("node live: no heartbeat for 31 s (")
    assert watch.slots() == []
    with pytest.raises(NodeUnreachable) as refused:
        watch.pick("vc1.example")
    assert str(refused.value).startswith(
        "no node that serves vCenter vc1.example is up: nodes live (down: no heartbeat for 31 s"
    )
    assert watch.down() == {live: watch.down_reason(live), dead: watch.down_reason(dead)}


def test_a_node_whose_tunnel_is_down_gets_no_new_job_and_loses_its_jobs_when_that_lasts(
    node_process: Services, settings: Settings, request: pytest.FixtureRequest
) -> None:
    far = register(settings, "far", node_process.node.url)
    ticks = Ticks()
    watch = NodeWatch(settings, node_process.token, monotonic=ticks)
    watch.beat()
    assert watch.down_reason(far) is None  # no tunnel ever ran there: reached directly

    status_file = node_process.home / "run" / STATUS_FILE  # where that node reads it

    def tunnel(state: TunnelState, error: str | None = None) -> None:
        status = TunnelStatus(state=state, last_error=error, pid=os.getpid())
        write_status(status_file, status, time.time())
        watch.beat()

    request.addfinalizer(lambda: status_file.unlink(missing_ok=True))
    tunnel(TunnelState.CONNECTING, "ssh: connection refused")
    assert watch.down_reason(far) == (
        "node far: its tunnel is down (connecting: ssh: connection refused)"
    )
    shown = info_of(watch, "far")
    assert shown.state == "down" and shown.tunnel is not None
    assert shown.tunnel.state == "connecting"
    assert watch.slots() == []
    assert watch.down() == {}  # a reconnect in a moment fails nothing that runs
    tunnel(TunnelState.UP)
    assert watch.down_reason(far) is None
    assert [s.name for s in watch.slots()] == ["far"]

    tunnel(TunnelState.CONNECTING, "ssh: connection refused")
    ticks.now += settings.fleet.down_after_seconds / 2
    tunnel(TunnelState.CONNECTING, "ssh: connection refused")
    assert watch.down() == {}
    ticks.now += settings.fleet.down_after_seconds / 2 + 1
    tunnel(TunnelState.CONNECTING, "ssh: connection refused")
    lost = watch.down()[far]
    assert lost.startswith("node far: its tunnel is down for 31 s (connecting: ssh: connection")


def test_a_failed_call_marks_a_node_down_until_it_answers_again(
    node_process: Services, settings: Settings
) -> None:
    node = register(settings, "n1", node_process.node.url)
    watch = NodeWatch(settings, node_process.token, monotonic=Ticks())
    watch.beat()
    watch.mark_down(node, "node n1 at http://x is unreachable: timed out")
    assert watch.down_reason(node) == "node n1 at http://x is unreachable: timed out"
    assert watch.slots() == []
    assert watch.down() == {}  # one failed start fails none of the jobs running there
    watch.mark_down(node, "the start timed out")
    assert watch.down_reason(node) == "node n1: the start timed out"
    watch.beat()
    assert watch.down_reason(node) is None


# ---- capacity and choice -----------------------------------------------------------


def test_capacity_defaults_come_from_the_queue_settings(db_settings: Settings) -> None:
    register(db_settings, "plain", nowhere())
    register(db_settings, "big", nowhere(), max_jobs=7, max_disks=9, vcenters=["vc2", "vc1"])
    watch = NodeWatch(db_settings, "t", monotonic=Ticks())
    assert [(s.name, s.max_jobs, s.max_disks, s.vcenters) for s in watch.slots()] == [
        ("plain", 3, 5, frozenset()),
        ("big", 7, 9, frozenset({"vc1", "vc2"})),
    ]
    big = info_of(watch, "big")
    assert (big.max_jobs, big.max_disks, big.vcenters) == (7, 9, ["vc1", "vc2"])
    with session_scope(db_settings.db_url) as s:  # a capacity given as null: the default again
        edit_node(s, "big", NodeEdit.model_validate({"max_jobs": None}))
    assert info_of(watch, "big").max_jobs == 3


def test_a_node_serving_only_some_vcenters_gets_only_their_jobs(db_settings: Settings) -> None:
    register(db_settings, "a", nowhere(), vcenters=["vc-a.example"])
    register(db_settings, "b", nowhere())
    watch = NodeWatch(db_settings, "t", monotonic=Ticks())
    assert watch.pick("vc-a.example").name == "a"  # both serve it, both idle: the first
    assert watch.pick("vc-b.example").name == "b"
    slot_a = next(s for s in watch.slots() if s.name == "a")
    assert slot_a.serves("vc-a.example") and not slot_a.serves("vc-b.example")
    with session_scope(db_settings.db_url) as s:
        edit_node(s, "b", NodeEdit(enabled=False))
    with pytest.raises(NodeUnreachable) as refused:
        watch.pick("vc-b.example")
    assert str(refused.value) == (
        "no node that serves vCenter vc-b.example is up: "
        "nodes a (serves only vc-a.example), b (disabled)"
    )


def _job(
    backup_id: str, node_id: int, status: JobStatus, disks: int, **fields: object
) -> BackupJob:
    return BackupJob(
        id=backup_id,
        vm_context_id=CONTEXT,
        vm_name="pgtest1",
        repository_id=1,
        node_id=node_id,
        status=status,
        disks=[
            BackupDisk(disk_key=2000 + k, nbd_export_name=f"{backup_id}-{k}", qcow2_path="/x")
            for k in range(disks)
        ],
        **fields,
    )


def test_the_least_loaded_node_is_picked_and_the_views_show_the_load(
    db_settings: Settings,
) -> None:
    seed_vm(db_settings, credential=False)
    a = register(db_settings, "a", nowhere(), max_jobs=4)
    b = register(db_settings, "b", nowhere(), max_jobs=4)
    register(db_settings, "c", nowhere(), max_jobs=1)
    now = utcnow()
    with session_scope(db_settings.db_url) as s:
        s.add_all(
            [
                _job("a-1", a, JobStatus.RUNNING, 2, bytes_transferred=3 * MiB),
                _job("a-2", a, JobStatus.RUNNING, 2),
                _job("b-1", b, JobStatus.PENDING, 1),
                _job("b-done", b, JobStatus.COMPLETED, 1, bytes_transferred=5 * MiB,
                     completed_at=now - timedelta(minutes=10)),
                _job("b-old", b, JobStatus.FAILED, 1, bytes_transferred=7 * MiB,
                     completed_at=now - timedelta(hours=2)),
            ]
        )  # fmt: skip
    watch = NodeWatch(db_settings, "t", monotonic=Ticks())
    assert watch.pick("vc").name == "c"  # 0 of 1, against 2 of 4 and 1 of 4
    with session_scope(db_settings.db_url) as s:
        edit_node(s, "c", NodeEdit(enabled=False))
    assert watch.pick("vc").name == "b"
    infos = {i.name: i for i in watch.infos({"a-1": 1000.0, "a-2": 24.0, "gone": 5.0})}
    assert (infos["a"].jobs_active, infos["a"].disks_active) == (2, 4)
    assert (infos["b"].jobs_active, infos["b"].disks_active) == (1, 1)
    assert (infos["a"].throughput_bps, infos["b"].throughput_bps) == (1024.0, 0.0)
    assert (infos["a"].bytes_last_hour, infos["b"].bytes_last_hour) == (3 * MiB, 5 * MiB)
    assert not infos["c"].enabled and infos["c"].jobs_active == 0


def test_slots_are_what_the_dispatch_takes(db_settings: Settings) -> None:
    node = register(db_settings, "n", nowhere(), max_disks=2)
    assert NodeWatch(db_settings, "t").slots() == [NodeSlot(node, "n", 3, 2)]


# ---- routes and commands -----------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """One hub (its default node not running) for the route and command tests."""
    svc = make_services(tmp_path_factory.mktemp("shared-hub"))
    svc.start(svc.hub)
    yield svc
    svc.stop()


@pytest.fixture
def hub_settings(hub: Services, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on the hub's data folder: its database, to write rows the hub reads."""
    monkeypatch.setenv("SENDENSE_HOME", str(hub.home))
    get_settings.cache_clear()
    return get_settings()


def test_node_routes_refuse_bad_input_with_one_line_and_a_status(
    hub: Services, hub_settings: Settings
) -> None:
    settings = hub_settings
    seed_vm(settings, credential=False)
    with hub.client() as api:
        made = api.post(
            "/api/v1/nodes",
            json={
                "name": "api-b",
                "url": "http://127.0.0.1:9/",
                "vcenters": ["vc1"],
                "max_jobs": 2,
            },
        )
        assert made.status_code == 201, made.text
        assert made.json()["url"] == "http://127.0.0.1:9" and made.json()["max_jobs"] == 2
        c = {"name": "c", "url": "http://x:1"}
        bad = [
            ("POST", NODES, {**c, "url": "ftp://example.org"}, 422, "must start with http://"),
            ("POST", NODES, {**c, "name": "api-b"}, 409, "a node named 'api-b' already exists"),
            ("POST", NODES, {**c, "max_jobs": 0}, 422, "max_jobs"),
            ("POST", NODES, {**c, "cpus": 2}, 422, "cpus"),
            ("POST", NODES, {**c, "vcenters": ["a b"]}, 422, "is not a host name"),
            ("PATCH", f"{NODES}/nosuch", {"max_jobs": 2}, 404, "node 'nosuch' does not exist"),
            ("PATCH", f"{NODES}/api-b", {"url": "x://nowhere.example"}, 422, "must start with"),
            ("DELETE", f"{NODES}/nosuch", None, 404, "node 'nosuch' does not exist"),
        ]  # fmt: skip
        for method, path, body, status, words in bad:
            r = api.request(method, path, json=body)
            assert r.status_code == status, (method, path, body, r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail and words in detail, detail
        with session_scope(settings.db_url) as s:
            node_id = s.query(Node.id).filter(Node.name == "api-b").scalar()
            s.add(_job("api-b-run", node_id, JobStatus.RUNNING, 1))
        busy = api.delete("/api/v1/nodes/api-b")
        assert busy.status_code == 409
        assert busy.json()["detail"] == (
            "node 'api-b' has 1 job(s) running: wait for them or cancel them"
        )
        with session_scope(settings.db_url) as s:
            s.get(BackupJob, "api-b-run").status = JobStatus.FAILED  # type: ignore[union-attr]
        assert api.delete("/api/v1/nodes/api-b").status_code == 204
        assert "api-b" not in [n["name"] for n in api.get("/api/v1/nodes").json()]


def test_nodes_commands_add_edit_list_remove_and_refuse_bad_input(hub: Services) -> None:
    added = hub.sendense(
        "nodes", "add", "--name", "cli-b", "--url", "http://127.0.0.1:9",
        "--vcenter", "vc1.example", "--vcenter", "vc2.example", "--max-jobs", "2",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip().isdigit() and added.stderr == ""  # through the hub
    edited = hub.sendense("nodes", "edit", "cli-b", "--max-disks", "6", "--disable")
    assert edited.returncode == 0, edited.stderr
    assert edited.stdout.strip() == (
        "node cli-b: http://127.0.0.1:9, serves vc1.example, vc2.example, "
        "2 job(s) and 6 disk(s) at once, disabled"
    )
    listed = hub.sendense("nodes", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    b = next(n for n in json.loads(listed.stdout) if n["name"] == "cli-b")
    assert (b["max_jobs"], b["max_disks"], b["enabled"]) == (2, 6, False)
    table = hub.sendense("nodes")  # the list, by default
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if " cli-b " in line)
    for cell in ("disabled, up: not answered yet (", "0/2", "0/6", "0.0", "0 B", "never",
                 "vc1.example, vc2.example"):  # fmt: skip
        assert cell in row, (cell, row)
    bad = [
        (("nodes", "add", "--name", "c", "--url", "http://x:1", "--max-jobs", "0"), 2, "max_jobs"),
        (("nodes", "add", "--name", "cli-b", "--url", "http://x:1"), 8, "already exists"),
        (("nodes", "edit", "nosuch", "--max-jobs", "2"), 7, "node 'nosuch' does not exist"),
        (("nodes", "edit", "cli-b"), 2, "nothing to change"),
        (("nodes", "edit", "cli-b", "--vcenter", "v", "--all-vcenters"), 2, "not both"),
        (("nodes", "remove", "nosuch"), 7, "node 'nosuch' does not exist"),
    ]
    for args, code, words in bad:
        done = hub.sendense(*args)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    removed = hub.sendense("nodes", "remove", "cli-b")
    assert removed.returncode == 0 and removed.stdout.strip() == "node cli-b removed"
    with hub.client() as api:
        assert "cli-b" not in [n["name"] for n in api.get("/api/v1/nodes").json()]
