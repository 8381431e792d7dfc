"""A VM's configuration as a restore needs it, read at backup time from the snapshot.

The snapshot's own ``config`` is the VM as of the point (a disk added or a CPU removed
after the backup must not change what the point restores). Where the VM lived (folder,
pool, host) is not part of a snapshot, so it comes from the VM as it is now.

This reads typed pyVmomi objects, unlike the bulk reads of ``properties``: it is one VM,
and it needs the controllers and NICs that the bulk reader cuts out of device lists.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from engine.contract.inventory import datastore_of
from engine.contract.vmconfig import (
    ControllerConfig,
    ControllerKind,
    DiskConfig,
    NicConfig,
    NicKind,
    VMConfig,
)
from engine.errors import VCenterError
from engine.vcenter.connection import VCenter
from engine.vcenter.properties import prop_spec
from engine.vcenter.vms import inventory_path

# Properties a VM and a snapshot have alike (a snapshot's `config` is a VM config).
CONFIG_PATHS = [
    "config.name",
    "config.guestId",
    "config.firmware",
    "config.version",
    "config.annotation",
    "config.files.vmPathName",
    "config.hardware",
]
# Where the VM is now. Never `snapshot`: reading it on a VM without one upsets vcsim.
PLACEMENT_PATHS = ["name", "parent", "resourcePool", "runtime.host", "network"]

# Most specific first: the vmxnet cards derive from VirtualVmxnet.
CONTROLLER_KINDS: list[tuple[type, ControllerKind]] = [
    (vim.vm.device.ParaVirtualSCSIController, "pvscsi"),
    (vim.vm.device.VirtualLsiLogicSASController, "lsilogic-sas"),
    (vim.vm.device.VirtualLsiLogicController, "lsilogic"),
    (vim.vm.device.VirtualBusLogicController, "buslogic"),
    (vim.vm.device.VirtualSATAController, "sata"),
    (vim.vm.device.VirtualNVMEController, "nvme"),
    (vim.vm.device.VirtualIDEController, "ide"),
]
NIC_KINDS: list[tuple[type, NicKind]] = [
    (vim.vm.device.VirtualVmxnet3, "vmxnet3"),
    (vim.vm.device.VirtualVmxnet2, "vmxnet2"),
    (vim.vm.device.VirtualVmxnet, "vmxnet"),
    (vim.vm.device.VirtualE1000e, "e1000e"),
    (vim.vm.device.VirtualE1000, "e1000"),
    (vim.vm.device.VirtualPCNet32, "pcnet32"),
    (vim.vm.device.VirtualSriovEthernetCard, "sriov"),
]


def typed_read_many(
    vc: VCenter, objects: list[Any], paths: list[str]
) -> list[tuple[Any, dict[str, Any]]]:
    """Each object with some of its properties as pyVmomi objects, in one call ({} for
    unset ones); all objects of one type, or of types that all have ``paths``."""
    if not objects:
        return []
    types = {type(o): o for o in objects}
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=o) for o in objects],
        propSet=[prop_spec(t, paths) for t in types],
    )
    result = vc.content.propertyCollector.RetrievePropertiesEx(
        [spec], vmodl.query.PropertyCollector.RetrieveOptions()
    )
    found = {
        o.obj._moId: {p.name: p.val for p in o.propSet or ()}
        for o in (result.objects if result else ())
    }
    return [(o, found.get(o._moId, {})) for o in objects]


def typed_read(vc: VCenter, obj: Any, paths: list[str]) -> dict[str, Any]:
    """Some properties of one object as pyVmomi objects ({} for unset ones)."""
    return typed_read_many(vc, [obj], paths)[0][1]


def kind_of(device: Any, kinds: list[tuple[type, Any]]) -> Any | None:
    return next((kind for cls, kind in kinds if isinstance(device, cls)), None)


def _controller(dev: Any, kind: ControllerKind) -> ControllerConfig:
    sharing = getattr(dev, "sharedBus", None)
    return ControllerConfig(
        key=dev.key,
        kind=kind,
        bus_number=dev.busNumber or 0,
        sharing=str(sharing) if sharing else None,
    )


def _disk(dev: vim.vm.device.VirtualDisk) -> DiskConfig:
    backing = dev.backing
    file_name = getattr(backing, "fileName", None) or None
    return DiskConfig(
        key=dev.key,
        controller_key=dev.controllerKey,
        unit_number=dev.unitNumber or 0,
        capacity_bytes=dev.capacityInBytes or (dev.capacityInKB or 0) * 1024,
        thin=bool(getattr(backing, "thinProvisioned", False)),
        eagerly_scrub=bool(getattr(backing, "eagerlyScrub", False)),
        datastore=datastore_of(file_name or "") or None,
        file_name=file_name,
        label=dev.deviceInfo.label if dev.deviceInfo else None,
    )


def _network_names(vc: VCenter, networks: list[Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(name by moref id, name by distributed port group key) of the VM's networks."""
    named = typed_read_many(vc, networks, ["name"])
    by_id = {net._moId: props.get("name", net._moId) for net, props in named}
    groups = [n for n in networks if isinstance(n, vim.dvs.DistributedVirtualPortgroup)]
    by_key = {
        str(props.get("key")): by_id[pg._moId] for pg, props in typed_read_many(vc, groups, ["key"])
    }
    return by_id, by_key


def _nic(dev: Any, kind: NicKind, names: tuple[dict[str, str], dict[str, str]]) -> NicConfig:
    backing = dev.backing
    network: str | None = None
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
        network = backing.deviceName or (
            names[0].get(backing.network._moId) if backing.network else None
        )
    elif isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        key = backing.port.portgroupKey if backing.port else None
        network = names[1].get(key or "", key)
    elif isinstance(backing, vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo):
        network = backing.opaqueNetworkId
    connectable = dev.connectable
    return NicConfig(
        key=dev.key,
        kind=kind,
        network=network,
        mac_address=dev.macAddress or None,
        address_type=dev.addressType or None,
        start_connected=bool(connectable.startConnected) if connectable else True,
    )


def _name(vc: VCenter, obj: Any) -> str | None:
    return typed_read(vc, obj, ["name"]).get("name") if obj is not None else None


def vm_config(vc: VCenter, vm: vim.VirtualMachine, snapshot: Any | None = None) -> VMConfig:
    """The VM's configuration; its hardware as of ``snapshot`` when one is given."""
    where = typed_read(vc, vm, PLACEMENT_PATHS)
    config = typed_read(vc, snapshot if snapshot is not None else vm, CONFIG_PATHS)
    hardware = config.get("config.hardware")
    if hardware is None:  # a config of defaults would restore a VM that never was
        of = f"snapshot {snapshot._moId}" if snapshot is not None else f"VM {vm._moId}"
        raise VCenterError(f"vCenter has no hardware configuration for {of}")
    devices = list(hardware.device or ())
    names = _network_names(vc, list(where.get("network") or ()))
    controllers, disks, nics = [], [], []
    for dev in devices:
        if isinstance(dev, vim.vm.device.VirtualDisk):
            disks.append(_disk(dev))
        elif (ckind := kind_of(dev, CONTROLLER_KINDS)) is not None:
            controllers.append(_controller(dev, ckind))
        elif (nkind := kind_of(dev, NIC_KINDS)) is not None:
            nics.append(_nic(dev, nkind, names))
    parent, pool = where.get("parent"), where.get("resourcePool")
    firmware = config.get("config.firmware")
    return VMConfig(
        name=where.get("name") or config.get("config.name") or vm._moId,
        guest_id=config.get("config.guestId") or None,
        num_cpus=max(1, hardware.numCPU or 1),
        cores_per_socket=hardware.numCoresPerSocket or None,
        memory_mb=max(1, hardware.memoryMB or 1),
        firmware="efi" if firmware == "efi" else "bios",
        hardware_version=config.get("config.version") or None,
        annotation=config.get("config.annotation") or None,
        folder=inventory_path(vc, parent)[0] if parent is not None else None,
        resource_pool=inventory_path(vc, pool)[0] if pool is not None else None,
        datastore=datastore_of(config.get("config.files.vmPathName") or "") or None,
        host=_name(vc, where.get("runtime.host")),
        controllers=sorted(controllers, key=lambda c: c.key),
        disks=sorted(disks, key=lambda d: d.key),
        nics=sorted(nics, key=lambda n: n.key),
    )
