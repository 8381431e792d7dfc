"""``sendense run`` and ``sendense stop``: the one launcher of the services in the background.

A service started here runs detached (its own session: a closed terminal or a quit
console stops no backup), logs to ``<logs>/<service>.log`` and leaves its pid in
``<run>/<service>.pid``; ``sendense stop`` stops what those files name and nothing else.
The console starts what is missing with ``sendense run --no-console --no-lab``, so every
background service follows this one convention.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from engine.api.auth import node_token
from engine.cli.common import console, on_hub, settings
from engine.config import Settings
from engine.contract.status import JobStatus
from engine.errors import Conflict, SendenseError
from engine.hub_client import HubClient, HubUnreachable
from engine.processes import pid_alive

SERVICES = ("hub", "node")
START_TIMEOUT = 30.0


def service_url(s: Settings, service: str) -> str:
    return s.hub.public_url if service == "hub" else f"http://{s.node.host}:{s.node.port}"


def pid_file(s: Settings, service: str) -> Path:
    return s.run / f"{service}.pid"


def answers(s: Settings, service: str) -> bool:
    """Whether that service (and not some other one) answers its health check now."""
    url = service_url(s, service)
    if service == "hub":
        return asyncio.run(_hub_answers(url))
    from engine.hub.nodes import NodeClient, NodeRef

    try:
        NodeClient(NodeRef(0, s.node.name, url), node_token(s)).health()
    except SendenseError:
        return False
    return True


async def _hub_answers(url: str) -> bool:
    async with HubClient(url, "") as hub:  # the health route needs no token
        return await hub.answers()


def _installed(script: str) -> str:
    """The command installed next to this Python (the same venv), else the one on PATH."""
    path = Path(sys.executable).with_name(script)
    return str(path) if path.exists() else script


def start_detached(s: Settings, service: str) -> int | None:
    """Start ``sendense <service>`` in the background unless it answers already; wait
    until it answers. Returns its pid, or None when one was already answering."""
    if answers(s, service):
        return None
    s.logs.mkdir(parents=True, exist_ok=True)
    log = s.logs / f"{service}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [_installed("sendense"), service],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(s, service).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while not answers(s, service):
        if proc.poll() is not None:
            raise SendenseError(f"sendense {service} exited with {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGTERM)
            raise SendenseError(
                f"sendense {service} did not answer at {service_url(s, service)} "
                f"within {START_TIMEOUT:.0f} s; see {log}"
            )
        time.sleep(0.1)
    return proc.pid


def run_command(
    lab: bool = typer.Option(True, "--lab/--no-lab", help="Start the vcsim lab if not running."),
    open_console: bool = typer.Option(
        True, "--console/--no-console", help="Open the console once the services answer."
    ),
) -> None:
    """Start what is missing (lab, hub, node) in the background, then open the console.

    With --no-console it only starts them, says what it did and exits 0 (the console
    itself starts missing services this way)."""
    s = settings()
    if lab:
        from engine.lab import ensure_running

        console.print(f"lab: {ensure_running(s)}", highlight=False)
    for service in SERVICES:
        pid = start_detached(s, service)
        url = service_url(s, service)
        if pid is None:
            console.print(f"{service}: already answering at {url}", highlight=False)
        else:
            log = s.logs / f"{service}.log"
            console.print(f"{service}: started (pid {pid}) at {url}; log {log}", highlight=False)
    if open_console:
        tui = _installed("sendense-tui")
        os.execvp(tui, [tui])


def stop_command(
    force: bool = typer.Option(
        False, "--force", help="Stop even while backups run (the node cancels them first)."
    ),
    lab: bool = typer.Option(False, "--lab", help="Also stop the lab (`sendense lab down`)."),
) -> None:
    """Stop the hub and node that `sendense run` (or the console) started in the background.

    Refused while backups run, unless --force: then the node goes first, so its clients
    remove their snapshots and the hub stops their exports before it stops itself. Instant
    exports of restore points end too (a restarted hub keeps them; a stopped one cannot).
    """
    s = settings()
    pids = {name: started_pid(s, name) for name in ("node", "hub")}
    if not force and pids["hub"]:
        running = _running_jobs(s)
        if running:
            names = ", ".join(running)
            raise Conflict(f"backups are running ({names}): wait, cancel them, or --force")
    for name, pid in pids.items():
        if pid is None:
            console.print(f"{name}: not started by `sendense run`")
            continue
        if name == "hub" and pids["node"]:
            on_hub(_until_no_running_jobs, s)
        if name == "hub":
            ended = on_hub(_end_instant_exports, s)
            if ended:
                console.print(f"exports: ended {ended} instant export(s)")
        _stop_group(pid)
        pid_file(s, name).unlink(missing_ok=True)
        console.print(f"{name}: stopped (pid {pid})")
    if lab:
        from engine.lab import lab_dir, stop

        console.print("lab: stopped" if stop(lab_dir(s)) else "lab: was not running")


def started_pid(s: Settings, service: str) -> int | None:
    """The live ``sendense <service>`` its pid file names (a reused pid is not it)."""
    try:
        pid = int(pid_file(s, service).read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if pid_alive(pid) and service.encode() in argv and any(b"sendense" in a for a in argv):
        return pid
    return None


def _running_jobs(s: Settings) -> list[str]:
    """The ids of the backups running now; none when the hub does not answer."""
    try:
        jobs = on_hub(lambda hub: hub.jobs(status=JobStatus.RUNNING), s)
    except HubUnreachable:
        return []
    return [j.backup_id for j in jobs]


async def _until_no_running_jobs(hub: HubClient) -> None:
    """After the node stopped: let the hub record its jobs' ends and stop their exports."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if not await hub.jobs(status=JobStatus.RUNNING):
                return
        except HubUnreachable:
            return
        await asyncio.sleep(0.2)


async def _end_instant_exports(hub: HubClient) -> int:
    """End the instant exports: a hub restart keeps them for the next hub, but once it is
    stopped for good nothing would end them on their TTL. How many there were."""
    try:
        exports = await hub.restore_exports()
        for export in exports:
            await hub.unexport(export.name)
    except HubUnreachable:
        return 0
    return len(exports)


def _stop_group(pid: int, grace: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
