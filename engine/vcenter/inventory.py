"""The whole inventory in one paged property-collector retrieval over a container view."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from engine.vcenter.connection import VCenter
from engine.vcenter.models import DiskInfo, EntityInfo, Inventory, VMInfo, datastore_of
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


def disks_from_devices(devices: list[Any] | None) -> list[DiskInfo]:
    """The virtual disks among a VM's (or a snapshot's) devices, in device-key order."""
    disks = []
    for dev in devices or ():
        if not isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        backing = dev.backing
        file_name = getattr(backing, "fileName", "") or ""
        capacity = dev.capacityInBytes or (dev.capacityInKB or 0) * 1024
        disks.append(
            DiskInfo(
                key=dev.key,
                label=dev.deviceInfo.label if dev.deviceInfo else f"disk {dev.key}",
                capacity_bytes=int(capacity),
                file_name=file_name,
                datastore=datastore_of(file_name),
                controller_key=int(dev.controllerKey or 0),
                unit_number=dev.unitNumber if dev.unitNumber is not None else -1,
                change_id=getattr(backing, "changeId", None) or None,
            )
        )
    return sorted(disks, key=lambda d: d.key)


def vm_from_properties(moref: str, props: dict[str, Any], path: str, datacenter: str) -> VMInfo:
    parent = props.get("parent")
    host = props.get("runtime.host")
    pool = props.get("resourcePool")
    return VMInfo(
        name=props.get("name", ""),
        path=path,
        moref=moref,
        power_state=str(props.get("runtime.powerState", "unknown")),
        guest_os=props.get("config.guestFullName") or "",
        cpus=int(props.get("config.hardware.numCPU") or 0),
        memory_mb=int(props.get("config.hardware.memoryMB") or 0),
        cbt_enabled=bool(props.get("config.changeTrackingEnabled")),
        has_snapshots=bool(props.get("rootSnapshot")),
        disks=disks_from_devices(props.get("config.hardware.device")),
        datacenter=datacenter,
        host=host._moId if host is not None else None,
        resource_pool=pool._moId if pool is not None else None,
        parent=parent._moId if parent is not None else None,
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
        rows = list(retrieve(vc, container_filter(vc, view, specs)))
    finally:
        view.Destroy()

    names: dict[str, str] = {}
    parents: dict[str, str | None] = {}
    kinds: dict[str, str] = {}
    for obj, props in rows:
        moref = obj._moId
        names[moref] = props.get("name", moref)
        parent = props.get("parent")
        parents[moref] = parent._moId if parent is not None else None
        kinds[moref] = type(obj).__name__.rsplit(".", 1)[-1]
    paths, dcs = _paths(names, parents, kinds)

    entities: list[EntityInfo] = []
    vms: list[VMInfo] = []
    for obj, props in rows:
        moref = obj._moId
        if isinstance(obj, vim.VirtualMachine):
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
