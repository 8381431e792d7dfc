"""The node's job runner: one ``sendense-backup-client`` process per job (``migrate`` for a
backup, ``restore`` for a VM restore's disks).

The vCenter password stays a ``SecretStr`` until it is written to the client's standard
input, never its argv or environment. Each progress line the client prints is read into
its contract model and queued for the hub (``relay``); after the client exits, the node's
own ``exit`` line carries its exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from engine.config import Settings
from engine.contract.node import RestoreStartRequest, StartRequest
from engine.contract.progress import ClientExit, parse_line
from engine.contract.status import NodeJobState
from engine.contract.targets import LOOPBACK_HOSTS, NbdTargets
from engine.errors import Conflict, NotFound
from engine.node.job import ClientJob
from engine.node.relay import Relay
from engine.repository import safe_component

log = logging.getLogger("sendense.node")

STOP_WAIT_SECONDS = 60.0
# After the clients stopped, how long the relays may take to deliver their exit lines.
SHUTDOWN_DELIVERY_SECONDS = 3.0


class JobExists(Conflict):
    """A start for a job id this node already runs or ran."""


class UnknownJob(NotFound):
    pass


class JobNotRunning(Conflict):
    pass


def client_command() -> list[str]:
    """The installed ``sendense-backup-client`` beside this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("sendense-backup-client")
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine.node.client"]


def client_targets(req: StartRequest | RestoreStartRequest, local_host: str) -> NbdTargets:
    """The hub's exports (a backup's targets, a restore's sources) as this node reaches them.

    The hub names its exports where they listen (``nbd_host``); when that is its loopback,
    a tunnelled node reaches those ports through its local forwards, which listen on
    ``tunnel.local_host`` (127.0.0.1 unless set otherwise, so an embedded node is
    unaffected).
    """
    exports = req.nbd_sources if isinstance(req, RestoreStartRequest) else req.nbd_targets
    if req.nbd_host in LOOPBACK_HOSTS and local_host != req.nbd_host:
        return exports.with_host(local_host)
    return exports


def client_argv(
    req: StartRequest | RestoreStartRequest, log_path: Path, local_host: str
) -> list[str]:
    exports = str(client_targets(req, local_host))
    if isinstance(req, RestoreStartRequest):
        command = ["restore", "--nbd-sources", exports, "--target", "auto"]
    else:
        command = ["migrate", "--nbd-targets", exports, "--source", "auto"]
        command += ["--backup-type", req.backup_type.value]
        for key, change_id in sorted(req.changed_since.items()):
            command += ["--changed-since", f"{key}={change_id}"]
        for key, reason in sorted(req.full_reasons.items()):
            command += ["--full-reason", f"{key}={reason}"]
    argv = [
        *client_command(),
        *command,
        "--vmware-endpoint",
        req.vcenter_host,
        "--vmware-username",
        req.vcenter_user,
        "--vmware-password-file",
        "-",
        "--vmware-path",
        req.vm_path,
        "--job-id",
        req.job_id,
        "--progress",
        "json",
        "--log-file",
        str(log_path),
    ]
    if req.vcenter_thumbprint:
        argv += ["--vmware-thumbprint", req.vcenter_thumbprint]
    if req.max_rate_mib:
        argv += ["--max-rate", str(req.max_rate_mib)]
    return argv


class JobRunner:
    def __init__(self, settings: Settings, token: str) -> None:
        self.settings = settings
        self.jobs: dict[str, ClientJob] = {}
        self.relay = Relay(settings.node.hub_url, token)

    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state is NodeJobState.RUNNING)

    def get(self, job_id: str) -> ClientJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"job {job_id} is not known to this node")
        return job

    async def start(self, req: StartRequest | RestoreStartRequest) -> ClientJob:
        """Start the client for a backup or a restore; its lines go to the hub's events
        route of that kind of job."""
        if req.job_id in self.jobs:
            raise JobExists(f"job {req.job_id} was already started on this node")
        kind = "restore" if isinstance(req, RestoreStartRequest) else "backup"
        self.settings.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.settings.logs / f"{kind}-{safe_component(req.job_id)}.log"
        proc = await asyncio.create_subprocess_exec(
            *client_argv(req, log_path, self.settings.tunnel.local_host),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a signal to the node's group must not hit the client
        )
        job = ClientJob(
            job_id=req.job_id,
            vm_name=req.vm_name,
            log_path=log_path,
            proc=proc,
            events_path=f"/api/v1/{kind}s/{req.job_id}/events",
        )
        self.jobs[req.job_id] = job
        assert proc.stdin is not None
        try:
            proc.stdin.write(req.vcenter_password.get_secret_value().encode() + b"\n")
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client died at once; its exit code tells why
        finally:
            proc.stdin.close()
        job.tasks = [
            asyncio.create_task(self._follow(job)),
            asyncio.create_task(self.relay.deliver(job)),
        ]
        log.info("job %s: client pid %d started for %s", req.job_id, proc.pid, req.vm_name)
        return job

    async def cancel(self, job_id: str) -> ClientJob:
        job = self.get(job_id)
        if job.state is not NodeJobState.RUNNING:
            raise JobNotRunning(f"job {job_id} is not running ({job.state})")
        with contextlib.suppress(ProcessLookupError):
            job.proc.send_signal(signal.SIGTERM)
        log.info("job %s: cancel requested, SIGTERM sent to %d", job_id, job.proc.pid)
        return job

    async def _follow(self, job: ClientJob) -> None:
        await asyncio.gather(self._read_stdout(job), self._read_stderr(job))
        code = await job.proc.wait()
        job.exit_code = code if code >= 0 else 128 - code  # killed by a signal: 128+N
        job.state = NodeJobState.EXITED
        message = job.stderr_tail[-1] if job.exit_code != 0 and job.stderr_tail else None
        job.post(ClientExit(job_id=job.job_id, exit_code=job.exit_code, message=message))
        log.info("job %s: client exited with %d", job.job_id, job.exit_code)

    @staticmethod
    async def _read_stdout(job: ClientJob) -> None:
        """Progress lines to the outbox; anything else the client prints counts as stderr."""
        assert job.proc.stdout is not None
        async for raw in job.proc.stdout:
            text = raw.decode(errors="replace").strip()
            if not text:
                continue
            try:
                line = parse_line(text)
            except ValidationError:
                job.stderr_tail.append(text)
                continue
            job.post(line)

    @staticmethod
    async def _read_stderr(job: ClientJob) -> None:
        assert job.proc.stderr is not None
        async for raw in job.proc.stderr:
            text = raw.decode(errors="replace").rstrip()
            if text:
                job.stderr_tail.append(text)

    async def shutdown(self) -> None:
        """Node stopping: cancel running clients (each removes its snapshot), then wait."""
        running = [j for j in self.jobs.values() if j.state is NodeJobState.RUNNING]
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
            await asyncio.wait(pending, timeout=SHUTDOWN_DELIVERY_SECONDS)
        for task in pending:
            task.cancel()
        await self.relay.aclose()
