"""The console in a real terminal (tmux, TERM=xterm-256color): started with no hub
running, it starts hub and node itself; a backup is made with key presses only and read
back from the screen; quitting, or the terminal going away, ends the console cleanly
while the hub goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.services import Services

CONSOLE = str(Path(sys.executable).parent / "sendense-tui")
pytestmark = pytest.mark.skipif(not Path(CONSOLE).exists(), reason="sendense-tui not installed")


class Terminal:
    """One private tmux server (its own socket) holding one console session."""

    def __init__(self, socket: str, env: dict[str, str]) -> None:
        self.socket = socket
        self.env = env

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout

    def start(self, term: str = "xterm-256color") -> int:
        self.tmux(
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
            "-s",
            "console",
            f"exec env -u COLORTERM TERM={term} {CONSOLE}",
        )
        return int(self.tmux("display-message", "-p", "-t", "console", "#{pane_pid}").strip())

    def screen(self, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "console")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "console", *keys)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared; the screen:\n{screen}")
            time.sleep(0.1)


def gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def stopped_services(
    services_factory: Callable[..., Services], lab_registered: Any
) -> Iterator[Services]:
    """Ports and a data folder for hub and node, neither running: the console starts them.
    Teardown stops, by the pids the console recorded, what the console started."""
    svc = services_factory(hub=False, node=False)
    yield svc
    for name in ("hub", "node"):
        pid_path = svc.home / "run" / f"{name}.pid"  # `sendense run`'s, as the console ran it
        if pid_path.exists():
            pid = int(pid_path.read_text())
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            if not gone(pid, 30):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def terminal(stopped_services: Services) -> Iterator[Terminal]:
    term = Terminal(f"sendense-test-{os.getpid()}-{time.monotonic_ns()}", stopped_services.env)
    yield term
    term.tmux("kill-server")


def test_backup_with_keys_only_in_a_real_terminal(
    stopped_services: Services, terminal: Terminal
) -> None:
    pid = terminal.start()
    terminal.wait_for("no hub was running")  # it said that it started them
    assert stopped_services.hub.healthy() and stopped_services.node.healthy()
    terminal.wait_for("DatabanxDC")
    terminal.keys("/", "pgtest1", "Enter", "j", "b")  # typed ahead, as operators do
    terminal.wait_for("Back up pgtest1")
    terminal.keys("Enter")
    screen = terminal.wait_for("completed")
    assert "pgtest1" in screen and "2000" in screen and "2001" in screen
    terminal.keys("q")
    assert gone(pid), "the console did not quit on q"
    # The jobs live in the hub, which goes on after the console has gone.
    assert stopped_services.hub.healthy()
    with stopped_services.client() as api:
        jobs = api.get("/api/v1/backups").json()
    assert [(j["vm_name"], j["status"]) for j in jobs] == [("pgtest1", "completed")]


@pytest.mark.parametrize("term", ["xterm", "xterm-256color"])
def test_console_quits_when_its_terminal_goes_away(
    stopped_services: Services, terminal: Terminal, term: str
) -> None:
    pid = terminal.start(term)
    terminal.wait_for("DatabanxDC")
    # 16 colours when the terminal says so (OpenSSH passes TERM through), 256 otherwise.
    assert ("38;5;" in terminal.screen(escapes=True)) == term.endswith("256color")
    terminal.tmux("kill-server")  # the SSH session drops: the pty closes, SIGHUP
    assert gone(pid), "the console outlived its terminal"
    assert stopped_services.hub.healthy()
