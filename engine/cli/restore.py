"""``sendense restore``: get data back through the hub: instant NBD exports of a point's
disk, a disk into a file, a whole VM (``restore vm``), and the restore jobs themselves.

A restore belongs to the hub like a backup: ``restore disk`` follows the job with one bar
per disk (``--no-wait`` returns at once), and an interrupted wait stops nothing.
"""

from __future__ import annotations

import os
import re

import typer
from pydantic import TypeAdapter
from rich.table import Table

from engine.cli.common import console, err_console, on_hub
from engine.cli.restore_common import end_with, follow_restore, print_restore
from engine.contract.restore import (
    TTL_DEFAULT_SECONDS,
    TTL_MAX_SECONDS,
    TTL_MIN_SECONDS,
    DiskRestoreRequest,
    ExportRequest,
    RestoreExport,
    RestoreJob,
    RestoreQuery,
)
from engine.contract.status import DiskFormat, JobStatus
from engine.errors import BadInput
from engine.hub_client import HubClient

restore_app = typer.Typer(
    help="Get data back: instant exports, a disk into a file, a whole VM; restore jobs.",
    no_args_is_help=True,
)

_EXPORTS = TypeAdapter(list[RestoreExport])
_JOBS = TypeAdapter(list[RestoreJob])
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str, option: str = "--ttl") -> int:
    """``90s``, ``30m``, ``4h``, ``2d`` (a bare number is seconds) as seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise BadInput(f"{option} {text!r}: give a duration like 90s, 30m, 4h or 2d")
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    if not TTL_MIN_SECONDS <= seconds <= TTL_MAX_SECONDS:
        raise BadInput(
            f"{option} {text}: an export lives from {TTL_MIN_SECONDS // 60}m "
            f"to {TTL_MAX_SECONDS // 86400}d"
        )
    return seconds


def _when(export: RestoreExport) -> str:
    return f"{export.expires_at.astimezone():%Y-%m-%d %H:%M:%S %Z}"


# ---- instant exports --------------------------------------------------------------------


@restore_app.command("export")
def restore_export(
    point: str = typer.Argument(..., help="The point's id (sendense restore-points list)."),
    disk: int = typer.Option(..., "--disk", help="The disk's key (2000, 2001, ...)."),
    ttl: str = typer.Option(
        f"{TTL_DEFAULT_SECONDS // 3600}h", "--ttl", help="How long it lives: 90s, 30m, 4h, 2d."
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Serve one disk of a point read-only over NBD and print its nbd:// URI.

    The export reads the point through its chain; any NBD client can read it until the
    TTL runs out. Exported already: the same export, its TTL extended."""
    request = ExportRequest(disk_key=disk, ttl_seconds=duration_seconds(ttl))
    export = on_hub(lambda hub: hub.export_point(point, request))
    if as_json:
        print(export.model_dump_json(indent=2))
        return
    console.print(export.uri, highlight=False, soft_wrap=True)
    err_console.print(f"{export.name}: read-only until {_when(export)}", highlight=False)


@restore_app.command("exports")
def restore_exports(
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """The live instant exports, the soonest to expire first."""
    exports = on_hub(lambda hub: hub.restore_exports())
    if as_json:
        print(_EXPORTS.dump_json(exports, indent=2).decode())
        return
    table = Table("name", "point", "vm", "disk", "uri", "expires")
    for e in exports:
        table.add_row(e.name, e.point_id, e.vm_name, str(e.disk_key), e.uri, _when(e))
    console.print(table)


@restore_app.command("unexport")
def restore_unexport(name: str = typer.Argument(..., help="The export's name.")) -> None:
    """End an instant export now."""
    on_hub(lambda hub: hub.unexport(name))
    console.print(f"ended {name}", highlight=False)


# ---- a disk into a file -----------------------------------------------------------------


@restore_app.command("disk")
def restore_disk(
    point: str = typer.Argument(..., help="The point's id (sendense restore-points list)."),
    disk: int = typer.Option(..., "--disk", help="The disk's key (2000, 2001, ...)."),
    to: str = typer.Option(..., "--to", help="The file to write, on the hub's machine."),
    fmt: DiskFormat = typer.Option(DiskFormat.RAW, "--format", help="raw, qcow2 or vmdk."),
    force: bool = typer.Option(False, "--force", help="Replace an existing file."),
    max_rate: float | None = typer.Option(
        None, "--max-rate", help="Limit the copy to this many MiB/s (0.1 at least)."
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow it to its end."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Write one disk of a point into a standalone image file on the hub's machine.

    No backing chain; raw is sparse where the disk is; vmdk is streamOptimized, which
    vSphere imports. Free space is checked first; an existing file is replaced only with
    --force, once the new one is whole. Waiting, it exits 0 if it completed, 1 if it
    failed, 130 if it was cancelled."""
    request = DiskRestoreRequest(
        point_id=point,
        disk_key=disk,
        path=os.path.abspath(os.path.expanduser(to)),
        format=fmt,
        force=force,
        max_rate_mib=max_rate,
    )

    async def run(hub: HubClient) -> RestoreJob:
        job = await hub.restore_disk(request)
        if not wait:
            return job
        err_console.print(f"started {job.restore_id}", highlight=False)
        return await follow_restore(hub, job.restore_id)

    job = on_hub(run)
    if wait:
        end_with(job, as_json=as_json)
    print_restore(job, as_json=as_json)


# ---- restore jobs -----------------------------------------------------------------------


@restore_app.command("list")
def restore_list(
    point: str | None = typer.Option(None, "--point", help="Only restores of this point."),
    status: JobStatus | None = typer.Option(None, "--status", help="Only this status."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Restore jobs, newest first."""
    query = RestoreQuery(point_id=point, status=status, limit=limit)
    jobs = on_hub(lambda hub: hub.restores(query))
    if as_json:
        print(_JOBS.dump_json(jobs, indent=2).decode())
        return
    table = Table("restore", "kind", "point", "target", "status", "done", "total", "reason")
    for j in jobs:
        table.add_row(
            j.restore_id,
            j.kind,
            j.point_id,
            j.target,
            j.status,
            f"{j.bytes_done / 2**20:.1f} MiB",
            f"{j.bytes_total / 2**20:.1f} MiB",
            j.error_message or "",
        )
    console.print(table)


@restore_app.command("show")
def restore_show(
    restore_id: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """One restore job with its disks."""
    print_restore(on_hub(lambda hub: hub.restore(restore_id)), as_json=as_json)


@restore_app.command("cancel")
def restore_cancel(
    restore_id: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Cancel a running restore (a disk restore's partial file is removed)."""
    print_restore(on_hub(lambda hub: hub.cancel_restore(restore_id)), as_json=as_json)


from engine.cli.restore_vm import restore_vm_command  # noqa: E402 - a module of its own

restore_app.command("vm")(restore_vm_command)

from engine.cli.restore_files import files_app  # noqa: E402 - a module of its own

restore_app.add_typer(files_app, name="files")
