"""``sendense run``'s background start: detached, logged, pid-filed, and never twice."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from engine.cli.services import start_detached
from engine.config import Settings, ensure_dirs, get_settings
from tests.conftest import wait_for
from tests.fixtures.services import free_port


def test_start_detached_starts_once_and_leaves_a_pid_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("SENDENSE_NODE__PORT", str(port))
    get_settings.cache_clear()
    s: Settings = get_settings()
    ensure_dirs(s)
    url = f"http://127.0.0.1:{port}"
    pid = start_detached(s, "node", url)
    assert pid is not None
    try:
        assert (s.run / "node.pid").read_text().strip() == str(pid)
        assert os.getpgid(pid) == pid  # its own process group: a closed terminal spares it
        assert (s.logs / "node.log").exists()
        assert start_detached(s, "node", url) is None  # already answering: left alone
    finally:
        os.killpg(pid, signal.SIGTERM)
        wait_for(lambda: _gone(pid), timeout=30, what="the node to stop")


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
        os.kill(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        return True
    return False


def test_stop_ends_what_run_started_and_only_that(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sendense stop` stops the services `sendense run` left in the background, removes
    their pid files, and leaves alone a pid file that names some other process."""
    import subprocess
    import sys

    hub_port, node_port = free_port(), free_port()
    monkeypatch.setenv("SENDENSE_HUB__PORT", str(hub_port))
    monkeypatch.setenv("SENDENSE_NODE__PORT", str(node_port))
    monkeypatch.setenv("SENDENSE_NODE__HUB_URL", f"http://127.0.0.1:{hub_port}")
    get_settings.cache_clear()
    s: Settings = get_settings()
    ensure_dirs(s)
    hub = start_detached(s, "hub", f"http://127.0.0.1:{hub_port}")
    node = start_detached(s, "node", f"http://127.0.0.1:{node_port}")
    assert hub and node
    bystander = subprocess.Popen(["sleep", "60"])
    (s.run / "console-hub.pid").write_text(f"{bystander.pid}\n")  # not a sendense hub
    try:
        out = subprocess.run(
            [sys.executable, "-m", "engine.cli.main", "stop"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "hub: stopped" in out.stdout and "node: stopped" in out.stdout
        wait_for(lambda: _gone(hub) and _gone(node), timeout=30, what="hub and node to stop")
        assert not (s.run / "hub.pid").exists() and not (s.run / "node.pid").exists()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        for pid in (hub, node):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
