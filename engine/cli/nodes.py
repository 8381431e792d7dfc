"""``sendense nodes``: the backup nodes (SNA) the hub hands jobs to.

The hub's heartbeat is where a node's state lives, so every command asks the hub first.
When no hub answers (not started yet, or stopped), the commands work on the database
themselves, and the list asks each node's health from here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from pydantic import TypeAdapter
from rich.table import Table

from engine.api.auth import TokenError, node_token
from engine.cli.common import console, db_session, err_console, on_hub, settings
from engine.cli.repo import human_bytes
from engine.contract.hub import NodeEdit, NodeIn, NodeInfo
from engine.errors import BadInput
from engine.hub_client import HubClient, HubUnreachable

T = TypeVar("T")

nodes_app = typer.Typer(
    help="Backup nodes (SNA) the hub hands jobs to; with no command, the list.",
    invoke_without_command=True,
)

_INFOS = TypeAdapter(list[NodeInfo])

VCENTER_HELP = "A vCenter host it may serve (repeat for more; none given: every one)."
MAX_JOBS_HELP = "Jobs it runs at once (default: the [queue] setting jobs_per_node)."
MAX_DISKS_HELP = "Disks it copies at once (default: the [queue] setting disks_per_node)."


def _hub_or_none(call: Callable[[HubClient], Awaitable[T]]) -> T | None:
    """The hub's answer, or None when no hub answers here (nor ever made its token)."""
    try:
        return on_hub(call)
    except (HubUnreachable, TokenError) as exc:
        err_console.print(f"note: {exc}; working on the database", highlight=False, soft_wrap=True)
        return None


@nodes_app.callback()
def nodes_main(ctx: typer.Context) -> None:
    """Backup nodes (SNA) the hub hands jobs to; with no command, the list."""
    if ctx.invoked_subcommand is None:
        nodes_list(as_json=False)


@nodes_app.command("add")
def nodes_add(
    name: str = typer.Option(..., "--name", help="A short name for the node."),
    url: str = typer.Option(
        ..., "--url", help="Its API as the hub reaches it, e.g. http://127.0.0.1:9081 (tunnel)."
    ),
    vcenter: list[str] = typer.Option([], "--vcenter", help=VCENTER_HELP),
    max_jobs: int | None = typer.Option(None, "--max-jobs", help=MAX_JOBS_HELP),
    max_disks: int | None = typer.Option(None, "--max-disks", help=MAX_DISKS_HELP),
) -> None:
    """Register a node; prints its id. Once any node is registered the hub adds no default."""
    body = NodeIn(name=name, url=url, vcenters=vcenter, max_jobs=max_jobs, max_disks=max_disks)
    info = _hub_or_none(lambda hub: hub.add_node(body))
    if info is not None:
        console.print(info.id)
        return
    from engine.hub.nodes import add_node

    with db_session() as session:
        console.print(add_node(session, body).id)


@nodes_app.command("edit")
def nodes_edit(
    name: str = typer.Argument(..., help="The node's name."),
    url: str | None = typer.Option(None, "--url", help="Its API as the hub reaches it."),
    vcenter: list[str] = typer.Option(
        [], "--vcenter", help="A vCenter host it may serve; replaces the list (repeatable)."
    ),
    all_vcenters: bool = typer.Option(False, "--all-vcenters", help="Serve every vCenter."),
    max_jobs: int | None = typer.Option(None, "--max-jobs", help=MAX_JOBS_HELP),
    max_disks: int | None = typer.Option(None, "--max-disks", help=MAX_DISKS_HELP),
    enabled: bool | None = typer.Option(
        None, "--enable/--disable", help="Whether it takes new jobs (running ones go on)."
    ),
) -> None:
    """Change a node: only what is given changes."""
    if vcenter and all_vcenters:
        raise BadInput("give either --vcenter or --all-vcenters, not both")
    given = {
        "url": url,
        "vcenters": [] if all_vcenters else (vcenter or None),
        "max_jobs": max_jobs,
        "max_disks": max_disks,
        "enabled": enabled,
    }
    body = NodeEdit(**{k: v for k, v in given.items() if v is not None})
    if not body.model_fields_set:
        raise BadInput(
            "nothing to change: give --url, --vcenter, --all-vcenters, --max-jobs, "
            "--max-disks, --enable or --disable"
        )
    info = _hub_or_none(lambda hub: hub.edit_node(name, body))
    if info is not None:
        line = _summary(info.name, info.url, info.vcenters, info.max_jobs, info.max_disks)
        enabled_now = info.enabled
    else:
        from engine.hub.nodes import capacity, edit_node, vcenters_of

        with db_session() as session:
            node = edit_node(session, name, body)
            line = _summary(node.name, node.url, vcenters_of(node), *capacity(node, settings()))
            enabled_now = node.enabled
    console.print(
        f"{line}, {'enabled' if enabled_now else 'disabled'}", highlight=False, soft_wrap=True
    )


def _summary(name: str, url: str, vcenters: list[str], max_jobs: int, max_disks: int) -> str:
    serves = ", ".join(vcenters) or "every vCenter"
    return f"node {name}: {url}, serves {serves}, {max_jobs} job(s) and {max_disks} disk(s) at once"


@nodes_app.command("remove")
def nodes_remove(name: str = typer.Argument(..., help="The node's name.")) -> None:
    """Forget a node (refused while a job runs on it); its finished jobs' points stay."""

    async def delete(hub: HubClient) -> bool:
        await hub.delete_node(name)
        return True

    if _hub_or_none(delete) is None:
        from engine.hub.nodes import remove_node

        with db_session() as session:
            remove_node(session, name)
    console.print(f"node {name} removed", highlight=False)


def _local_infos() -> list[NodeInfo]:
    """The nodes as this machine sees them now, without a hub: each asked once."""
    from engine.hub.fleet import NodeWatch

    s = settings()
    with db_session():  # the database brought to the newest schema first
        watch = NodeWatch(s, node_token(s), standalone=True)
        watch.beat()
        return watch.infos({})


def _state(info: NodeInfo) -> str:
    """Up or down and why, without the node's name (its row says it)."""
    if info.state == "down":
        text = f"down: {(info.error or '').removeprefix(f'node {info.name}: ')}"
    elif info.version is None:
        text = f"up: not answered yet ({info.error})" if info.error else "up: not asked yet"
    else:
        failed = f"; its last health check failed: {info.error}" if info.error else ""
        text = f"up: version {info.version}, {info.jobs_running} job(s) running{failed}"
    return text if info.enabled else f"disabled, {text}"


@nodes_app.command("list")
def nodes_list(
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Each node: its state (from the hub's heartbeat), load (jobs and disks running of
    its capacity), throughput now, bytes copied in the last hour, and vCenters served."""
    infos = _hub_or_none(lambda hub: hub.nodes())
    if infos is None:
        infos = _local_infos()
    if as_json:
        print(_INFOS.dump_json(infos, indent=2).decode())
        return
    table = Table(
        "id", "name", "url", "state", "jobs", "disks", "MiB/s", "last hour", "last seen",
        "vCenters",
    )  # fmt: skip
    for n in infos:
        seen = f"{n.last_seen_at:%Y-%m-%d %H:%M:%S}" if n.last_seen_at else "never"
        table.add_row(
            str(n.id),
            n.name,
            n.url,
            _state(n),
            f"{n.jobs_active}/{n.max_jobs}",
            f"{n.disks_active}/{n.max_disks}",
            f"{n.throughput_bps / 2**20:.1f}",
            human_bytes(n.bytes_last_hour),
            seen,
            ", ".join(n.vcenters) or "all",
        )
    console.print(table)
