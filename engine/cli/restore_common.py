"""What the ``restore`` commands share: showing a restore job, and following one to its
end from the hub's event stream (``--wait``), with one bar per disk like a backup."""

from __future__ import annotations

import typer
from rich.table import Table

from engine.cli.backup import EXIT_FOR
from engine.cli.common import console, err_console
from engine.contract.restore import RestoreJob
from engine.hub_client import HubClient, HubUnreachable


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def print_restore(job: RestoreJob, *, as_json: bool = False) -> None:
    if as_json:
        console.print_json(job.model_dump_json())
        return
    console.print(
        f"[bold]{job.restore_id}[/]  {job.kind} restore of {job.point_id} to {job.target}  "
        f"status: [bold]{job.status}[/]",
        highlight=False,
        soft_wrap=True,
    )
    if job.vm_path:
        console.print(f"VM: {job.vm_path}", highlight=False)
    if job.error_message:
        console.print(f"reason: {job.error_message}", highlight=False, soft_wrap=True)
    table = Table("disk", "status", "done", "total", "zero", "from", "to")
    for d in job.disks:
        table.add_row(
            str(d.disk_key),
            d.status,
            _mib(d.bytes_done),
            _mib(d.bytes_total),
            _mib(d.bytes_zero),
            d.source_path,
            d.target or "",
        )
    console.print(table)


async def follow_restore(hub: HubClient, restore_id: str) -> RestoreJob:
    """Per-disk bars from the hub's event stream until the restore ends; its final state."""
    from engine.node.progress import disk_bars

    with disk_bars(err_console) as progress:
        tasks: dict[int, object] = {}

        def show(job: RestoreJob) -> None:
            for d in job.disks:
                total = d.bytes_total or None
                if d.disk_key not in tasks:
                    tasks[d.disk_key] = progress.add_task(
                        f"disk {d.disk_key}", total=total, note=d.status
                    )
                progress.update(
                    tasks[d.disk_key],  # type: ignore[arg-type]
                    completed=d.bytes_done,
                    total=total,
                    note=d.status,
                )

        async with hub.subscribe() as events:
            # Read after subscribing: an end between this read and the stream is not lost.
            job = await hub.restore(restore_id)
            show(job)
            while not job.finished:
                event = await anext(events, None)
                if event is None:
                    raise HubUnreachable(f"the hub's event stream ended before {restore_id} did")
                if isinstance(event, RestoreJob) and event.restore_id == restore_id:
                    job = event
                    show(job)
    return job


def end_with(job: RestoreJob, *, as_json: bool = False) -> None:
    """Show the finished restore and exit 0 if it completed, 1 if it failed, 130 if it
    was cancelled (as ``backup start --wait`` does)."""
    print_restore(job, as_json=as_json)
    raise typer.Exit(EXIT_FOR[job.status])
