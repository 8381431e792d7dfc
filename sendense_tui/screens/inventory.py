"""Inventory: vCenter → datacenters → folders, clusters, hosts → VMs, and a VM's detail.

The first expansion of a vCenter fetches its whole inventory in one call (with a
"loading…" child meanwhile); every deeper node is built only when it is opened, from
the ``InventoryIndex``, so thousands of VMs cost nothing until someone looks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Input, Static, Tree
from textual.widgets.tree import TreeNode

from engine.contract.hub import Job, JobSummary, VCenter, VMContext
from engine.contract.inventory import Inventory, VMInfo
from sendense_tui import fmt
from sendense_tui.contexts import enable_cbt
from sendense_tui.inventory import Group, InventoryIndex, datacenter_of, folder_of, total_bytes
from sendense_tui.keymap import bindings, keys_for
from sendense_tui.messages import OpenJob, OpenRestorePoints
from sendense_tui.screens.backup import BackupModal
from sendense_tui.screens.base import SendenseScreen
from sendense_tui.screens.help import pretty
from sendense_tui.screens.modals import ConfirmModal
from sendense_tui.state import ConsoleState, LoginState
from sendense_tui.widgets.filter_box import FilterInput
from sendense_tui.widgets.header import HubHeader

FILTER_LIMIT = 500
ICONS = {"vcenter": "◆", "datacenter": "▣", "folder": "▸", "cluster": "⬡", "host": "▪"}


@dataclass
class Entry:
    """What a tree node stands for; ``group``/``vm`` are set once the inventory is in."""

    kind: str
    vcenter_id: int
    group: Group | None = None
    vm: VMInfo | None = None
    loaded: bool = False


class InventoryTree(Tree[Entry]):
    BINDINGS = bindings("inventory.mark", "inventory.expand")

    def action_mark(self) -> None:
        screen = self.screen
        if isinstance(screen, InventoryScreen):
            screen.toggle_mark()

    def action_expand(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand:
            node.toggle()


class InventoryScreen(SendenseScreen):
    BINDINGS = bindings(
        "inventory.filter",
        "inventory.backup",
        "inventory.points",
        "inventory.cbt",
        "inventory.refresh",
        "inventory.expand_all",
        "nav.back",
    )

    def compose(self) -> ComposeResult:
        yield HubHeader(self.state)
        with Horizontal(id="inventory-body"):
            with Vertical(id="tree-pane"):
                yield FilterInput(self.vm_tree, "/ filters VMs by name", id="filter")
                yield self.vm_tree
            yield Static(id="vm-detail")
        yield Static(id="inventory-status")
        yield Footer()

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(state)
        # Held, not queried: callbacks may land while the screen is being torn down.
        self.vm_tree = InventoryTree("vCenters", id="inventory-tree")
        self.vm_tree.show_root = False
        self._refresh_next = False  # the next inventory fetch bypasses the hub's cache

    def on_mount(self) -> None:
        self.vm_tree.focus()
        self._load_vcenters()
        self._show_status()

    def _load_vcenters(self) -> None:
        self.call_hub(self.state.client.vcenters(), self._set_vcenters)

    def _set_vcenters(self, vcenters: list[VCenter]) -> None:
        tree = self.vm_tree
        tree.clear()
        for vc in vcenters:
            label = f"{ICONS['vcenter']} {vc.name or vc.host}  ({vc.host})"
            node = tree.root.add(label, data=Entry("vcenter", vc.id))
            node.add_leaf("loading…")
        if not vcenters:
            tree.root.add_leaf("no vCenter yet: press 4 and add one")
        elif len(vcenters) == 1:
            tree.root.children[0].expand()
        tree.cursor_line = 0

    # -- lazy loading -----------------------------------------------------------------------

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Entry]) -> None:
        entry = event.node.data
        if entry is None or entry.loaded:
            return
        if entry.group is None:  # a vCenter whose inventory has not come yet
            self._fetch_inventory(event.node)
        else:
            self._fill(event.node)

    def _fetch_inventory(self, node: TreeNode[Entry]) -> None:
        entry = node.data
        assert entry is not None

        def arrived(inventory: Inventory) -> None:
            self._refresh_next = False
            index = InventoryIndex(inventory)
            self.state.inventories[entry.vcenter_id] = index
            self.state.logins[entry.vcenter_id] = LoginState.OK
            entry.group = Group("vcenter", "")
            entry.group.groups = {("datacenter", k): v for k, v in index.datacenters.items()}
            self._fill(node)
            if len(index.datacenters) == 1:
                node.children[0].expand()
            self._apply_filter()

        self.call_hub(
            self.state.client.inventory(entry.vcenter_id, refresh=self._refresh_next),
            arrived,
            name=f"inv{entry.vcenter_id}",
        )

    def _fill(self, node: TreeNode[Entry]) -> None:
        entry = node.data
        assert entry is not None and entry.group is not None
        node.remove_children()
        groups = list(entry.group.groups.values())
        # The VM view first (folders, then VMs), then where they run (clusters, hosts).
        for group in (g for g in groups if g.kind in ("datacenter", "folder")):
            self._add_group(node, entry.vcenter_id, group)
        for vm in entry.group.vms:
            node.add_leaf(
                self._vm_label(entry.vcenter_id, vm), data=Entry("vm", entry.vcenter_id, vm=vm)
            )
        for group in (g for g in groups if g.kind not in ("datacenter", "folder")):
            self._add_group(node, entry.vcenter_id, group)
        entry.loaded = True

    @staticmethod
    def _add_group(node: TreeNode[Entry], vcenter_id: int, group: Group) -> None:
        label = f"{ICONS.get(group.kind, '·')} {group.name}"
        node.add(label, data=Entry(group.kind, vcenter_id, group=group))

    def _vm_label(self, vcenter_id: int, vm: VMInfo, full_path: bool = False) -> Text:
        marked = (vcenter_id, vm.path) in self.state.marks
        label = Text("◉ " if marked else "  ", style="bold magenta" if marked else "")
        on = vm.power_state.lower() == "poweredon"
        label.append("● " if on else "○ ", style="green" if on else "dim")
        label.append(vm.path if full_path else vm.name)
        return label

    # -- marks, detail, filter --------------------------------------------------------------

    def toggle_mark(self) -> None:
        node = self.vm_tree.cursor_node
        if node is None or node.data is None or node.data.vm is None:
            return
        key = (node.data.vcenter_id, node.data.vm.path)
        self.state.marks.symmetric_difference_update({key})
        node.set_label(self._vm_label(key[0], node.data.vm, self._filtering))
        self.vm_tree.action_cursor_down()
        self._show_status()

    def _relabel(self, node: TreeNode[Entry]) -> None:
        for child in node.children:
            if child.data is not None and child.data.vm is not None:
                child.set_label(
                    self._vm_label(child.data.vcenter_id, child.data.vm, self._filtering)
                )
            else:
                self._relabel(child)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[Entry]) -> None:
        entry = event.node.data
        detail = self.query_one("#vm-detail", Static)
        if entry is None or entry.vm is None:
            detail.update(Text("Move to a VM to see its disks and backups.", style="dim"))
            return
        detail.update(self._vm_detail(entry.vm))

    def _vm_detail(self, vm: VMInfo) -> Text:
        context = self.state.contexts.get(vm.path)
        text = Text()
        text.append(f"{vm.name}\n", style="bold")
        rows = [
            ("path", vm.path),
            ("power", vm.power_state or "—"),
            ("guest", vm.guest_os or "—"),
            ("CPUs", str(vm.cpus or "—")),
            ("memory", fmt.size((vm.memory_mb or 0) * 2**20) if vm.memory_mb else "—"),
            ("CBT", self._cbt_state(vm)),
            ("snapshots", "present" if vm.has_snapshots else "none"),
        ]
        for name, value in rows:
            text.append(f"{name:>10} ", style="dim")
            text.append(f"{value}\n")
        text.append(f"\ndisks ({fmt.size(total_bytes(vm))})\n", style="bold")
        for disk in vm.disks:
            text.append(f"  {disk.key:<5} {fmt.size(disk.capacity_bytes):>10}  {disk.datastore}\n")
        text.append("\nlast backups", style="bold")
        text.append("  p: restore points\n", style="dim")
        backups: Sequence[JobSummary | Job] = (context.last_backups if context else []) or [
            job for job in self.state.store.ordered() if job.vm_name == vm.name
        ][:5]
        if not backups:
            text.append("  none yet\n", style="dim")
        for job in backups[:5]:
            moment = job.completed_at or job.created_at
            when = moment.isoformat()[:16] if moment else ""
            text.append(f"  {when:<16} {job.status:<10} {fmt.size(job.bytes_total)}\n")
        return text

    def _cbt_state(self, vm: VMInfo) -> str:
        """vCenter's word (the inventory), or the hub's once it turned CBT on here."""
        context = self.state.contexts.get(vm.path)
        if vm.cbt_enabled or (context is not None and context.cbt_enabled):
            return "enabled"
        key = pretty(keys_for("inventory.cbt", self.state.keymap))
        return f"off (full backups only; {key} enables it)"

    @property
    def _filtering(self) -> bool:
        return bool(self.query_one("#filter", Input).value.strip())

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        # set_focus at once (focus() is deferred): keys typed ahead must reach the box.
        self.app.set_focus(box)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self._apply_filter()

    def _apply_filter(self) -> None:
        """Matches only, as full paths under their vCenter; empty filter: the lazy tree."""
        text = self.query_one("#filter", Input).value.strip()
        for node in self.vm_tree.root.children:
            entry = node.data
            if entry is None or entry.vcenter_id not in self.state.inventories:
                continue
            if not text:
                entry.loaded = False
                self._fill(node)
                continue
            matches = self.state.inventories[entry.vcenter_id].matching(text)
            node.remove_children()
            entry.loaded = True  # with the matches: expanding it must not rebuild the tree
            for vm in matches[:FILTER_LIMIT]:
                node.add_leaf(
                    self._vm_label(entry.vcenter_id, vm, True),
                    data=Entry("vm", entry.vcenter_id, vm=vm),
                )
            if len(matches) > FILTER_LIMIT:
                node.add_leaf(Text(f"… {len(matches) - FILTER_LIMIT} more: type more", style="dim"))
            if not matches:
                node.add_leaf(Text(f"no VM name contains {text!r}", style="dim"))
            node.expand()
        self._show_status()

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.value or box.has_focus:
            box.value = ""
            self.app.set_focus(self.vm_tree)

    def _show_status(self) -> None:
        marks = len(self.state.marks)
        text = self.query_one("#filter", Input).value.strip()
        parts = [f"{marks} marked" if marks else "space marks VMs, b backs up"]
        if text:
            parts.append(f"filter: {text}")
        self.query_one("#inventory-status", Static).update(" · ".join(parts))

    def action_refresh(self) -> None:
        self.state.inventories.clear()
        self._refresh_next = True
        self.call_hub(self.state.client.vms(), self.state.set_contexts)
        self._load_vcenters()

    # -- back up ------------------------------------------------------------------------

    def action_backup(self) -> None:
        chosen: list[tuple[int, VMInfo]] = []
        for vcenter_id, path in sorted(self.state.marks):
            inventory = self.state.inventories.get(vcenter_id)
            vm = inventory.by_path.get(path) if inventory else None
            if vm is not None:
                chosen.append((vcenter_id, vm))
        if not chosen:
            node = self.vm_tree.cursor_node
            if node is None or node.data is None or node.data.vm is None:
                self.notify("Move to a VM (or mark some with space) first.", severity="warning")
                return
            chosen = [(node.data.vcenter_id, node.data.vm)]
        self.app.push_screen(BackupModal(self.state, chosen), self._backup_started)

    def action_enable_cbt(self) -> None:
        node = self.vm_tree.cursor_node
        if node is None or node.data is None or node.data.vm is None:
            self.notify("Move to a VM first.", severity="warning")
            return
        vcenter_id, vm = node.data.vcenter_id, node.data.vm

        def enabled(_: VMContext) -> None:
            self.notify(f"CBT is on for {vm.name}: its next backup can be incremental.")
            self.action_refresh()

        def decided(yes: bool | None) -> None:
            if yes:
                self.call_hub(enable_cbt(self.state, vcenter_id, vm), enabled)

        question = (
            f"Enable changed block tracking on {vm.name}? vCenter reconfigures the VM and "
            "takes and removes a snapshot so change ids are valid; the next backup is still "
            "a full, the ones after it incremental."
        )
        self.app.push_screen(ConfirmModal(question, yes="Yes, enable CBT"), decided)

    def action_restore_points(self) -> None:
        node = self.vm_tree.cursor_node
        if node is None or node.data is None or node.data.vm is None:
            self.notify("Move to a VM first.", severity="warning")
            return
        self.post_message(OpenRestorePoints(node.data.vm.path))

    def _backup_started(self, backup_ids: list[str] | None) -> None:
        if not backup_ids:
            return
        self.state.marks.clear()
        self._relabel(self.vm_tree.root)
        self._show_status()
        self.post_message(OpenJob(backup_ids[0]))

    # -- jump to a VM (command palette) -----------------------------------------------------

    def reveal(self, vcenter_id: int, path: str) -> None:
        """Open the tree down to the VM at ``path`` and put the cursor on it."""
        self.action_back()
        node = next(
            (n for n in self.vm_tree.root.children if n.data and n.data.vcenter_id == vcenter_id),
            None,
        )
        inventory = self.state.inventories.get(vcenter_id)
        vm = inventory.by_path.get(path) if inventory else None
        if node is None or vm is None:
            return
        steps = [("datacenter", datacenter_of(vm)), *(("folder", f) for f in folder_of(vm))]
        for kind, name in steps:
            self._open(node)
            node = next(
                (
                    c
                    for c in node.children
                    if c.data and c.data.group and (c.data.kind, c.data.group.name) == (kind, name)
                ),
                node,
            )
        self._open(node)
        target = next((c for c in node.children if c.data and c.data.vm is vm), None)
        if target is not None:
            # After the next refresh: freshly opened nodes have no line number before it.
            self.vm_tree.call_after_refresh(self.vm_tree.move_cursor, target)
            self.app.set_focus(self.vm_tree)

    def action_expand_all(self) -> None:
        """Every loaded vCenter opened down to its VMs (the whole tree, built at once)."""
        stack = [n for n in self.vm_tree.root.children if n.data and n.data.group is not None]
        while stack:
            node = stack.pop()
            self._open(node)
            stack.extend(c for c in node.children if c.data and c.data.group is not None)

    def _open(self, node: TreeNode[Entry]) -> None:
        if node.data is not None and not node.data.loaded and node.data.group is not None:
            self._fill(node)
        node.expand()
