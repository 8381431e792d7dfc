"""The node's job runner: one ``sendense-backup-client migrate`` process per job.

The vCenter password goes to the client's standard input, never its argv or
environment. Each JSON progress line the client prints is relayed to the hub in
batches; when the hub cannot be reached (a tunnel reconnecting) the lines wait and
superseded ``progress`` lines are dropped, so the backlog stays small and the hub gets
the newest numbers first. After the client exits, a final ``exit`` line carries its exit
code; a job is ``finished`` once the hub has that line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from engine.api.auth import auth_headers
from engine.config import Settings
from engine.errors import Conflict, NotFound
from engine.repository import safe_component

log = logging.getLogger("sendense.node")

BATCH_LIMIT = 500
RELAY_BACKOFF_MAX = 2.0
# How long an undelivered final report is kept trying before the node gives up on it.
RELAY_GIVE_UP_SECONDS = 3600.0
STOP_WAIT_SECONDS = 60.0
STDERR_TAIL = 50


class JobExists(Conflict):
    """A start for a job id this node already runs or ran."""


class UnknownJob(NotFound):
    pass


class JobNotRunning(Conflict):
    pass


@dataclass
class StartRequest:
    vm_name: str
    vcenter_host: str
    vcenter_user: str
    vcenter_password: str
    vm_path: str
    nbd_targets: str
    job_id: str
    backup_type: str = "full"
    nbd_host: str = "127.0.0.1"
    vcenter_thumbprint: str | None = None
    max_rate_mib: float | None = None

    def __repr__(self) -> str:  # never let the password reach a log through repr()
        return f"StartRequest(job_id={self.job_id!r}, vm_name={self.vm_name!r}, password=***)"


@dataclass
class NodeJob:
    job_id: str
    vm_name: str
    log_path: Path
    proc: asyncio.subprocess.Process
    started: float = field(default_factory=time.time)
    state: str = "running"  # running -> exited -> finished
    exit_code: int | None = None
    cancel_requested: bool = False
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL))
    outbox: list[dict[str, Any]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def view(self, lines: int) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "vm_name": self.vm_name,
            "state": self.state,
            "pid": self.proc.pid,
            "exit_code": self.exit_code,
            "started_at": self.started,
            "log_file": str(self.log_path),
            "log_tail": tail(self.log_path, lines) or list(self.stderr_tail)[-lines:],
            "undelivered_events": len(self.outbox),
        }


def tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    return data.splitlines()[-lines:]


def client_command() -> list[str]:
    """The installed ``sendense-backup-client`` beside this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("sendense-backup-client")
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine.node.backup_client"]


LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def local_targets(targets: str, nbd_host: str, local_host: str) -> str:
    """The hub's exports as this node reaches them.

    The hub names its exports on its own loopback; a tunnelled node reaches those ports
    through its local forwards, which listen on ``tunnel.local_host`` (127.0.0.1 unless
    set otherwise, so an embedded node is unaffected).
    """
    if nbd_host not in LOOPBACK_HOSTS or local_host == nbd_host:
        return targets
    return re.sub(r"nbd://(127\.0\.0\.1|localhost):", f"nbd://{local_host}:", targets)


def client_argv(req: StartRequest, log_path: Path, local_host: str) -> list[str]:
    argv = [
        *client_command(),
        "migrate",
        "--vmware-endpoint",
        req.vcenter_host,
        "--vmware-username",
        req.vcenter_user,
        "--vmware-password-file",
        "-",
        "--vmware-path",
        req.vm_path,
        "--nbd-targets",
        local_targets(req.nbd_targets, req.nbd_host, local_host),
        "--job-id",
        req.job_id,
        "--progress",
        "json",
        "--log-file",
        str(log_path),
        "--source",
        "auto",
        "--backup-type",
        req.backup_type,
    ]
    if req.vcenter_thumbprint:
        argv += ["--vmware-thumbprint", req.vcenter_thumbprint]
    if req.max_rate_mib:
        argv += ["--max-rate", str(req.max_rate_mib)]
    return argv


def coalesce(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop ``progress`` lines a later ``progress`` line of the same disk supersedes."""
    latest: dict[Any, int] = {}
    for i, line in enumerate(lines):
        if line.get("type") == "progress":
            latest[line.get("disk_key")] = i
    return [
        line
        for i, line in enumerate(lines)
        if line.get("type") != "progress" or latest.get(line.get("disk_key")) == i
    ]


class JobRunner:
    def __init__(self, settings: Settings, token: str) -> None:
        self.settings = settings
        self.token = token
        self.jobs: dict[str, NodeJob] = {}
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.settings.node.hub_url.rstrip("/"),
                headers=auth_headers(self.token),
                timeout=httpx.Timeout(10.0, connect=3.0),
            )
        return self._http

    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state == "running")

    def get(self, job_id: str) -> NodeJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"job {job_id} is not known to this node")
        return job

    async def start(self, req: StartRequest) -> NodeJob:
        if req.job_id in self.jobs:
            raise JobExists(f"job {req.job_id} was already started on this node")
        self.settings.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.settings.logs / f"backup-{safe_component(req.job_id)}.log"
        proc = await asyncio.create_subprocess_exec(
            *client_argv(req, log_path, self.settings.tunnel.local_host),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a signal to the node's group must not hit the client
        )
        job = NodeJob(job_id=req.job_id, vm_name=req.vm_name, log_path=log_path, proc=proc)
        self.jobs[req.job_id] = job
        assert proc.stdin is not None
        try:
            proc.stdin.write(req.vcenter_password.encode() + b"\n")
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client died at once; its exit code tells why
        finally:
            proc.stdin.close()
        job.tasks = [
            asyncio.create_task(self._follow(job)),
            asyncio.create_task(self._relay(job)),
        ]
        log.info("job %s: client pid %d started for %s", req.job_id, proc.pid, req.vm_name)
        return job

    async def cancel(self, job_id: str) -> NodeJob:
        job = self.get(job_id)
        if job.state != "running":
            raise JobNotRunning(f"job {job_id} is not running ({job.state})")
        job.cancel_requested = True
        with contextlib.suppress(ProcessLookupError):
            job.proc.send_signal(signal.SIGTERM)
        log.info("job %s: cancel requested, SIGTERM sent to %d", job_id, job.proc.pid)
        return job

    async def _follow(self, job: NodeJob) -> None:
        assert job.proc.stdout is not None and job.proc.stderr is not None
        await asyncio.gather(self._read_stdout(job), self._read_stderr(job))
        code = await job.proc.wait()
        job.exit_code = code if code >= 0 else 128 - code  # killed by a signal: 128+N
        job.state = "exited"
        line: dict[str, Any] = {
            "type": "exit",
            "job_id": job.job_id,
            "ts": time.time(),
            "exit_code": job.exit_code,
        }
        if job.exit_code != 0 and job.stderr_tail:
            line["message"] = job.stderr_tail[-1]
        job.outbox.append(line)
        job.wake.set()
        log.info("job %s: client exited with %d", job.job_id, job.exit_code)

    async def _read_stdout(self, job: NodeJob) -> None:
        assert job.proc.stdout is not None
        async for raw in job.proc.stdout:
            text = raw.decode(errors="replace").strip()
            if not text:
                continue
            try:
                line = json.loads(text)
            except ValueError:
                job.stderr_tail.append(text)
                continue
            if isinstance(line, dict):
                job.outbox.append(line)
                job.wake.set()

    async def _read_stderr(self, job: NodeJob) -> None:
        assert job.proc.stderr is not None
        async for raw in job.proc.stderr:
            text = raw.decode(errors="replace").rstrip()
            if text:
                job.stderr_tail.append(text)

    async def _relay(self, job: NodeJob) -> None:
        """Deliver the outbox to the hub until the ``exit`` line is through."""
        backoff = 0.1
        path = f"/api/v1/backups/{job.job_id}/events"
        while True:
            await job.wake.wait()
            job.wake.clear()
            while job.outbox:
                batch = coalesce(job.outbox[:BATCH_LIMIT])
                sent = len(job.outbox[:BATCH_LIMIT])
                try:
                    response = await self.http.post(path, json={"events": batch})
                except httpx.HTTPError as exc:
                    if self._give_up(job):
                        return
                    log.warning("job %s: hub unreachable (%s); retrying", job.job_id, exc)
                    job.outbox[:sent] = batch  # keep only what still matters
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RELAY_BACKOFF_MAX)
                    continue
                if response.status_code >= 500 or response.status_code in (408, 429):
                    job.outbox[:sent] = batch
                    if self._give_up(job):
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RELAY_BACKOFF_MAX)
                    continue
                if response.status_code >= 400:
                    log.error(
                        "job %s: hub refused %d events: %s",
                        job.job_id,
                        len(batch),
                        response.text[:200],
                    )
                backoff = 0.1
                delivered_exit = any(line.get("type") == "exit" for line in batch)
                del job.outbox[:sent]
                if delivered_exit:
                    job.state = "finished"
                    return

    def _give_up(self, job: NodeJob) -> bool:
        if job.state == "exited" and time.time() - job.started > RELAY_GIVE_UP_SECONDS:
            log.error("job %s: could not deliver its final report; giving up", job.job_id)
            job.state = "finished"
            return True
        return False

    async def shutdown(self) -> None:
        """Node stopping: cancel running clients (each removes its snapshot), then wait."""
        running = [j for j in self.jobs.values() if j.state == "running"]
        for job in running:
            with contextlib.suppress(ProcessLookupError):
                job.proc.send_signal(signal.SIGTERM)
        for job in running:
            try:
                await asyncio.wait_for(job.proc.wait(), STOP_WAIT_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    job.proc.kill()
                await job.proc.wait()
        # Give the relays a moment to deliver the exit lines, then stop them.
        pending = [t for j in self.jobs.values() for t in j.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=3.0)
        for task in pending:
            task.cancel()
        if self._http is not None:
            await self._http.aclose()
