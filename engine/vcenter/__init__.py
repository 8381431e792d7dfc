"""Everything that talks to vCenter (pyvmomi): pinned connections, the inventory, VMs,
snapshots, changed block tracking, and VMs made again from their recorded configuration."""

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
from engine.vcenter.create import (
    CreatedDisk,
    CreatedVM,
    Placement,
    check_name_free,
    create_vm,
    destroy_vm,
    power_off,
    power_on,
    rename_vm,
    resolve_placement,
)
from engine.vcenter.inventory import get_inventory
from engine.vcenter.snapshots import (
    SnapshotResult,
    create_snapshot,
    list_snapshots,
    remove_leftover_snapshots,
    remove_snapshot,
    snapshot_disks,
)
from engine.vcenter.vmconfig import vm_config
from engine.vcenter.vms import datastore_file_path, find_vm, vm_info

__all__ = [
    "CreatedDisk",
    "CreatedVM",
    "DiskInfo",
    "EntityInfo",
    "FullBackupNeeded",
    "Inventory",
    "LoginError",
    "Placement",
    "SnapshotError",
    "SnapshotResult",
    "ThumbprintMismatch",
    "VCenter",
    "VCenterError",
    "VMInfo",
    "VMNotFound",
    "check_name_free",
    "connect",
    "create_snapshot",
    "create_vm",
    "datastore_file_path",
    "destroy_vm",
    "enable_cbt",
    "fetch_thumbprint",
    "find_vm",
    "get_inventory",
    "list_snapshots",
    "power_off",
    "power_on",
    "query_changed_areas",
    "remove_leftover_snapshots",
    "remove_snapshot",
    "rename_vm",
    "resolve_placement",
    "snapshot_disks",
    "vm_config",
    "vm_info",
]
