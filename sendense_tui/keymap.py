"""Every key the console answers to, in one table, and the user's keymap file.

Each binding has an id (``scope.name``) so ``keymap.toml`` can rebind it with
``App.set_keymap``; the help screen reads this same table, so it lists every key.
A keymap file is plain TOML: ``"inventory.backup" = "B"`` (several keys: ``"b,f5"``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from textual.binding import Binding, BindingType


@dataclass(frozen=True)
class Key:
    keys: str
    action: str
    description: str
    show: bool = True
    # Priority keys win over the focused widget (enter in a modal confirms, whatever has focus).
    priority: bool = False
    footer: str = ""  # a shorter word for the footer, where the description does not fit


KEYS: dict[str, Key] = {
    "app.help": Key("question_mark", "help", "Help: every key"),
    "app.palette": Key("colon", "command_palette", "Command palette (also ctrl+p)", False),
    "app.quit": Key("q", "quit", "Quit (backups go on in the hub)"),
    "screen.inventory": Key("1", "switch_mode('inventory')", "Inventory screen", False),
    "screen.jobs": Key("2", "switch_mode('jobs')", "Jobs screen", False),
    "screen.repositories": Key("3", "switch_mode('repositories')", "Repositories screen", False),
    "screen.vcenters": Key("4", "switch_mode('vcenters')", "vCenters screen", False),
    "screen.nodes": Key("5", "switch_mode('nodes')", "Nodes and tunnel screen", False),
    "screen.restore_points": Key(
        "6", "switch_mode('restore-points')", "Restore points screen", False
    ),
    "screen.restores": Key("7", "switch_mode('restores')", "Restores screen (restore jobs)", False),
    "screen.policies": Key(
        "8", "switch_mode('policies')", "Policies screen (scheduled backups)", False
    ),
    "nav.down": Key("j", "nav('down')", "Cursor down (as ↓)", False),
    "nav.up": Key("k", "nav('up')", "Cursor up (as ↑)", False),
    "nav.top": Key("g", "nav('top')", "First line", False),
    "nav.bottom": Key("G", "nav('bottom')", "Last line", False),
    "nav.back": Key("escape", "back", "Back / close", False),
    # Priority: acted on before the next key is routed, so typing ahead ("/pg⏎jb") works.
    "inventory.filter": Key("slash", "filter", "Filter VMs by name", priority=True),
    "filter.done": Key("enter", "done", "Back to the list, filter kept", False, priority=True),
    "inventory.mark": Key("space", "mark", "Mark / unmark the VM"),
    "inventory.backup": Key("b", "backup", "Back up marked VMs (or this one)"),
    "inventory.refresh": Key("r", "refresh", "Refresh"),
    "inventory.expand_all": Key("e", "expand_all", "Open every node (all VMs)", False),
    "inventory.expand": Key("enter", "expand", "Open / close the node", False),
    "inventory.points": Key("p", "restore_points", "Restore points of this VM", footer="Points"),
    "inventory.cbt": Key(
        "c", "enable_cbt", "Enable CBT on this VM (asks first; then incrementals)", footer="CBT"
    ),
    "jobs.cancel": Key("c", "cancel_job", "Cancel the job, or take it out of the queue (asks)"),
    "jobs.refresh": Key("r", "refresh", "Refresh"),
    "vcenters.add": Key("a", "add_vcenter", "Add a vCenter"),
    "vcenters.test": Key("t", "test_vcenter", "Test the vCenter's login"),
    "list.refresh": Key("r", "refresh", "Refresh"),
    "points.filter": Key("slash", "filter", "Filter points by VM name or id", priority=True),
    "points.open": Key(
        "enter", "open_point", "Open the point: disks, exports, ways back", footer="Open"
    ),
    "points.all": Key(
        "escape", "back", "Clear the filter, then show every VM's points", footer="All VMs"
    ),
    "points.refresh": Key("r", "refresh", "Refresh"),
    "point.export": Key(
        "x", "export", "Export a disk for instant access (NBD)", footer="Instant export"
    ),
    "point.unexport": Key(
        "u", "unexport", "End the instant export under the cursor", footer="End export"
    ),
    "point.restore_disk": Key("f", "restore_disk", "Restore a disk to a file", footer="Disk→file"),
    "point.restore_vm": Key("v", "restore_vm", "Restore the whole VM to vCenter", footer="VM"),
    "point.delete": Key("d", "delete_point", "Delete the point (asks first)", footer="Delete"),
    "point.merge": Key(
        "m", "merge_point", "Merge the point into its child (asks first)", footer="Merge"
    ),
    "point.browse": Key(
        "b", "browse", "Browse the files of the disk under the cursor", footer="Files"
    ),
    "point.verify": Key(
        "V", "verify", "Verify the point: every chunk read back and compared", footer="Verify"
    ),
    "point.refresh": Key("r", "refresh", "Refresh"),
    "point.back": Key("escape", "back", "Back to the restore points", footer="Back"),
    "files.open": Key("enter", "open", "Open the folder or partition", footer="Open"),
    "files.up": Key("backspace", "up", "Up one folder (at the top: the partitions)", footer="Up"),
    "files.filter": Key(
        "slash", "filter", "Filter this folder by name", priority=True, footer="Filter"
    ),
    "files.mark": Key("space", "mark", "Mark / unmark the entry", footer="Mark"),
    "files.extract": Key(
        "e", "extract", "Extract the marked entries (or this one) to a folder", footer="Extract"
    ),
    "files.refresh": Key("r", "refresh", "Refresh"),
    "files.back": Key("escape", "back", "Clear the filter, then back to the point", footer="Back"),
    "policies.open": Key(
        "enter", "open_policy", "Open the policy: its runs, VMs now, retention", footer="Open"
    ),
    "policies.add": Key("a", "add_policy", "Add a policy", footer="Add"),
    "policies.edit": Key("e", "edit_policy", "Edit the policy", footer="Edit"),
    "policies.run": Key("r", "run_policy", "Run the policy now (asks first)", footer="Run now"),
    "policies.toggle": Key(
        "space,t", "toggle_policy", "Enable / disable the policy", footer="On/off"
    ),
    "policies.delete": Key("d", "delete_policy", "Delete the policy (asks first)", footer="Delete"),
    "policies.refresh": Key("R", "refresh", "Refresh", footer="Refresh"),
    "policy.pane": Key("p", "next_pane", "Next pane: runs, VMs now, retention", footer="Pane"),
    "policy.back": Key("escape", "back", "Back to the policies", footer="Back"),
    "restores.cancel": Key("c", "cancel_job", "Cancel the restore (asks first)", footer="Cancel"),
    "restores.refresh": Key("r", "refresh", "Refresh"),
    "modal.confirm": Key("enter", "confirm", "Confirm", priority=True),
    "modal.cancel": Key("escape", "dismiss_modal", "Back"),
    # A form with many-line boxes (a policy's paths), where enter makes a new line.
    "modal.save": Key(
        "ctrl+s", "save", "Save the form (enter too, in a one-line box)", priority=True
    ),
}


def bindings(*ids: str) -> list[BindingType]:
    """The ``Binding`` objects for these ids, with their default keys."""
    return [
        Binding(k.keys, k.action, k.footer or k.description, show=k.show, priority=k.priority, id=i)
        for i, k in ((i, KEYS[i]) for i in ids)
    ]


class KeymapError(ValueError):
    """The keymap file names an unknown binding id or is not valid TOML."""


def load_keymap(path: Path) -> dict[str, str]:
    """The user's rebindings; an absent file means none."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise KeymapError(f"keymap {path}: {exc}") from exc
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise KeymapError(f"keymap {path}: unknown binding ids {', '.join(unknown)}")
    return {key: str(value) for key, value in data.items()}


def keys_for(binding_id: str, keymap: dict[str, str]) -> str:
    return keymap.get(binding_id, KEYS[binding_id].keys)
