"""``sendense retention``: what the policies' retention keeps and expires, and why."""

from __future__ import annotations

import typer
from rich.table import Table

from engine.cli.common import console, on_hub
from engine.contract.policy import RetentionPlan

retention_app = typer.Typer(help="Retention of restore points.", no_args_is_help=True)


def summary(plan: RetentionPlan) -> str:
    """``12 points: 7 kept, 2 deleted, 3 merged (1 must wait)``."""
    counts = {a: sum(p.action == a for p in plan.points) for a in ("keep", "delete", "merge")}
    waiting = sum(p.blocked is not None for p in plan.points)
    text = (
        f"{len(plan.points)} points: {counts['keep']} kept, {counts['delete']} deleted, "
        f"{counts['merge']} merged"
    )
    return text + (f" ({waiting} must wait)" if waiting else "")


@retention_app.command("plan")
def retention_plan(
    policy: str | None = typer.Option(None, "--policy", help="Only this policy's points."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Every point and what the policies' expiry would do with it now (keep, delete, or
    merge into the point that builds on it), why, and what makes it wait. Nothing is
    done: the hub expires after each policy run."""
    plan = on_hub(lambda hub: hub.retention_plan(policy))
    if as_json:
        print(plan.model_dump_json(indent=2))
        return
    columns = ("point", "vm", "policy", "taken (UTC)", "type", "action", "why", "into", "waits for")
    table = Table(*columns)
    for p in plan.points:
        table.add_row(
            p.point_id,
            p.vm_name,
            p.policy or "",
            f"{p.taken_at:%Y-%m-%d %H:%M}" if p.taken_at else "",
            p.backup_type,
            p.action,
            "; ".join(p.reasons),
            p.into_point_id or "",
            p.blocked or "",
        )
    console.print(table)
    console.print(summary(plan), highlight=False)
