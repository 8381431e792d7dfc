"""``sendense lab``: a vCenter simulator to try and test Sendense without a vCenter."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from engine.cli.common import console, db_session, err_console, settings
from engine.errors import BadInput

if TYPE_CHECKING:  # engine.lab loads pyVmomi: only when a command needs it
    from engine.lab.launcher import LabInfo


def say(text: str) -> None:
    """One line, never wrapped (scripts and tests read these lines)."""
    console.print(text, highlight=False, soft_wrap=True)


lab_app = typer.Typer(
    help="The vcsim lab: a simulated vCenter with the seed's DatabanxDC/pgtest1.",
    no_args_is_help=True,
)


def _running() -> LabInfo:
    from engine.lab import LabError, lab_dir, lab_status

    info = lab_status(lab_dir(settings()))
    if info is None:
        raise LabError("the lab is not running: start it with `sendense lab up`")
    return info


@lab_app.command("up")
def lab_up(
    vms: int = typer.Option(4, "--vms", min=0, help="Simulator VMs besides the seed site."),
    hosts: int = typer.Option(3, "--hosts", min=1, help="Hosts per simulator cluster."),
    clusters: int = typer.Option(1, "--clusters", min=0, help="Simulator clusters."),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="HTTPS port on 127.0.0.1 (default lab.port)."
    ),
    disk_mib: int = typer.Option(
        24, "--disk-mib", min=1, max=65536, help="pgtest1's first disk (the second is 5/3 of it)."
    ),
) -> None:
    """Build (once) and start the lab in the background, then register it: a vCenter
    credential with its thumbprint pinned, the default repository, and VM pgtest1."""
    from engine.lab import lab_dir, lab_status, register, start

    s = settings()
    folder = lab_dir(s)
    running = lab_status(folder)
    if running and port is not None and port != running.port:
        raise BadInput(f"the lab already runs on port {running.port}: `sendense lab down` first")
    if not running:
        err_console.print("starting the lab (the first start builds it: a few seconds)…")
    info = running or start(
        folder,
        port=port or s.lab.port,
        vms=vms,
        hosts=hosts,
        clusters=clusters,
        disk_mib=disk_mib,
    )
    with db_session() as session:
        reg = register(session, s, info)
    state = "already running" if running else "started"
    say(f"lab {state}: {info.url} (pid {info.pid})")
    say(f"user:       {info.user}")
    say(f"password:   in {info.password_file}")
    say(f"thumbprint: {info.thumbprint}")
    console.print(
        f'registered: vCenter credential {reg.credential_id} ("lab"), repository '
        f"{reg.repository_id}, VM pgtest1 as {reg.context_id}",
        highlight=False,
        soft_wrap=True,
    )


@lab_app.command("down")
def lab_down() -> None:
    """Stop the lab and remove its datastores and log (its build and identity are kept)."""
    from engine.lab import lab_dir, stop

    was = stop(lab_dir(settings()))
    console.print("lab stopped" if was else "lab was not running")


@lab_app.command("status")
def lab_status_command() -> None:
    """Whether the lab runs (exit code 0) or not (exit code 1), and where."""
    from engine.lab import lab_dir, lab_status

    info = lab_status(lab_dir(settings()))
    if info is None:
        console.print("lab: not running")
        raise typer.Exit(1)
    say(f"lab: running at {info.url} (pid {info.pid})")
    say(f"user: {info.user}; password in {info.password_file}")
    say(f"thumbprint: {info.thumbprint}")


@lab_app.command("write")
def lab_write(
    vm: str = typer.Argument(..., help="VM name (e.g. pgtest1) or moref."),
    disk: int = typer.Option(..., "--disk", help="Disk device key, e.g. 2000."),
    offset: int = typer.Option(..., "--offset", min=0, help="Byte offset."),
    length: int = typer.Option(..., "--length", min=1, help="Bytes to write."),
    zero: bool = typer.Option(False, "--zero", help="Write zeroes over what is there."),
) -> None:
    """Write new data (or zeroes) into a VM's disk as a guest would; CBT records it.
    Prints the disk's new change id."""
    from engine.lab.client import write

    say(write(_running(), vm, disk, offset, length, zero=zero))


@lab_app.command("reset-cbt")
def lab_reset(
    vm: str = typer.Argument(..., help="VM name or moref."),
    disk: int = typer.Option(..., "--disk", help="Disk device key."),
) -> None:
    """Restart a disk's change tracking (new uuid): the next backup must be a full one."""
    from engine.lab.client import reset_tracking

    say(reset_tracking(_running(), vm, disk))


@lab_app.command("quiesce-fault")
def lab_quiesce_fault(
    vm: str = typer.Argument(..., help="VM name or moref."),
    enabled: bool = typer.Option(True, "--on/--off", help="Make quiescing fail, or not."),
) -> None:
    """Make quiesced snapshots of a VM fail, as when VMware Tools cannot quiesce it."""
    from engine.lab.client import quiesce_fault

    quiesce_fault(_running(), vm, enabled)
    say(f"quiesce fault {'on' if enabled else 'off'} for {vm}")
