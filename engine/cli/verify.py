"""``sendense verify POINT``: have the hub re-read a restore point and compare every chunk
with the digests the copier took, following it to its end (a bar on a terminal)."""

from __future__ import annotations

import asyncio

import typer

from engine.cli.common import console, err_console, on_hub
from engine.contract.status import Verification
from engine.contract.verify import VerifyReport
from engine.errors import Damaged, SendenseError
from engine.hub_client import HubClient

POLL_SECONDS = 0.5


async def follow_verify(hub: HubClient, point_id: str) -> VerifyReport:
    """Start (or join) the point's verification and poll it to its end."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    report = await hub.verify(point_id)
    bars = Progress(
        "verify",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    )
    with bars:
        task = bars.add_task(point_id, total=report.bytes_total or None)
        while report.running:
            await asyncio.sleep(POLL_SECONDS)
            report = await hub.verification(point_id)
            bars.update(task, completed=report.bytes_done, total=report.bytes_total or None)
    return report


def verify_command(
    point_id: str = typer.Argument(..., help="The restore point (its backup_id)."),
    as_json: bool = typer.Option(False, "--json", help="The final VerifyReport as JSON."),
) -> None:
    """Verify a restore point: qemu-img check, then every chunk against its digest.

    Exit 0 when verified (or, for a point without digest tables, checked with a note),
    13 when damaged (the disk and byte range on one line).
    """
    report = on_hub(lambda hub: follow_verify(hub, point_id))
    if as_json:
        console.print_json(report.model_dump_json())
    if report.error:
        raise SendenseError(f"point {point_id}: {report.error}")
    if report.state == Verification.DAMAGED:
        raise Damaged(f"point {point_id}: {report.detail}")
    if not as_json:
        console.print(f"point {point_id}: {report.detail}", highlight=False, soft_wrap=True)
