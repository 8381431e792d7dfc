"""Making a VM again from its recorded configuration, and the few things a restore does to
it afterwards (power, rename, remove).

The new VM gets new, empty disks of the recorded sizes and provisioning; a node writes
their contents afterwards. Device keys in the spec are temporary (negative) so that
vCenter numbers the devices as it would any new VM; disks are matched back to the
recorded ones by controller (kind and bus) and unit, never by key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from engine.contract.vmconfig import ControllerConfig, NicConfig, VMConfig
from engine.errors import BadInput, Conflict, VCenterError, VMNotFound
from engine.vcenter.connection import VCenter
from engine.vcenter.placement import (
    Placement,
    check_name,
    check_name_free,
    resolve_placement,
)
from engine.vcenter.tasks import fault_message, wait
from engine.vcenter.vmconfig import CONTROLLER_KINDS, kind_of, typed_read, typed_read_many

__all__ = [
    "CreatedDisk",
    "CreatedVM",
    "Placement",
    "check_name_free",
    "create_vm",
    "destroy_vm",
    "power_off",
    "power_on",
    "rename_vm",
    "resolve_placement",
]

log = logging.getLogger(__name__)

Device = vim.vm.device
Spec = Device.VirtualDeviceSpec

CONTROLLER_CLASSES: dict[str, type] = {
    "pvscsi": Device.ParaVirtualSCSIController,
    "lsilogic": Device.VirtualLsiLogicController,
    "lsilogic-sas": Device.VirtualLsiLogicSASController,
    "buslogic": Device.VirtualBusLogicController,
    "sata": Device.VirtualAHCIController,
    "nvme": Device.VirtualNVMEController,
}
# Every VM has its two IDE controllers from the start (keys 200 and 201): disks on them
# are put on the new VM's own.
IDE_KEY_BASE = 200
NIC_CLASSES: dict[str, type] = {
    "vmxnet3": Device.VirtualVmxnet3,
    "vmxnet2": Device.VirtualVmxnet2,
    "vmxnet": Device.VirtualVmxnet,
    "e1000e": Device.VirtualE1000e,
    "e1000": Device.VirtualE1000,
    "pcnet32": Device.VirtualPCNet32,
    # An SR-IOV card is bound to a host's physical function: a copy gets a vmxnet3.
    "sriov": Device.VirtualVmxnet3,
}


@dataclass(frozen=True)
class CreatedDisk:
    key: int  # the new VM's device key (as vCenter numbered it)
    source_key: int  # the recorded disk's key (the restore point's disk_key)
    file_name: str  # "[datastore] NEW/NEW.vmdk"
    capacity_bytes: int


@dataclass(frozen=True)
class CreatedVM:
    moref: str
    name: str
    path: str  # the new VM's inventory path /DC/vm/.../NEW
    disks: tuple[CreatedDisk, ...]


def _vm(vc: VCenter, moref: str) -> Any:
    return vim.VirtualMachine(moref, vc.si._stub)


def _controller_spec(c: ControllerConfig, key: int) -> Any:
    cls = CONTROLLER_CLASSES[c.kind]
    scsi = issubclass(cls, Device.VirtualSCSIController)
    extra = {"sharedBus": c.sharing or "noSharing"} if scsi else {}
    return Spec(operation=Spec.Operation.add, device=cls(key=key, busNumber=c.bus_number, **extra))


def _networks(vc: VCenter, placement: Placement) -> dict[str, Any]:
    """The datacenter's networks by name."""
    found = list(typed_read(vc, placement.datacenter, ["network"]).get("network") or ())
    return {props.get("name", n._moId): n for n, props in typed_read_many(vc, found, ["name"])}


def _nic_backing(vc: VCenter, network: Any) -> Any:
    if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
        props = typed_read(vc, network, ["key", "config.distributedVirtualSwitch"])
        switch = props["config.distributedVirtualSwitch"]
        uuid = typed_read(vc, switch, ["uuid"])["uuid"]
        port = vim.dvs.PortConnection(switchUuid=uuid, portgroupKey=props["key"])
        return Device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    name = typed_read(vc, network, ["name"])["name"]
    return Device.VirtualEthernetCard.NetworkBackingInfo(deviceName=name, network=network)


def _nic_spec(
    vc: VCenter, nic: NicConfig, key: int, networks: dict[str, Any], keep_mac: bool
) -> Any:
    dev = NIC_CLASSES[nic.kind](key=key)
    network = networks.get(nic.network or "")
    if network is None:
        log.warning(
            "NIC %s: network %s does not exist here: the NIC is left disconnected",
            nic.key,
            nic.network or "(none recorded)",
        )
    else:
        dev.backing = _nic_backing(vc, network)
    dev.connectable = Device.VirtualDevice.ConnectInfo(
        startConnected=nic.start_connected and network is not None,
        allowGuestControl=True,
        connected=False,
    )
    if keep_mac and nic.mac_address:
        dev.addressType, dev.macAddress = "manual", nic.mac_address
    else:  # a copy beside the original must not answer to its MAC address
        dev.addressType = "generated"
    return Spec(operation=Spec.Operation.add, device=dev)


def config_spec(
    vc: VCenter, config: VMConfig, name: str, placement: Placement, *, keep_mac: bool = False
) -> Any:
    """The CreateVM_Task spec: the recorded hardware, new empty disks on the placement's
    datastore (vCenter names them in the new VM's folder there)."""
    ds = f"[{placement.datastore_name}]"
    changes = []
    controller_keys: dict[int, int] = {}  # recorded key -> key in the spec
    for i, c in enumerate(config.controllers):
        if c.kind == "ide":
            controller_keys[c.key] = IDE_KEY_BASE + c.bus_number
        else:
            controller_keys[c.key] = -100 - i
            changes.append(_controller_spec(c, controller_keys[c.key]))
    for i, d in enumerate(config.disks):
        if d.controller_key not in controller_keys:
            raise BadInput(
                f"disk {d.key} is on controller {d.controller_key}, which the point does not record"
            )
        backing = Device.VirtualDisk.FlatVer2BackingInfo(
            fileName=ds, diskMode="persistent", thinProvisioned=d.thin, eagerlyScrub=d.eagerly_scrub
        )
        disk = Device.VirtualDisk(
            key=-1000 - i,
            controllerKey=controller_keys[d.controller_key],
            unitNumber=d.unit_number,
            capacityInKB=(d.capacity_bytes + 1023) // 1024,
            capacityInBytes=d.capacity_bytes,
            backing=backing,
        )
        changes.append(
            Spec(operation=Spec.Operation.add, fileOperation=Spec.FileOperation.create, device=disk)
        )
    networks = _networks(vc, placement) if config.nics else {}
    for i, nic in enumerate(config.nics):
        changes.append(_nic_spec(vc, nic, -2000 - i, networks, keep_mac))
    return vim.vm.ConfigSpec(
        name=name,
        guestId=config.guest_id,
        numCPUs=config.num_cpus,
        numCoresPerSocket=config.cores_per_socket,
        memoryMB=config.memory_mb,
        firmware=config.firmware,
        version=config.hardware_version,
        annotation=config.annotation,
        files=vim.vm.FileInfo(vmPathName=ds),
        deviceChange=changes,
    )


def _created_disks(vc: VCenter, vm: Any, config: VMConfig) -> tuple[CreatedDisk, ...]:
    """The new VM's disks, each paired with the recorded one on the same controller
    (kind and bus) and unit."""
    devices = typed_read(vc, vm, ["config.hardware.device"]).get("config.hardware.device") or ()
    slot_of: dict[int, tuple[str, int]] = {}  # new controller key -> (kind, bus)
    disks: dict[tuple[int | None, int | None], Any] = {}
    for dev in devices:
        if isinstance(dev, Device.VirtualDisk):
            disks[(dev.controllerKey, dev.unitNumber)] = dev
        elif (kind := kind_of(dev, CONTROLLER_KINDS)) is not None:
            slot_of[dev.key] = (kind, dev.busNumber)
    key_of_slot = {slot: key for key, slot in slot_of.items()}
    recorded = {c.key: (c.kind, c.bus_number) for c in config.controllers}
    out = []
    for d in config.disks:
        new = disks.get((key_of_slot.get(recorded[d.controller_key]), d.unit_number))
        if new is None:
            raise VCenterError(f"vCenter created the VM without a disk for disk {d.key}")
        out.append(
            CreatedDisk(
                key=new.key,
                source_key=d.key,
                file_name=new.backing.fileName,
                capacity_bytes=new.capacityInBytes or new.capacityInKB * 1024,
            )
        )
    return tuple(out)


def create_vm(
    vc: VCenter, config: VMConfig, name: str, placement: Placement, *, keep_mac: bool = False
) -> CreatedVM:
    """Create the VM (powered off) with the recorded hardware and new empty disks.

    ``keep_mac`` gives the NICs their recorded MAC addresses (for a VM that replaces its
    original); otherwise vCenter generates new ones. A NIC whose network does not exist
    here is left disconnected (logged), never a reason to fail.
    """
    name = check_name(name)
    spec = config_spec(vc, config, name, placement, keep_mac=keep_mac)
    try:
        vm = wait(
            placement.folder.CreateVM_Task(config=spec, pool=placement.pool, host=placement.host)
        )
    except vmodl.MethodFault as exc:
        raise VCenterError(f"vCenter refused to create VM {name}: {fault_message(exc)}") from None
    try:
        disks = _created_disks(vc, vm, config)
    except BaseException:
        _destroy_quietly(vc, vm._moId)
        raise
    path = f"{placement.folder_path.rstrip('/')}/{name}"
    log.info("created VM %s (%s) with %d disk(s)", path, vm._moId, len(disks))
    return CreatedVM(moref=vm._moId, name=name, path=path, disks=disks)


def _destroy_quietly(vc: VCenter, moref: str) -> None:
    try:
        destroy_vm(vc, moref)
    except VCenterError as exc:
        log.error("the half-made VM %s is left behind: %s", moref, exc)


def _power_state(vc: VCenter, moref: str) -> str | None:
    """The VM's power state; None when there is no such VM."""
    try:
        props = typed_read(vc, _vm(vc, moref), ["runtime.powerState"])
    except vmodl.fault.ManagedObjectNotFound:
        return None
    return str(props["runtime.powerState"]) if props else None


def _run(vc: VCenter, moref: str, what: str, start: Callable[[Any], Any]) -> None:
    try:
        wait(start(_vm(vc, moref)))
    except vim.fault.DuplicateName as exc:
        raise Conflict(f"{what} VM {moref}: {fault_message(exc)}") from None
    except vmodl.fault.ManagedObjectNotFound:
        raise VMNotFound(f"VM {moref} does not exist on vCenter {vc.host}") from None
    except vmodl.MethodFault as exc:
        raise VCenterError(f"{what} VM {moref} failed: {fault_message(exc)}") from None


def destroy_vm(vc: VCenter, moref: str) -> None:
    """Power the VM off if it runs and remove it with its files; nothing if it is gone."""
    state = _power_state(vc, moref)
    if state is None:
        return
    if state != "poweredOff":
        power_off(vc, moref)
    try:
        _run(vc, moref, "removing", lambda vm: vm.Destroy_Task())
    except VMNotFound:
        return
    log.info("removed VM %s", moref)


def power_on(vc: VCenter, moref: str) -> None:
    """Power the VM on (nothing if it is on already)."""
    state = _power_state(vc, moref)
    if state is None:
        raise VMNotFound(f"VM {moref} does not exist on vCenter {vc.host}")
    if state != "poweredOn":
        _run(vc, moref, "powering on", lambda vm: vm.PowerOnVM_Task())


def power_off(vc: VCenter, moref: str) -> None:
    """Power the VM off, hard (nothing if it is off already)."""
    state = _power_state(vc, moref)
    if state is None:
        raise VMNotFound(f"VM {moref} does not exist on vCenter {vc.host}")
    if state != "poweredOff":
        _run(vc, moref, "powering off", lambda vm: vm.PowerOffVM_Task())


def rename_vm(vc: VCenter, moref: str, name: str) -> None:
    """Rename the VM in the inventory (its files keep their names)."""
    new = check_name(name)
    _run(vc, moref, "renaming", lambda vm: vm.Rename_Task(newName=new))
