"""The queue through the API and the CLI of a real hub: queued jobs with their place,
listed in queue order, cancelled where they wait, refused as one line each when the
input is bad (with nothing stored), kept across a hub restart; and the dispatch's
outcomes for one job: started on a node, back in the queue when its node cannot be
reached, failed with nothing left behind when its node refuses it.

A hub whose only node is disabled dispatches nothing, so its queue stays as queued;
the tests that dispatch use stand-in nodes (tests/fixtures/standin_node.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from engine.api.auth import load_or_create_token
from engine.config import Settings
from engine.contract.hub import BackupRequest, QueueRequest
from engine.db.models import BackupDisk, BackupPolicy, PolicyRun
from engine.db.session import session_scope
from engine.errors import NotFound
from engine.hub.events import EventBus
from engine.hub.exports.manager import ExportManager
from engine.hub.fleet import NodeWatch
from engine.hub.jobs import JobManager
from engine.hub.queue import store
from engine.hub.queue.dispatcher import Dispatcher, Enqueued
from tests.conftest import wait_for
from tests.fixtures.services import Services, make_services, processes_mentioning
from tests.fixtures.standin_node import (
    VCENTER,
    StandinFleet,
    register_node,
    seed_vms,
    standin_fleet,
)

FAST = {"SENDENSE_QUEUE__DISPATCH_SECONDS": "0.2", "SENDENSE_FLEET__HEARTBEAT_SECONDS": "0.5"}


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr.removeprefix("error: ").strip()


def rows(svc: Services) -> int:
    """Every job the hub has."""
    return len(listed(svc, limit=1000))


def park(settings: Settings) -> int:
    """Four VMs, and one node, disabled: nothing leaves the queue. The repository's id."""
    repo_id, _ = seed_vms(settings, 4)
    register_node(settings, "parked", "http://127.0.0.1:9", enabled=False)
    return repo_id


@pytest.fixture
def parked(settings: Settings, services_factory: Callable[..., Services]) -> tuple[Services, int]:
    """A hub of its own that dispatches nothing, and the repository's id."""
    repo_id = park(settings)
    return services_factory(node=False, extra_env=FAST), repo_id


@dataclass
class Shared:
    """One parked hub for the tests that store nothing, with vm-00 queued already."""

    svc: Services
    repo: int
    held: str  # vm-00's queued job


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    home = tmp_path_factory.mktemp("parked-hub")
    repo = park(Settings(home=home))
    svc = make_services(home, extra_env=FAST)
    svc.start(svc.hub)
    try:
        yield Shared(svc, repo, queue(svc, "vm-00", repo=repo).json()[0]["backup_id"])
    finally:
        svc.stop()


def queue(svc: Services, *names: str, repo: int, **extra: Any) -> Any:
    body = {"backups": [{"vm_name": n, "repository_id": repo, **extra} for n in names]}
    with svc.client() as api:
        return api.post("/api/v1/backups/queue", json=body)


def listed(svc: Services, **params: Any) -> list[dict[str, Any]]:
    with svc.client() as api:
        answer = api.get("/api/v1/backups", params=params)
        assert answer.status_code == 200, answer.text
        return list(answer.json())


def test_queued_jobs_show_their_place_a_cancel_takes_one_out_and_a_restart_keeps_them(
    parked: tuple[Services, int],
) -> None:
    svc, repo = parked
    answer = queue(svc, "vm-00", "vm-01", "vm-02", repo=repo)
    assert answer.status_code == 200, answer.text
    jobs = answer.json()
    assert [(j["vm_name"], j["status"], j["queue_position"]) for j in jobs] == [
        ("vm-00", "queued", 1),
        ("vm-01", "queued", 2),
        ("vm-02", "queued", 3),
    ]
    first = jobs[0]
    assert first["node_id"] is None and first["node_name"] is None and first["disks"] == []
    assert first["requested_type"] == "full" and first["policy_run_id"] is None
    assert first["created_at"] and first["started_at"] is None
    ids = [j["backup_id"] for j in jobs]

    waiting = listed(svc, status="queued")
    assert [j["backup_id"] for j in waiting] == ids  # queue order, first in line first
    assert [j["queue_position"] for j in waiting] == [1, 2, 3]
    # Each says why it waits, as the dispatch round saw it (this hub's one node is off).
    wait_for(
        lambda: (
            {j["waiting_reason"] for j in listed(svc, status="queued")}
            == {"no node is up and enabled"}
        ),
        timeout=20,
        what="the dispatch round's reason on every queued job",
    )

    with svc.client() as api:
        cancelled = api.delete(f"/api/v1/backups/{ids[1]}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["completed_at"] and cancelled.json()["queue_position"] is None
        again = api.delete(f"/api/v1/backups/{ids[1]}")
        assert again.status_code == 409
        assert again.json()["detail"] == f"backup {ids[1]} is not running (status cancelled)"
        assert api.get(f"/api/v1/backups/{ids[2]}").json()["queue_position"] == 2

    assert [(j["backup_id"], j["queue_position"]) for j in listed(svc, status="queued")] == [
        (ids[0], 1),
        (ids[2], 2),
    ]
    every = {j["backup_id"]: j for j in listed(svc)}
    assert every[ids[1]]["status"] == "cancelled" and every[ids[2]]["queue_position"] == 2

    # Once cancelled, the VM may be queued again: it goes to the back.
    back = queue(svc, "vm-01", repo=repo)
    assert back.status_code == 200, back.text
    assert back.json()[0]["queue_position"] == 3
    line = [ids[0], ids[2], back.json()[0]["backup_id"]]

    # A restarted hub keeps the queue as it was: nothing failed, nothing moved.
    svc.hub.stop()
    svc.start(svc.hub)
    after = listed(svc, status="queued")
    assert [(j["backup_id"], j["queue_position"]) for j in after] == [
        (line[0], 1),
        (line[1], 2),
        (line[2], 3),
    ]
    assert "3 queued job(s) stay queued" in svc.hub.log()


@pytest.mark.parametrize(
    ("names", "extra", "status", "detail"),
    [
        (["vm-01", "nope"], {}, 404, "VM 'nope' has no context: add it first (POST /api/v1/vms)"),
        (["vm-01", "vm-01"], {}, 422, "VM vm-01 is asked for twice"),
        (["vm-02", "vm-00"], {}, 409, "VM vm-00 already has a backup queued ({queued})"),
        (["vm-01"], {"repository_id": 999}, 404, "repository 999 does not exist"),
        (
            ["vm-01"],
            {"max_rate_mib": 0},
            422,
            "backups.0.max_rate_mib: Input should be greater than or equal to 0.1",
        ),
        ([], {}, 422, "backups: List should have at least 1 item after validation, not 0"),
    ],
)
def test_bad_queue_requests_are_one_line_and_store_nothing(
    shared: Shared, names: list[str], extra: dict[str, Any], status: int, detail: str
) -> None:
    before = rows(shared.svc)
    answer = queue(shared.svc, *names, repo=shared.repo, **extra)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"] == detail.format(queued=shared.held)
    assert rows(shared.svc) == before


def test_a_vm_with_a_queued_backup_is_refused_a_backup_at_once(shared: Shared) -> None:
    before = rows(shared.svc)
    with shared.svc.client() as api:
        body = {"vm_name": "vm-00", "repository_id": shared.repo}
        answer = api.post("/api/v1/backups", json=body)
    assert answer.status_code == 409
    assert answer.json()["detail"] == f"VM vm-00 already has a backup queued ({shared.held})"
    assert rows(shared.svc) == before


# ---- the CLI ----------------------------------------------------------------------------


def test_cli_queues_lists_and_cancels(parked: tuple[Services, int]) -> None:
    svc, repo = parked
    done = svc.sendense("backup", "start", "vm-00", "vm-01", "--repo", str(repo))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[2:] for line in lines] == [
        ["vm-00", "position", "1"],
        ["vm-01", "position", "2"],
    ]
    ids = [line.split()[1] for line in lines]
    one = svc.sendense("backup", "start", "vm-02", "--queue", "--repo", str(repo))
    assert one.returncode == 0, one.stderr
    assert one.stdout.split()[2:] == ["vm-02", "position", "3"]

    shown = svc.sendense("backup", "list", "--status", "queued")
    assert shown.returncode == 0, shown.stderr
    cells = [
        [c.strip() for c in line.strip("│").split("│")]
        for line in shown.stdout.splitlines()
        if "backup-vm-" in line
    ]
    assert [c[0] for c in cells] == [*ids, one.stdout.split()[1]]
    assert [c[4] for c in cells] == ["#1", "#2", "#3"]

    cancelled = svc.sendense("backup", "cancel", ids[0])
    assert cancelled.returncode == 0, cancelled.stderr
    assert "status: cancelled" in cancelled.stdout
    show = svc.sendense("backup", "show", ids[1])
    assert "status: queued  position: 1" in show.stdout

    busy = svc.sendense("backup", "start", "vm-01", "--queue", "--repo", str(repo))
    assert busy.returncode == 8
    assert one_line(busy) == f"VM vm-01 already has a backup queued ({ids[1]})"


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (["vm-01", "nope"], 7, "VM 'nope' has no context: add it first (POST /api/v1/vms)"),
        (["vm-01", "vm-01"], 2, "VM vm-01 is asked for twice"),
        (["vm-01", "--repo", "999"], 7, "repository 999 does not exist"),
        (["vm-01", "vm-00"], 8, "VM vm-00 already has a backup queued ({queued})"),
        (
            ["vm-00", "vm-01", "--context", "ctx-x"],
            2,
            "name several VMs by their names only, without --context or --path",
        ),
    ],
)
def test_cli_bad_queue_input_is_one_line_with_its_exit_code(
    shared: Shared, args: list[str], code: int, line: str
) -> None:
    before = rows(shared.svc)
    done = shared.svc.sendense("backup", "start", "--repo", str(shared.repo), *args)
    assert done.returncode == code
    assert one_line(done) == line.format(queued=shared.held)
    assert rows(shared.svc) == before


# ---- dispatched ---------------------------------------------------------------------------


@pytest.fixture
def one_standin(settings: Settings, sendense_home: Path) -> Iterator[StandinFleet]:
    with standin_fleet(settings, sendense_home, ["standin-a"], extra_env=FAST) as fleet:
        yield fleet


def test_queue_wait_exits_0_only_when_every_job_completed(
    one_standin: StandinFleet, settings: Settings
) -> None:
    repo, _ = seed_vms(settings, 2)
    svc = one_standin
    svc.svc.start(svc.svc.hub)
    node = svc.nodes[0]

    def wait(*names: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli.main", "backup", "start", *names,
             "--repo", str(repo), "--type", "full", "--wait"],
            env=svc.svc.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    waiting = wait("vm-00", "vm-01")
    wait_for(lambda: len(node.running()) == 2, timeout=30, what="both jobs on the node")
    first, second = node.running()
    node.release([first])
    with svc.svc.client() as api:
        assert api.delete(f"/api/v1/backups/{second}").json()["status"] == "cancelled"
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 130, err
    assert f"{first}  vm-0" in out and "completed" in out and "cancelled" in out

    again = wait("vm-00", "vm-01")
    wait_for(lambda: len(node.running()) == 2, timeout=30, what="both jobs on the node")
    node.release()
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert out.count(" completed") == 2


def test_a_queued_backup_keeps_its_rate_limit_until_the_node_starts_it(
    one_standin: StandinFleet, settings: Settings
) -> None:
    repo, _ = seed_vms(settings, 1)
    svc = one_standin
    svc.svc.start(svc.svc.hub)
    node = svc.nodes[0]
    answer = queue(svc.svc, "vm-00", repo=repo, max_rate_mib=5)
    assert answer.status_code == 200, answer.text
    wait_for(lambda: len(node.running()) == 1, timeout=30, what="the job on the node")
    (job_id,) = node.running()
    assert node.jobs[job_id].request.max_rate_mib == 5
    node.release()


def test_a_job_whose_node_cannot_be_reached_goes_back_and_runs_on_another(
    settings: Settings, sendense_home: Path
) -> None:
    """The unreachable node is the first choice (lowest id, nothing running); its
    start fails, the job goes back to its place, the node is marked down, and the next
    round gives the job to the stand-in."""
    register_node(settings, "gone", "http://127.0.0.1:9")
    with standin_fleet(settings, sendense_home, ["standin-a"], extra_env=FAST) as fleet:
        repo, _ = seed_vms(settings, 1)
        fleet.svc.start(fleet.svc.hub)
        backup_id = queue(fleet.svc, "vm-00", repo=repo).json()[0]["backup_id"]
        node = fleet.nodes[0]
        wait_for(lambda: node.running() == [backup_id], timeout=30, what="the job on standin-a")
        node.release()
        job = fleet.svc.wait_job(backup_id)
        assert job["status"] == "completed", job
        assert job["node_name"] == "standin-a"
        log = fleet.svc.hub.log()
        assert f"backup {backup_id} back in the queue: node gone at http://127.0.0.1:9" in log
        with fleet.svc.client() as api:
            nodes = {n["name"]: n for n in api.get("/api/v1/nodes").json()}
        assert nodes["gone"]["state"] == "down"


def test_a_start_the_node_refuses_fails_the_job_and_leaves_nothing(
    one_standin: StandinFleet, settings: Settings
) -> None:
    repo, _ = seed_vms(settings, 1)
    one_standin.svc.start(one_standin.svc.hub)
    one_standin.nodes[0].refuse = "no room for this job"
    backup_id = queue(one_standin.svc, "vm-00", repo=repo).json()[0]["backup_id"]
    job = one_standin.svc.wait_job(backup_id)
    assert job["status"] == "failed"
    assert job["error_message"] == "node standin-a refused: no room for this job"
    assert job["completed_at"] and job["disks"] == [] and job["queue_position"] is None
    assert processes_mentioning(str(settings.home), "qemu-nbd") == []
    assert list(Path(settings.repository_default).rglob("*.qcow2")) == []
    with session_scope(settings.db_url) as s:
        assert s.scalar(select(func.count()).select_from(BackupDisk)) == 0


# ---- a policy run's enqueue (in process) -----------------------------------------------


def in_process(settings: Settings) -> Dispatcher:
    """The hub's dispatcher without a hub process (no node registered: nothing starts)."""
    token = load_or_create_token(settings.token_path)
    jobs = JobManager(settings, ExportManager.from_settings(settings), EventBus(), token)
    return Dispatcher(settings, jobs, NodeWatch(settings, token))


def test_a_policy_runs_enqueue_skips_refused_vms_and_its_jobs_name_the_policy(
    settings: Settings,
) -> None:
    """What a policy run calls: the VMs that cannot be queued (one queued already, one
    without a context, one twice) are skipped with why, the others queued with the run
    named on each; a repository that does not exist refuses them all."""
    repo, _ = seed_vms(settings, 3)
    with session_scope(settings.db_url) as s:
        policy = BackupPolicy(name="nightly", repository_id=repo, schedule="0 2 * * *",
                              includes='["/DC1/vm"]')  # fmt: skip
        s.add(policy)
        s.flush()
        run = PolicyRun(policy_id=policy.id, trigger="manual")
        s.add(run)
        s.flush()
        run_id = run.id
    dispatcher = in_process(settings)

    def ask(*names: str, repository: int = repo) -> list[BackupRequest]:
        return [BackupRequest(vm_name=n, repository_id=repository) for n in names]

    held = dispatcher.queue(QueueRequest(backups=ask("vm-01")))[0]
    done = dispatcher.enqueue(
        ask("vm-00", "vm-01", "nope", "vm-02", "vm-02"), policy_run_id=run_id, skip_busy=True
    )
    assert [(j.vm_name, j.queue_position, j.policy_name, j.policy_run_id) for j in done.jobs] == [
        ("vm-00", 2, "nightly", run_id),
        ("vm-02", 3, "nightly", run_id),
    ]
    assert [(r.vm_name, why) for r, why in done.skipped] == [
        ("vm-01", f"VM vm-01 already has a backup queued ({held.backup_id})"),
        ("nope", "VM 'nope' has no context: add it first (POST /api/v1/vms)"),
        ("vm-02", "VM vm-02 is asked for twice"),
    ]
    with pytest.raises(NotFound, match="repository 999 does not exist"):
        dispatcher.enqueue(ask("vm-00", repository=999), policy_run_id=run_id, skip_busy=True)
    assert dispatcher.enqueue([], policy_run_id=run_id, skip_busy=True) == Enqueued()


def test_the_dispatch_reads_the_queue_in_its_order_a_chunk_at_a_time(settings: Settings) -> None:
    repo, seeded = seed_vms(settings, 8)
    dispatcher = in_process(settings)
    asked = [BackupRequest(vm_name=vm.name, repository_id=repo) for vm in seeded]
    jobs = dispatcher.queue(QueueRequest(backups=asked))
    dispatcher.jobs.cancel(jobs[4].backup_id)
    with session_scope(settings.db_url) as s:
        chunks = list(store.queued_jobs(s, chunk=3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    order = [j.backup_id for j in jobs if j.backup_id != jobs[4].backup_id]
    assert [j.backup_id for c in chunks for j in c] == order
    first = chunks[0][0]
    assert (first.vcenter_host, first.esxi_host, first.datastores) == (
        VCENTER,
        seeded[0].host,
        tuple(seeded[0].datastores.values()),
    )
