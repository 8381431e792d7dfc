"""What a backup will do, per VM, in the words the backup modal shows: the hub decides
(``BackupPreview``), the console only says it, with the key that fixes the commonest
reason for a full (CBT off: ``c`` on the VM in the inventory)."""

from __future__ import annotations

from rich.text import Text

from engine.contract.hub import BackupPreview
from engine.contract.inventory import VMInfo
from engine.contract.status import BackupType

MODE_STYLE = {BackupType.INCREMENTAL: "green", BackupType.FULL: "yellow"}


def preview_text(preview: BackupPreview, cbt_key: str) -> Text:
    """One line for the VM, then one per disk whose mode or reason differs from it."""
    text = Text(f"{preview.vm_name}: ")
    text.append(preview.backup_type.value, style=MODE_STYLE[preview.backup_type])
    disks = preview.disks
    incremental = [d for d in disks if d.mode is BackupType.INCREMENTAL]
    if preview.backup_type is BackupType.INCREMENTAL:
        text.append(f" on {preview.parent_backup_id or '?'}")
        counted = f"{len(incremental)} of {len(disks)}" if len(incremental) < len(disks) else ""
        text.append(f" ({counted or len(disks)} disk{'s' if len(disks) != 1 else ''})")
    elif preview.reason:
        text.append(f" — {preview.reason}")
        if not preview.cbt_enabled and preview.requested_type is not BackupType.FULL:
            text.append(f" (press {cbt_key} on the VM to enable it)", style="dim")
    for disk in disks:
        if disk.mode is BackupType.INCREMENTAL or disk.reason in (None, preview.reason):
            continue
        text.append(f"\n  disk {disk.disk_key}: full — {disk.reason}", style="dim")
    return text


def failed_text(vm_name: str, words: str) -> Text:
    """A preview the hub refused: one line (the backup may still be started)."""
    text = Text(f"{vm_name}: ")
    text.append(f"no preview — {words}".replace("\n", " "), style="red")
    return text


def first_backup_text(vm: VMInfo, cbt_key: str) -> Text:
    """A VM the hub has no context for yet (it adds one at the start): a full, surely."""
    text = Text(f"{vm.name}: ")
    text.append("full", style=MODE_STYLE[BackupType.FULL])
    text.append(f" — the first backup of {vm.name}")
    if not vm.cbt_enabled:
        text.append(f" (CBT is off: press {cbt_key} on the VM to enable it)", style="dim")
    return text
