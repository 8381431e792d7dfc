"""``sendense nodes``: the backup nodes (SNA) the hub hands jobs to, from its database."""

from __future__ import annotations

import typer
from rich.table import Table

from engine.api.auth import node_token
from engine.cli.common import console, db_session, settings
from engine.errors import SendenseError
from engine.hub.nodes import NodeClient, NodeRef, add_node, list_nodes

nodes_app = typer.Typer(help="Backup nodes (SNA) the hub hands jobs to.", no_args_is_help=True)


@nodes_app.command("add")
def nodes_add(
    name: str = typer.Option(..., "--name", help="A short name for the node."),
    url: str = typer.Option(
        ..., "--url", help="Its API as the hub reaches it, e.g. http://127.0.0.1:9081 (tunnel)."
    ),
) -> None:
    """Register a node; prints its id. Once any node is registered the hub adds no default."""
    with db_session() as session:
        console.print(add_node(session, name, url).id)


@nodes_app.command("list")
def nodes_list() -> None:
    """Show the nodes and whether each answers now."""
    s = settings()
    with db_session() as session:
        refs = [(NodeRef(n.id, n.name, n.url), n.enabled) for n in list_nodes(session)]
    if not refs:  # what the hub registers on its first start
        refs = [(NodeRef(0, s.node.name, f"http://127.0.0.1:{s.node.port}"), True)]
    token = node_token(s)
    table = Table("id", "name", "url", "enabled", "state")
    for ref, enabled in refs:
        try:
            health = NodeClient(ref, token).health()
            state = f"up: version {health.version}, {health.jobs_running} job(s) running"
        except SendenseError as exc:
            state = f"down: {exc}"
        table.add_row(str(ref.id), ref.name, ref.url, "yes" if enabled else "no", state)
    console.print(table)
