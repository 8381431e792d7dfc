"""The CLI's side of the services: ``sendense run`` starts them in the background (detached,
logged, pid-filed, never twice), ``sendense stop`` stops them, and a hub's error answer
is the command's exit code."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from engine.api.auth import load_or_create_token
from engine.cli.launcher import start_detached
from engine.config import Settings, ensure_dirs, get_settings
from engine.db.models import BackupJob
from engine.db.session import session_scope
from engine.processes import pid_alive
from tests.conftest import wait_for
from tests.fixtures.backups import assert_no_snapshot
from tests.fixtures.cli import sendense
from tests.fixtures.lab import LabRegistration
from tests.fixtures.services import Services, free_port, free_port_range


def test_start_detached_starts_once_and_leaves_a_pid_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("SENDENSE_NODE__PORT", str(port))
    get_settings.cache_clear()
    s: Settings = get_settings()
    ensure_dirs(s)
    pid = start_detached(s, "node")
    assert pid is not None
    try:
        assert (s.run / "node.pid").read_text().strip() == str(pid)
        assert os.getpgid(pid) == pid  # its own process group: a closed terminal spares it
        assert (s.logs / "node.log").exists()
        assert start_detached(s, "node") is None  # already answering: left alone
    finally:
        os.killpg(pid, signal.SIGTERM)
        wait_for(lambda: _gone(pid), timeout=30, what="the node to stop")


def _gone(pid: int) -> bool:
    """Whether ``pid`` ended (reaped first when it is this test's own child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return not pid_alive(pid)


def _ports(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings (and the environment of every `sendense` run) with a hub and a node on
    free ports, the node reporting to that hub."""
    hub_port, node_port = free_port(), free_port()
    monkeypatch.setenv("SENDENSE_HUB__PORT", str(hub_port))
    monkeypatch.setenv("SENDENSE_NODE__PORT", str(node_port))
    monkeypatch.setenv("SENDENSE_NODE__HUB_URL", f"http://127.0.0.1:{hub_port}")
    get_settings.cache_clear()
    s = get_settings()
    ensure_dirs(s)
    return s


def _stop_sendense() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "stop"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stop_ends_what_run_started_and_only_that(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sendense stop` stops the services `sendense run` left in the background, removes
    their pid files, and leaves alone a pid file that names some other process."""
    s = _ports(monkeypatch)
    hub = start_detached(s, "hub")
    node = start_detached(s, "node")
    assert hub and node
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        out = _stop_sendense()
        assert out.returncode == 0, out.stderr
        assert "hub: stopped" in out.stdout and "node: stopped" in out.stdout
        wait_for(lambda: _gone(hub) and _gone(node), timeout=30, what="hub and node to stop")
        assert not (s.run / "hub.pid").exists() and not (s.run / "node.pid").exists()

        (s.run / "hub.pid").write_text(f"{bystander.pid}\n")  # not a sendense hub
        again = _stop_sendense()
        assert again.returncode == 0, again.stderr
        assert "hub: not started by `sendense run`" in again.stdout
        assert bystander.poll() is None
    finally:
        bystander.kill()
        for pid in (hub, node):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_run_no_console_starts_what_is_missing_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sendense run --no-console` starts hub and node in the background and exits 0; run
    again it starts nothing; `sendense stop` stops both. Pid files: `<run>/<service>.pid`."""
    s = _ports(monkeypatch)
    first = sendense("run", "--no-console", "--no-lab")
    pids: dict[str, int] = {}
    try:
        assert first.returncode == 0, first.stderr
        for service in ("hub", "node"):
            assert f"{service}: started (pid " in first.stdout
            pids[service] = int((s.run / f"{service}.pid").read_text())
            assert os.getpgid(pids[service]) == pids[service]
            assert (s.logs / f"{service}.log").exists()
        assert sorted(p.name for p in s.run.glob("*.pid")) == ["hub.pid", "node.pid"]

        second = sendense("run", "--no-console", "--no-lab")
        assert second.returncode == 0, second.stderr
        assert "started" not in second.stdout
        assert second.stdout.count("already answering at http://127.0.0.1:") == 2
        assert {int((s.run / f"{n}.pid").read_text()) for n in pids} == set(pids.values())

        stopped = sendense("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "hub: stopped" in stopped.stdout and "node: stopped" in stopped.stdout
        wait_for(lambda: all(map(_gone, pids.values())), timeout=30, what="hub and node to stop")
        assert not list(s.run.glob("*.pid"))
    finally:
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def test_a_hub_error_answer_is_the_exit_code(services_factory: Callable[..., Services]) -> None:
    """A 404 from the hub is NotFound (exit 7), a 422 BadInput (exit 2): one line each."""
    svc = services_factory(node=False)
    missing = svc.sendense("backup", "show", "backup-nope-1")
    assert missing.returncode == 7
    assert "backup-nope-1" in _one_error_line(missing)
    cancel = svc.sendense("backup", "cancel", "backup-nope-1")
    assert cancel.returncode == 7
    _one_error_line(cancel)
    no_vm = svc.sendense("backup", "start", "no-such-vm", "--repo", "1")
    assert no_vm.returncode == 7, no_vm.stderr  # no such VM context
    _one_error_line(no_vm)


def test_a_hub_that_does_not_answer_is_exit_10(settings: Settings) -> None:
    load_or_create_token(settings.token_path)
    port = str(free_port())
    down = sendense("backup", "list", extra_env={"SENDENSE_HUB__PORT": port})
    assert down.returncode == 10
    assert f"127.0.0.1:{port}" in _one_error_line(down)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pgtest1", "--max-rate", "0"), "max_rate_mib: "),
        (("pgtest1", "--path", "/DC/vm/pgtest1"), "exactly one of vm_name"),
        ((), "exactly one of vm_name"),
        (("pgtest1", "--repo", "0"), "repository_id: "),
    ],
)
def test_backup_start_refuses_bad_input_before_asking_the_hub(
    args: tuple[str, ...], message: str
) -> None:
    """Exit 2 with one line, with no hub (nor token) anywhere: nothing was sent."""
    done = sendense("backup", "start", "--repo", "1", *args)
    assert done.returncode == 2
    assert message in _one_error_line(done)


def test_nodes_list_asks_each_node(services_factory: Callable[..., Services]) -> None:
    """With none registered, the node a hub would register first; each row says whether
    that node answers now."""
    svc = services_factory(hub=False)
    listed = svc.sendense("nodes", "list")
    assert listed.returncode == 0, listed.stderr
    local = next(line for line in listed.stdout.splitlines() if " local " in line)
    assert svc.node.url in local and " up: version " in local
    added = svc.sendense("nodes", "add", "--name", "far", "--url", "http://127.0.0.1:9")
    assert added.returncode == 0, added.stderr
    listed = svc.sendense("nodes", "list")
    assert listed.returncode == 0, listed.stderr
    assert " local " not in listed.stdout  # registered nodes replace the default
    assert "down: no heartbeat (" in listed.stdout
    assert "the hub at " in listed.stderr  # said once: these states are this machine's


def test_stop_refuses_while_a_backup_runs_unless_forced(
    monkeypatch: pytest.MonkeyPatch, lab_registered: LabRegistration
) -> None:
    """`sendense stop` exits 8 (a conflict) naming the running backup; with --force the
    node goes first (its client removes the snapshot), then the hub once the job ended."""
    s = _ports(monkeypatch)
    nbd = free_port_range()
    monkeypatch.setenv("SENDENSE_NBD__PORT_MIN", str(nbd.start))
    monkeypatch.setenv("SENDENSE_NBD__PORT_MAX", str(nbd.stop - 1))
    assert sendense("run", "--no-console", "--no-lab").returncode == 0
    pids = [int((s.run / f"{n}.pid").read_text()) for n in ("hub", "node")]
    try:
        repo = str(lab_registered.repository_id)
        started = sendense("backup", "start", "pgtest1", "--repo", repo, "--max-rate", "2")
        assert started.returncode == 0, started.stderr
        backup_id = started.stdout.split()[1].rstrip(":")
        refused = sendense("stop")
        assert refused.returncode == 8
        assert f"backups are running ({backup_id})" in _one_error_line(refused)
        assert all(not _gone(pid) for pid in pids)

        forced = sendense("stop", "--force")
        assert forced.returncode == 0, forced.stderr
        assert forced.stdout.index("node: stopped") < forced.stdout.index("hub: stopped")
        wait_for(lambda: all(map(_gone, pids)), timeout=30, what="hub and node to stop")
        with session_scope(s.db_url) as session:
            job = session.get(BackupJob, backup_id)
            assert job is not None and job.status in ("cancelled", "failed")
        assert_no_snapshot(lab_registered)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
