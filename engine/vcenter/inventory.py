"""The whole inventory in one paged property-collector retrieval over a container view."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from engine.contract.inventory import DiskInfo, EntityInfo, Inventory, VMInfo, datastore_of
from engine.vcenter.connection import VCenter
from engine.vcenter.properties import container_filter, prop_spec, retrieve

# Reading a VM's `snapshot` property when it has none crashes vcsim's session; the
# `rootSnapshot` list answers "are there snapshots" on every vCenter.
VM_PROPERTIES = [
    "name",
    "parent",
    "runtime.powerState",
    "runtime.host",
    "resourcePool",
    "config.guestFullName",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.changeTrackingEnabled",
    "rootSnapshot",
]

ENTITY_TYPES: list[type] = [
    vim.Datacenter,
    vim.Folder,
    vim.ClusterComputeResource,
    vim.ComputeResource,
    vim.HostSystem,
    vim.ResourcePool,
]


def _int(value: Any) -> int:
    return int(value) if value not in (None, "") else 0


def _id(ref: Any) -> str | None:
    """A reference as a plain moref id (models hold plain data)."""
    return str(ref) if ref else None


def disks_from_devices(devices: list[dict[str, Any]] | None) -> list[DiskInfo]:
    """The virtual disks of a device list (plain values, see properties.plain), by key."""
    disks = []
    for dev in devices or ():
        if dev.get("_type") != "VirtualDisk":
            continue
        backing = dev.get("backing") or {}
        file_name = backing.get("fileName") or ""
        info = dev.get("deviceInfo") or {}
        key = _int(dev.get("key"))
        unit = dev.get("unitNumber")
        disks.append(
            DiskInfo(
                key=key,
                label=info.get("label") or f"disk {key}",
                capacity_bytes=_int(dev.get("capacityInBytes"))
                or _int(dev.get("capacityInKB")) * 1024,
                file_name=file_name,
                datastore=datastore_of(file_name),
                controller_key=_int(dev.get("controllerKey")),
                unit_number=_int(unit) if unit is not None else -1,
                change_id=backing.get("changeId") or None,
            )
        )
    return sorted(disks, key=lambda d: d.key)


def vm_from_properties(moref: str, props: dict[str, Any], path: str, datacenter: str) -> VMInfo:
    return VMInfo(
        name=props.get("name", ""),
        path=path,
        moref=moref,
        power_state=str(props.get("runtime.powerState", "unknown")),
        guest_os=props.get("config.guestFullName") or "",
        cpus=_int(props.get("config.hardware.numCPU")),
        memory_mb=_int(props.get("config.hardware.memoryMB")),
        cbt_enabled=bool(props.get("config.changeTrackingEnabled")),
        has_snapshots=bool(props.get("rootSnapshot")),
        disks=disks_from_devices(props.get("config.hardware.device")),
        datacenter=datacenter,
        host=_id(props.get("runtime.host")),
        resource_pool=_id(props.get("resourcePool")),
        parent=_id(props.get("parent")),
    )


def _paths(
    names: dict[str, str], parents: dict[str, str | None], kinds: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Inventory path and datacenter name of every object, from the name/parent pairs."""
    paths: dict[str, str] = {}
    dcs: dict[str, str] = {}

    def resolve(moref: str) -> tuple[str, str]:
        if moref in paths:
            return paths[moref], dcs[moref]
        parent = parents.get(moref)
        if parent is None or parent not in names:  # the root folder is not part of paths
            base, dc = "", ""
        else:
            base, dc = resolve(parent)
        if kinds.get(moref) == "Datacenter":
            dc = names[moref]
        paths[moref] = f"{base}/{names[moref]}"
        dcs[moref] = dc
        return paths[moref], dc

    for moref in names:
        resolve(moref)
    return paths, dcs


def get_inventory(vc: VCenter) -> Inventory:
    """Datacenters, folders, clusters, hosts, resource pools and VMs, with no per-VM trips."""
    view = vc.content.viewManager.CreateContainerView(
        vc.content.rootFolder, [*ENTITY_TYPES, vim.VirtualMachine], True
    )
    try:
        specs = [prop_spec(t, ["name", "parent"]) for t in ENTITY_TYPES]
        specs.append(prop_spec(vim.VirtualMachine, VM_PROPERTIES))
        rows = list(retrieve(vc, container_filter(view, specs)))
    finally:
        view.Destroy()

    names: dict[str, str] = {}
    parents: dict[str, str | None] = {}
    kinds: dict[str, str] = {}
    for kind, moref, props in rows:
        names[moref] = props.get("name", moref)
        parents[moref] = _id(props.get("parent"))
        kinds[moref] = kind
    paths, dcs = _paths(names, parents, kinds)

    entities: list[EntityInfo] = []
    vms: list[VMInfo] = []
    for kind, moref, props in rows:
        if kind == "VirtualMachine":
            vms.append(vm_from_properties(moref, props, paths[moref], dcs[moref]))
        else:
            entities.append(
                EntityInfo(
                    kind=kinds[moref],
                    name=names[moref],
                    path=paths[moref],
                    moref=moref,
                    parent=parents[moref],
                    datacenter=dcs[moref],
                )
            )
    entities.sort(key=lambda e: e.path)
    vms.sort(key=lambda v: v.path)
    return Inventory(vcenter=vc.host, entities=entities, vms=vms)
