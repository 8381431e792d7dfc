"""Find the hub, or (with no configuration) start one and a node in the background.

The started processes are detached (own session, output to the data folder's logs) so
that quitting the console, or losing the SSH session, stops no backup.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from sendense_tui.config import ConsoleConfig


def hub_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _sendense_executable() -> str:
    """The ``sendense`` installed next to this Python, whichever venv it is."""
    candidate = Path(sys.executable).parent / "sendense"
    return str(candidate) if candidate.exists() else "sendense"


def pid_file(config: ConsoleConfig, service: str) -> Path:
    """Where the pid of a service this console started is kept, to stop it by id later."""
    return config.home / "run" / f"console-{service}.pid"


def start_services(config: ConsoleConfig) -> None:
    config.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for service in ("hub", "node"):
        log = (config.log_dir / f"{service}.log").open("ab")
        proc = subprocess.Popen(
            [_sendense_executable(), service],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        log.close()
        pid = pid_file(config, service)
        pid.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pid.write_text(f"{proc.pid}\n")


def ensure_hub(config: ConsoleConfig, wait: float = 30.0) -> str | None:
    """A note for the operator when the console started the services, else None."""
    if hub_answers(config.hub_url) or config.explicit:
        return None
    start_services(config)
    deadline = time.monotonic() + wait
    while not hub_answers(config.hub_url):
        if time.monotonic() > deadline:
            return (
                "no hub was running: started `sendense hub` and `sendense node`, but the hub "
                f"does not answer yet; see {config.log_dir / 'hub.log'}"
            )
        time.sleep(0.2)
    return (
        "no hub was running: started `sendense hub` and `sendense node` in the background "
        f"(logs in {config.log_dir}); they keep running after you quit"
    )
