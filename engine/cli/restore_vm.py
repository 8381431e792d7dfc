"""``sendense restore vm``: a point's whole VM back into vCenter, as a hub restore job.

The hub checks everything first (the point, its recorded configuration, the name, the
placement) and answers with the pending job: vCenter makes the VM and a node writes its
disks after that. Without ``--wait`` the command prints the restore id and the VM's
path and returns; with it, one bar per disk until the end, and the exit code says how
it ended (0, 1, 130). ``--overwrite`` asks nothing here: naming the VM again is the
confirmation (the console asks for it typed).
"""

from __future__ import annotations

import typer

from engine.cli.common import console, err_console, on_hub
from engine.cli.restore_common import end_with, follow_restore, print_restore
from engine.contract.restore import RestoreJob, VMRestoreRequest
from engine.hub_client import HubClient


def restore_vm_command(
    point: str = typer.Argument(..., help="The point's id (sendense restore-points list)."),
    name: str | None = typer.Option(None, "--name", help="The restored VM's name."),
    folder: str | None = typer.Option(
        None, "--folder", help="VM folder, /DC/vm/...: default, where the VM lived."
    ),
    datastore: str | None = typer.Option(
        None, "--datastore", help="Datastore for its disks: default, the VM's."
    ),
    pool: str | None = typer.Option(
        None, "--pool", help="Resource pool, /DC/host/.../Resources: default, the VM's."
    ),
    power_on: bool = typer.Option(False, "--power-on", help="Power it on once restored."),
    wait: bool = typer.Option(False, "--wait", help="Show per-disk progress until the end."),
    overwrite: str | None = typer.Option(
        None,
        "--overwrite",
        metavar="VM",
        help="Replace the original VM: name it again. It is removed only once its copy is whole.",
    ),
    max_rate: float | None = typer.Option(
        None, "--max-rate", help="Limit each disk's copy to this many MiB/s (0.1 at least)."
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Recreate a point's VM in vCenter with its recorded configuration, and have a node
    write its disks. With --wait, follow it and exit 0 if it completed, 1 if it failed,
    130 if it was cancelled."""
    request = VMRestoreRequest(
        point_id=point,
        name=name,
        folder=folder,
        datastore=datastore,
        pool=pool,
        power_on=power_on,
        overwrite=overwrite,
        max_rate_mib=max_rate,
    )

    async def run(hub: HubClient) -> RestoreJob:
        job = await hub.restore_vm(request)
        if not as_json:
            out = console if not wait else err_console
            out.print(f"started {job.restore_id}: VM {job.vm_path}", highlight=False)
            if overwrite:
                out.print(
                    f"it becomes {job.target} once its disks are written and the original "
                    "is removed",
                    highlight=False,
                )
        return await follow_restore(hub, job.restore_id) if wait else job

    job = on_hub(run)
    if wait:
        end_with(job, as_json=as_json)
    if as_json:
        print_restore(job, as_json=True)
