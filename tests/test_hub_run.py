"""``sendense run``'s background start: detached, logged, pid-filed, and never twice."""

from __future__ import annotations

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
