"""Everything that talks to vCenter (pyvmomi): pinned connections, the inventory, VMs,
snapshots and changed block tracking."""

from engine.contract.inventory import DiskInfo, EntityInfo, Inventory, VMInfo
from engine.errors import (
    LoginError,
    SnapshotError,
    ThumbprintMismatch,
    VCenterError,
    VMNotFound,
)
from engine.vcenter.cbt import FullBackupNeeded, enable_cbt, query_changed_areas
from engine.vcenter.connection import VCenter, connect, fetch_thumbprint
from engine.vcenter.inventory import get_inventory
from engine.vcenter.snapshots import (
    SnapshotResult,
    create_snapshot,
    list_snapshots,
    remove_leftover_snapshots,
    remove_snapshot,
    snapshot_disks,
)
from engine.vcenter.vms import datastore_file_path, find_vm, vm_info

__all__ = [
    "DiskInfo",
    "EntityInfo",
    "FullBackupNeeded",
    "Inventory",
    "LoginError",
    "SnapshotError",
    "SnapshotResult",
    "ThumbprintMismatch",
    "VCenter",
    "VCenterError",
    "VMInfo",
    "VMNotFound",
    "connect",
    "create_snapshot",
    "datastore_file_path",
    "enable_cbt",
    "fetch_thumbprint",
    "find_vm",
    "get_inventory",
    "list_snapshots",
    "query_changed_areas",
    "remove_leftover_snapshots",
    "remove_snapshot",
    "snapshot_disks",
    "vm_info",
]
