"""``sendense backup``: start, queue and follow backups through the hub API, like the
console.

A job belongs to the hub, so ``--wait`` can be interrupted without stopping the backup.
The request is built as the contract's ``BackupRequest`` here, so bad input (a rate of
0, two ways of naming the VM) is refused before anything is sent. One VM starts at
once; several (or ``--queue``) go into the hub's queue, which starts them as its limits
allow.
"""

from __future__ import annotations

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from engine.cli.common import console, err_console, on_hub
from engine.contract.hub import (
    BackupPreview,
    BackupRequest,
    DiskEvent,
    Job,
    JobDisk,
    QueueRequest,
)
from engine.contract.restore import RestoreJob
from engine.contract.status import BackupType, JobStatus
from engine.errors import BadInput
from engine.hub_client import HubClient, HubUnreachable

backup_app = typer.Typer(help="Start and follow backups through the hub.", no_args_is_help=True)

# What `backup start --wait` exits with once the job ended.
EXIT_FOR = {JobStatus.COMPLETED: 0, JobStatus.FAILED: 1, JobStatus.CANCELLED: 130}


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _type_line(job: Job) -> str:
    asked = f" (asked: {job.requested_type})" if job.requested_type else ""
    parent = f" on {job.parent_backup_id}" if job.parent_backup_id else ""
    return f"{job.backup_type}{asked}{parent}"


def _where(job: Job) -> str:
    """Its place in the queue, its node and its policy, those it has."""
    parts = [
        f"position: {job.queue_position}" if job.queue_position else "",
        f"node: {job.node_name}" if job.node_name else "",
        f"policy: {job.policy_name}" if job.policy_name else "",
    ]
    return "".join(f"  {p}" for p in parts if p)


def print_job(job: Job) -> None:
    console.print(
        f"[bold]{job.backup_id}[/]  {job.vm_name}  {_type_line(job)}  "
        f"status: [bold]{job.status}[/]{_where(job)}",
        highlight=False,
    )
    if job.error_message:
        console.print(f"reason: {job.error_message}", highlight=False)
    if job.waiting_reason:
        console.print(f"waiting: {job.waiting_reason}", highlight=False)
    table = Table(
        "disk", "export", "port", "status", "mode", "done", "copy of", "disk size", "zero",
        "fallback", "qcow2",
    )  # fmt: skip
    for d in job.disks:
        table.add_row(
            str(d.disk_key),
            d.nbd_export_name,
            str(d.nbd_port or "-"),
            d.status,
            d.mode,
            _mib(d.bytes_done),
            _mib(d.bytes_total),  # an incremental's: the changed bytes
            _mib(d.capacity_bytes) if d.capacity_bytes else "-",
            _mib(d.bytes_zero),
            d.fallback_reason or "",
            d.qcow2_path,
        )
    console.print(table)


def print_preview(preview: BackupPreview) -> None:
    asked = preview.requested_type
    cbt = "on" if preview.cbt_enabled else "off"
    parent = f" on {preview.parent_backup_id}" if preview.parent_backup_id else ""
    console.print(
        f"[bold]{preview.vm_name}[/]  {preview.vm_context_id}  asked: {asked}  "
        f"will be: [bold]{preview.backup_type}[/]{parent}  CBT: {cbt}",
        highlight=False,
    )
    if preview.reason:
        console.print(f"reason: {preview.reason}", highlight=False)
    table = Table("disk", "size", "mode", "reason", "backing file")
    for d in preview.disks:
        table.add_row(
            str(d.disk_key),
            _mib(d.capacity_bytes),
            d.mode,
            d.reason or "",
            d.parent_qcow2_path or "",
        )
    console.print(table)


@backup_app.command("start")
def backup_start(
    vms: list[str] | None = typer.Argument(
        None, help="The VMs' names (one VM only may have each); several are queued."
    ),
    context: str | None = typer.Option(
        None, "--context", help="Or the VM's context id (sendense vm list)."
    ),
    path: str | None = typer.Option(
        None, "--path", help="Or the VM's inventory path, /DC/vm/.../NAME."
    ),
    repo: int = typer.Option(..., "--repo", help="Repository id (sendense repo list)."),
    backup_type: BackupType = typer.Option(
        BackupType.AUTO,
        "--type",
        help="full, incremental (what changed since the last point) or auto "
        "(incremental when the VM has a point to build on).",
    ),
    max_rate: float | None = typer.Option(
        None, "--max-rate", help="Limit each disk's copy to this many MiB/s (0.1 at least)."
    ),
    queue: bool = typer.Option(
        False, "--queue", help="Queue even one VM: the hub starts it when its limits allow."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Follow to the end: per-disk progress, or a line per queued job."
    ),
) -> None:
    """Start a backup of one VM, named by name, --context or --path; with --wait, follow it
    and exit 0 if it completed, 1 if it failed, 130 if it was cancelled. Several VMs (or
    --queue) are queued, each printed with its place; --wait then waits for all and
    exits 0 only when every one completed."""
    names: list[str | None] = list(vms or []) or [None]
    if len(names) > 1 and (context or path):
        raise BadInput("name several VMs by their names only, without --context or --path")
    requests = [
        BackupRequest(
            vm_name=name,
            vm_context_id=context,
            vm_path=path,
            repository_id=repo,
            backup_type=backup_type,
            max_rate_mib=max_rate,
        )
        for name in names
    ]
    if queue or len(requests) > 1:
        _queue(QueueRequest(backups=requests), wait)
        return

    async def start(hub: HubClient) -> Job | None:
        started = await hub.start_backup(requests[0])
        console.print(
            f"started {started.backup_id}: {started.nbd_targets_string}",
            highlight=False,
            soft_wrap=True,
        )
        return await follow(hub, started.backup_id) if wait else None

    job = on_hub(start)
    if job is not None:
        print_job(job)
        raise typer.Exit(EXIT_FOR[job.status])


def _queue(request: QueueRequest, wait: bool) -> None:
    async def run(hub: HubClient) -> list[Job] | None:
        queued = await hub.queue_backups(request)
        for job in queued:
            console.print(
                f"queued {job.backup_id}  {job.vm_name}  position {job.queue_position}",
                highlight=False,
            )
        return await follow_all(hub, [j.backup_id for j in queued]) if wait else None

    ended = on_hub(run)
    if ended is not None:
        raise typer.Exit(_exit_for_all(ended))


def _exit_for_all(jobs: list[Job]) -> int:
    """0 when every job completed; else 1 if any failed, 130 if the rest were cancelled."""
    statuses = {j.status for j in jobs}
    if statuses <= {JobStatus.COMPLETED}:
        return 0
    return EXIT_FOR[JobStatus.FAILED if JobStatus.FAILED in statuses else JobStatus.CANCELLED]


async def follow_all(hub: HubClient, backup_ids: list[str]) -> list[Job]:
    """Wait for every job to end, printing a line as each does; their final states in
    the order given."""
    ended: dict[str, Job] = {}

    def end(job: Job) -> None:
        ended[job.backup_id] = job
        reason = f": {job.error_message}" if job.error_message else ""
        console.print(f"{job.backup_id}  {job.vm_name}  {job.status}{reason}", highlight=False)

    wanted = set(backup_ids)
    async with hub.subscribe() as events:
        # Read after subscribing: an end between these reads and the stream is not lost.
        for backup_id in backup_ids:
            job = await hub.job(backup_id)
            if job.finished:
                end(job)
        while len(ended) < len(wanted):
            event = await anext(events, None)
            if event is None:
                raise HubUnreachable("the hub's event stream ended before the queued jobs did")
            if (
                isinstance(event, Job)
                and event.finished
                and event.backup_id in wanted
                and event.backup_id not in ended
            ):
                end(event)
    return [ended[backup_id] for backup_id in backup_ids]


async def follow(hub: HubClient, backup_id: str) -> Job:
    """Per-disk bars from the hub's event stream until the job ends; its final state."""
    # engine.node.progress holds the one per-disk display (the client's bars too).
    from engine.node.progress import disk_bars

    with disk_bars(err_console) as progress:
        bars = _Bars(progress)
        async with hub.subscribe() as events:
            # Read after subscribing: an end between this read and the stream is not lost.
            job = await hub.job(backup_id)
            bars.show_job(job)
            while not job.finished:
                event = await anext(events, None)
                if event is None:
                    raise HubUnreachable(f"the hub's event stream ended before {backup_id} did")
                if isinstance(event, RestoreJob) or event.backup_id != backup_id:
                    continue
                if isinstance(event, Job):
                    job = event
                    bars.show_job(job)
                else:
                    bars.show(event)
    return job


class _Bars:
    """One bar per disk, made when the disk is first heard of."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[int, TaskID] = {}

    def show(self, disk: JobDisk | DiskEvent) -> None:
        total = disk.bytes_total or None
        if disk.disk_key not in self.tasks:
            self.tasks[disk.disk_key] = self.progress.add_task(
                f"disk {disk.disk_key}", total=total, note=disk.status
            )
        self.progress.update(
            self.tasks[disk.disk_key], completed=disk.bytes_done, total=total, note=disk.status
        )

    def show_job(self, job: Job) -> None:
        for disk in job.disks:
            self.show(disk)


@backup_app.command("preview")
def backup_preview(
    vm: str | None = typer.Argument(None, help="The VM's name (one VM only may have it)."),
    context: str | None = typer.Option(None, "--context", help="Or the VM's context id."),
    path: str | None = typer.Option(None, "--path", help="Or the VM's inventory path."),
    repo: int = typer.Option(..., "--repo", help="Repository id (sendense repo list)."),
    backup_type: BackupType = typer.Option(BackupType.AUTO, "--type", help="As for start."),
) -> None:
    """What `backup start` would do with the same arguments: per disk full or
    incremental, and why; nothing is started."""
    request = BackupRequest(
        vm_name=vm, vm_context_id=context, vm_path=path, repository_id=repo,
        backup_type=backup_type,
    )  # fmt: skip
    print_preview(on_hub(lambda hub: hub.preview_backup(request)))


@backup_app.command("list")
def backup_list(
    vm: str | None = typer.Option(None, "--vm", help="Only this VM."),
    status: JobStatus | None = typer.Option(None, "--status", help="Only this status."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
) -> None:
    """Show backups, newest first (--status queued: the queue, first in line first), each
    with its place in the queue while queued and the node it runs on."""
    jobs = on_hub(lambda hub: hub.jobs(vm_name=vm, status=status, limit=limit))
    table = Table(
        "backup", "vm", "type", "status", "queue", "node", "disks", "done", "total", "created",
        "reason",
    )  # fmt: skip
    for j in jobs:
        table.add_row(
            j.backup_id,
            j.vm_name,
            j.backup_type,
            j.status,
            f"#{j.queue_position}" if j.queue_position else "",
            j.node_name or "",
            str(len(j.disks)),
            _mib(j.bytes_done),
            _mib(j.bytes_total),
            f"{j.created_at:%Y-%m-%d %H:%M:%S}" if j.created_at else "",
            j.error_message or "",
        )
    console.print(table)


@backup_app.command("show")
def backup_show(backup_id: str = typer.Argument(...)) -> None:
    """One backup with its disks."""
    print_job(on_hub(lambda hub: hub.job(backup_id)))


@backup_app.command("cancel")
def backup_cancel(backup_id: str = typer.Argument(...)) -> None:
    """Cancel a queued backup (at once), or a running one (its node removes the VMware
    snapshot)."""
    print_job(on_hub(lambda hub: hub.cancel_backup(backup_id)))
