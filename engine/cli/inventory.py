"""``sendense inventory``: what a vCenter holds, as a tree for people or JSON for scripts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.tree import Tree

from engine.cli.common import console, db_session, settings

if TYPE_CHECKING:  # engine.vcenter loads pyVmomi: only when a command needs it
    from engine.contract.inventory import Inventory

MiB = 1024 * 1024


def render_tree(inv: Inventory) -> Tree:
    """vCenter > datacenters > folders/clusters/hosts/pools > VMs, children sorted by name."""
    root = Tree(f"[bold]{inv.vcenter}[/]")
    nodes: dict[str | None, Tree] = {}
    children: dict[str | None, list[tuple[str, str, object]]] = {}
    for e in inv.entities:
        children.setdefault(e.parent, []).append((e.name, e.moref, e))
    for v in inv.vms:
        children.setdefault(v.parent, []).append((v.name, v.moref, v))
    known = {e.moref for e in inv.entities}

    def label(obj: object) -> str:
        from engine.contract.inventory import EntityInfo, VMInfo

        if isinstance(obj, VMInfo):
            disks = ", ".join(f"{d.key}:{d.capacity_bytes // MiB}M" for d in obj.disks)
            cbt = "CBT" if obj.cbt_enabled else "no CBT"
            return f"[green]{obj.name}[/] ({obj.moref}, {obj.power_state}, {cbt}, disks {disks})"
        assert isinstance(obj, EntityInfo)
        return f"[cyan]{obj.name}[/] [dim]{obj.kind}[/]"

    def add(parent_tree: Tree, parent: str | None) -> None:
        for _, moref, obj in sorted(children.get(parent, []), key=lambda c: c[0]):
            node = parent_tree.add(label(obj))
            nodes[moref] = node
            add(node, moref)

    for top in [p for p in children if p not in known]:  # the root folder's children
        add(root, top)
    return root


def inventory_command(
    vcenter_id: int = typer.Argument(..., help="The vCenter credential id."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Show a vCenter's inventory: datacenters, folders, clusters, hosts, pools, VMs."""
    from engine.vcenter import get_inventory
    from engine.vcenter.stored import connect_stored

    with db_session() as session, connect_stored(session, settings().key_path, vcenter_id) as vc:
        inv = get_inventory(vc)
    if as_json:
        print(inv.model_dump_json(indent=2))
    else:
        console.print(render_tree(inv))
