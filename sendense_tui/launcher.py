"""Find the hub, or (with none named) start what is missing the way ``sendense run`` does.

``sendense run --no-console --no-lab`` starts hub and node detached (their own session,
output to the data folder's ``logs/<service>.log``, pids in ``run/<service>.pid``), so
quitting the console, or losing the SSH session, stops no backup, and ``sendense stop``
stops what was started, however it was started.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.hub_client import HubClient
from sendense_tui.config import ConsoleConfig

RUN_SECONDS = 120.0  # `sendense run` waits up to 30 s for each service to answer


@dataclass(frozen=True)
class LaunchNote:
    """What the console says when it opens about the services it started (or could not)."""

    text: str
    failed: bool = False


def hub_answers(url: str) -> bool:
    """Whether a hub answers its health check at ``url`` now (asked before any loop runs)."""

    async def ask() -> bool:
        async with HubClient(url, "", timeout=1.0) as client:
            return await client.answers()

    return asyncio.run(ask())


def sendense_executable() -> str:
    """The ``sendense`` installed next to this Python, whichever venv it is."""
    candidate = Path(sys.executable).parent / "sendense"
    return str(candidate) if candidate.exists() else "sendense"


def ensure_hub(config: ConsoleConfig) -> LaunchNote | None:
    """None when a hub answers or one was named (that may be another machine's: never
    started here); else start the missing services and say what happened."""
    if config.explicit or hub_answers(config.hub_url):
        return None
    command = [sendense_executable(), "run", "--no-console", "--no-lab"]
    shown = " ".join(["sendense", *command[1:]])
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return LaunchNote(f"no hub was running, and `{shown}` did not finish: {exc}", failed=True)
    said = f"{done.stdout}{done.stderr}".strip()
    if done.returncode != 0:
        last = said.splitlines()[-1] if said else "it said nothing"  # the error, not a traceback
        return LaunchNote(
            f"no hub was running, and `{shown}` failed (exit {done.returncode}): {last}",
            failed=True,
        )
    if not hub_answers(config.hub_url):
        return LaunchNote(
            f"no hub was running: `{shown}` started one, but nothing answers at "
            f"{config.hub_url}; see {config.log_dir / 'hub.log'}",
            failed=True,
        )
    return LaunchNote(
        f"no hub was running, so the console ran `{shown}`; what it started keeps running "
        f"after you quit (`sendense stop` stops it):\n{said}"
    )
