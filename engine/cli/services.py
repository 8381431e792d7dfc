"""``sendense hub|node|run``, ``sendense token``, ``sendense nodes``, ``sendense backup``.

The backup commands are clients of the hub API (httpx), like the console: a job belongs
to the hub, so ``--wait`` can be interrupted without stopping the backup.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.progress import TaskID
from rich.table import Table

from engine.api.auth import auth_headers, client_token, load_or_create_token, node_token
from engine.contract.hub import ErrorAnswer
from engine.cli.common import console, db_session, err_console, settings
from engine.config import Settings
from engine.errors import SendenseError
from engine.hub.nodes import NodeClient, NodeRef, add_node, list_nodes

token_app = typer.Typer(help="The API token shared by hub, node and CLI.", no_args_is_help=True)
nodes_app = typer.Typer(help="Backup nodes (SNA) the hub hands jobs to.", no_args_is_help=True)
backup_app = typer.Typer(help="Start and follow backups through the hub.", no_args_is_help=True)

TERMINAL = ("completed", "failed", "cancelled")
EXIT_FOR = {"completed": 0, "failed": 1, "cancelled": 130}


class HubUnavailable(SendenseError):
    exit_code = 3


class HubRefused(SendenseError):
    exit_code = 1


# ---- the services ----------------------------------------------------------------------


def _serve(make_app: Callable[[], Any], host: str, port: int) -> None:
    """Serve in the foreground; the services' own log lines go to stderr beside uvicorn's."""
    import logging

    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Open event streams (consoles) must not hold a stopping service for ever.
    uvicorn.run(
        make_app(),
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def hub_command(
    host: str | None = typer.Option(None, "--host", help="Listen address (settings: hub.host)."),
    port: int | None = typer.Option(None, "--port", help="Listen port (settings: hub.port)."),
) -> None:
    """Run the hub (SHA) in the foreground: API, exports, jobs."""
    from engine.hub.app import create_app

    s = settings()
    s.hub.host = host or s.hub.host
    s.hub.port = port or s.hub.port
    _serve(lambda: create_app(s), s.hub.host, s.hub.port)


def node_command(
    host: str | None = typer.Option(None, "--host", help="Listen address (settings: node.host)."),
    port: int | None = typer.Option(None, "--port", help="Listen port (settings: node.port)."),
) -> None:
    """Run a node (SNA) in the foreground: runs sendense-backup-client per job."""
    from engine.node.app import create_app

    s = settings()
    s.node.host = host or s.node.host
    s.node.port = port or s.node.port
    _serve(lambda: create_app(s), s.node.host, s.node.port)


@token_app.command("show")
def token_show() -> None:
    """Print the API token (made on first use; give it to a remote node's node.hub_token)."""
    s = settings()
    console.print(load_or_create_token(s.token_path), highlight=False)


# ---- nodes -----------------------------------------------------------------------------


@nodes_app.command("add")
def nodes_add(
    name: str = typer.Option(..., "--name", help="A short name for the node."),
    url: str = typer.Option(
        ..., "--url", help="Its API as the hub reaches it, e.g. http://127.0.0.1:9081 (tunnel)."
    ),
) -> None:
    """Register a node; prints its id. Once any node is registered the hub adds no default."""
    with db_session() as session:
        console.print(add_node(session, name, url).id)


@nodes_app.command("list")
def nodes_list() -> None:
    """Show the nodes and whether each answers now."""
    s = settings()
    with db_session() as session:
        refs = [(NodeRef(n.id, n.name, n.url), n.enabled) for n in list_nodes(session)]
    if not refs:  # what the hub registers on its first start
        refs = [(NodeRef(0, s.node.name, f"http://127.0.0.1:{s.node.port}"), True)]
    token = node_token(s)
    table = Table("id", "name", "url", "enabled", "state")
    for ref, enabled in refs:
        try:
            NodeClient(ref, token).health()
            state = "up"
        except SendenseError as exc:
            state = f"down: {exc}"
        table.add_row(str(ref.id), ref.name, ref.url, "yes" if enabled else "no", state)
    console.print(table)


# ---- hub API client ----------------------------------------------------------------------


@contextmanager
def hub_api() -> Iterator[httpx.Client]:
    s = settings()
    with httpx.Client(
        base_url=s.hub.public_url,
        headers=auth_headers(client_token(s)),
        timeout=httpx.Timeout(60.0, connect=3.0),
    ) as client:
        yield client


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise HubUnavailable(
            f"the hub at {client.base_url} is not answering ({exc}): start it with `sendense hub`"
        ) from None
    if response.status_code >= 400:
        raise HubRefused(
            f"{ErrorAnswer.detail_of(response.content, response.reason_phrase)} (HTTP {response.status_code})"
        )
    return response.json()


def _mib(n: int | float | None) -> str:
    return f"{(n or 0) / 2**20:.1f} MiB"


def print_job(job: dict[str, Any]) -> None:
    console.print(
        f"[bold]{job['backup_id']}[/]  {job['vm_name']}  {job['backup_type']}  "
        f"status: [bold]{job['status']}[/]",
        highlight=False,
    )
    if job.get("error_message"):
        console.print(f"reason: {job['error_message']}", highlight=False)
    table = Table("disk", "export", "port", "status", "done", "total", "zero", "qcow2")
    for d in job["disks"]:
        table.add_row(
            str(d["disk_key"]),
            d["nbd_export_name"],
            str(d["nbd_port"] or "-"),
            d["status"],
            _mib(d["bytes_done"]),
            _mib(d["bytes_total"]),
            _mib(d["bytes_zero"]),
            d["qcow2_path"],
        )
    console.print(table)


# ---- backup --------------------------------------------------------------------------------


@backup_app.command("start")
def backup_start(
    vm: str = typer.Argument(..., help="The VM's name (its context must exist)."),
    repo: int = typer.Option(..., "--repo", help="Repository id (sendense repo list)."),
    backup_type: str = typer.Option("full", "--type", help="full (the only kind so far)."),
    max_rate: float | None = typer.Option(
        None, "--max-rate", help="Limit each disk's copy to this many MiB/s."
    ),
    wait: bool = typer.Option(False, "--wait", help="Show per-disk progress until the end."),
) -> None:
    """Start a backup of VM; with --wait, follow it and exit 0 only if it completed."""
    body: dict[str, Any] = {"vm_name": vm, "repository_id": repo, "backup_type": backup_type}
    if max_rate is not None:
        body["max_rate_mib"] = max_rate
    with hub_api() as client:
        answer = call(client, "POST", "/api/v1/backups", json=body)
        console.print(f"started {answer['backup_id']}: {answer['nbd_targets_string']}")
        if not wait:
            return
        job = follow(client, answer["backup_id"])
    print_job(job)
    raise typer.Exit(EXIT_FOR.get(job["status"], 1))


def follow(client: httpx.Client, backup_id: str) -> dict[str, Any]:
    """Progress bars from the hub's event stream until the job ends; the final Job."""
    from httpx_sse import connect_sse

    from engine.node.progress import disk_bars

    bars: dict[int, TaskID] = {}
    stream = httpx.Client(
        base_url=client.base_url, headers=client.headers, timeout=httpx.Timeout(None, connect=3.0)
    )
    with disk_bars(err_console) as progress, stream:

        def show(key: int, done: int, total: int, status: str) -> None:
            if key not in bars:
                bars[key] = progress.add_task(f"disk {key}", total=total or None, note=status)
            progress.update(bars[key], completed=done, total=total or None, note=status)

        with connect_sse(stream, "GET", "/api/v1/events") as source:
            job = call(client, "GET", f"/api/v1/backups/{backup_id}")  # after subscribing
            events = source.iter_sse()
            while job["status"] not in TERMINAL:
                event = next(events)
                if not event.data:
                    continue
                data = json.loads(event.data)
                if event.event == "disk" and data.get("job_id") == backup_id:
                    show(data["disk_key"], data["bytes_done"], data["bytes_total"], data["status"])
                elif event.event == "job" and data.get("backup_id") == backup_id:
                    job = data
                    for d in job["disks"]:
                        show(d["disk_key"], d["bytes_done"], d["bytes_total"], d["status"])
    return job


@backup_app.command("list")
def backup_list(
    vm: str | None = typer.Option(None, "--vm", help="Only this VM."),
    status: str | None = typer.Option(None, "--status", help="Only this status."),
    limit: int = typer.Option(50, "--limit"),
) -> None:
    """Show backups, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if vm:
        params["vm_name"] = vm
    if status:
        params["status"] = status
    with hub_api() as client:
        jobs = call(client, "GET", "/api/v1/backups", params=params)
    table = Table("backup", "vm", "type", "status", "disks", "done", "total", "created", "reason")
    for j in jobs:
        table.add_row(
            j["backup_id"],
            j["vm_name"],
            j["backup_type"],
            j["status"],
            str(len(j["disks"])),
            _mib(j["bytes_done"]),
            _mib(j["bytes_total"]),
            (j["created_at"] or "")[:19],
            j.get("error_message") or "",
        )
    console.print(table)


@backup_app.command("show")
def backup_show(backup_id: str = typer.Argument(...)) -> None:
    """One backup with its disks."""
    with hub_api() as client:
        print_job(call(client, "GET", f"/api/v1/backups/{backup_id}"))


@backup_app.command("cancel")
def backup_cancel(backup_id: str = typer.Argument(...)) -> None:
    """Cancel a running backup (its node removes the VMware snapshot)."""
    with hub_api() as client:
        job = call(client, "DELETE", f"/api/v1/backups/{backup_id}")
    print_job(job)


# ---- sendense run ------------------------------------------------------------------------


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def sendense_command() -> list[str]:
    script = Path(sys.executable).with_name("sendense")
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli.main"]


def start_detached(s: Settings, service: str, url: str) -> int | None:
    """Start ``sendense <service>`` in its own session unless something answers at ``url``.

    Its output goes to ``<log dir>/<service>.log`` and its pid to ``<run dir>/<service>.pid``.
    Returns the new pid, or None when one was already answering.
    """
    if _answers(url):
        return None
    s.logs.mkdir(parents=True, exist_ok=True)
    with (s.logs / f"{service}.log").open("ab") as out:
        proc = subprocess.Popen(
            [*sendense_command(), service],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (s.run / f"{service}.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 30
    while not _answers(url):
        if proc.poll() is not None:
            raise SendenseError(
                f"sendense {service} exited with {proc.returncode}; see {s.logs / service}.log"
            )
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGTERM)
            raise SendenseError(f"sendense {service} did not answer at {url} within 30 s")
        time.sleep(0.1)
    return proc.pid


def run_command(
    lab: bool = typer.Option(True, "--lab/--no-lab", help="Start the vcsim lab if not running."),
) -> None:
    """Start what is missing (lab, hub, node) in the background, then open the console."""
    s = settings()
    if lab:
        _ensure_lab(s)
    for service, url in (
        ("hub", s.hub.public_url),
        ("node", f"http://{s.node.host}:{s.node.port}"),
    ):
        pid = start_detached(s, service, url)
        if pid is None:
            console.print(f"{service}: already answering at {url}")
        else:
            console.print(f"{service}: started (pid {pid}) at {url}; log {s.logs / service}.log")
    tui = shutil.which("sendense-tui") or str(Path(sys.executable).with_name("sendense-tui"))
    if importlib.util.find_spec("sendense_tui") is None or not Path(tui).exists():
        console.print("sendense-tui: not built yet")
        return
    os.execv(tui, [tui])


def stop_command(
    force: bool = typer.Option(
        False, "--force", help="Stop even while backups run (the node cancels them first)."
    ),
    lab: bool = typer.Option(False, "--lab", help="Also stop the lab (`sendense lab down`)."),
) -> None:
    """Stop the hub and node that `sendense run` or the console started in the background.

    Refused while backups run, unless --force: then the node goes first, so its clients
    remove their snapshots and the hub stops their exports before it stops itself.
    """
    s = settings()
    services = {name: _started_pid(s, name) for name in ("node", "hub")}
    if not force and services["hub"] and _answers(s.hub.public_url):
        with hub_api() as client:
            running = call(client, "GET", "/api/v1/backups", params={"status": "running"})
        if running:
            names = ", ".join(j["backup_id"] for j in running)
            raise SendenseError(f"backups are running ({names}): wait, cancel them, or --force")
    for name, pid in services.items():
        if pid is None:
            console.print(f"{name}: not started by `sendense run`")
            continue
        if name == "hub" and services["node"]:
            _wait_no_running_jobs(s)
        _stop_group(pid)
        for pid_file in _pid_files(s, name):
            pid_file.unlink(missing_ok=True)
        console.print(f"{name}: stopped (pid {pid})")
    if lab:
        from engine.lab import lab_dir, stop

        console.print("lab: stopped" if stop(lab_dir(s)) else "lab: was not running")


def _pid_files(s: Settings, service: str) -> list[Path]:
    """Where `sendense run` and the console record what they started."""
    return [s.run / f"{service}.pid", s.run / f"console-{service}.pid"]


def _started_pid(s: Settings, service: str) -> int | None:
    """The live ``sendense <service>`` recorded in a pid file (a reused pid is not it)."""
    from engine.processes import pid_alive

    for pid_file in _pid_files(s, service):
        try:
            pid = int(pid_file.read_text())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if pid_alive(pid) and service.encode() in argv and any(b"sendense" in a for a in argv):
            return pid
    return None


def _wait_no_running_jobs(s: Settings, timeout: float = 30.0) -> None:
    """After the node stopped: let the hub record its jobs' ends and stop their exports."""
    deadline = time.monotonic() + timeout
    with hub_api() as client:
        while time.monotonic() < deadline:
            try:
                if not call(client, "GET", "/api/v1/backups", params={"status": "running"}):
                    return
            except HubUnavailable:
                return
            time.sleep(0.2)


def _stop_group(pid: int, grace: float = 15.0) -> None:
    from engine.processes import pid_alive

    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _ensure_lab(s: Settings) -> None:
    try:
        from engine.lab.setup import ensure_running
    except ImportError:
        console.print("lab: not built yet")
        return
    note = ensure_running(s)
    console.print(f"lab: {note}")
