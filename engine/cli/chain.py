"""``sendense chain``: a restore point's chain, and merging a point into its child."""

from __future__ import annotations

import asyncio

import typer
from pydantic import TypeAdapter
from rich.table import Table

from engine.cli.common import console, on_hub
from engine.cli.restore_points import size_text
from engine.contract.restore import MergeResult, RestorePoint
from engine.hub_client import HubClient

chain_app = typer.Typer(
    help="Chains of restore points: an incremental builds on its parent.", no_args_is_help=True
)

_POINTS = TypeAdapter(list[RestorePoint])


def merged_text(result: MergeResult) -> str:
    into = result.into_point_id
    now = (
        f"{into} now builds on {result.chain[-2]}"
        if len(result.chain) > 1
        else f"{into} now stands alone (a synthetic full)"
    )
    return f"merged {result.merged_point_id} into {into}: {now}"


@chain_app.command("merge")
def chain_merge(
    point: str = typer.Argument(..., help="The point to fold into its one child."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Fold a point into the point that builds on it (the chain's full: the child becomes
    a synthetic full). Refused while the point or a later one is read, or a backup of the
    VM runs."""
    result = on_hub(lambda hub: hub.merge_point(point))
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    console.print(merged_text(result), highlight=False, soft_wrap=True)


async def _chain(hub: HubClient, point_id: str) -> list[RestorePoint]:
    last = await hub.restore_point(point_id)
    earlier = await asyncio.gather(*(hub.restore_point(p) for p in last.chain[:-1]))
    return [*earlier, last]


@chain_app.command("show")
def chain_show(
    point: str = typer.Argument(..., help="A point of the chain (its newest, usually)."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """The point's chain, oldest (its full) first, with what each point's files take."""
    points = on_hub(lambda hub: _chain(hub, point))
    if as_json:
        print(_POINTS.dump_json(points, indent=2).decode())
        return
    table = Table("point", "type", "completed", "size", "state")
    for p in points:
        at = p.completed_at or p.created_at
        when = f"{at:%Y-%m-%d %H:%M:%S}" if at else ""
        table.add_row(p.point_id, p.backup_type, when, size_text(p.size_bytes), p.verification)
    console.print(table)
