"""The vCenter inventory as the console's tree wants it.

The hub sends the whole inventory (the contract's ``Inventory``: ``vcenter``,
``entities`` and ``vms``) in one answer; this module indexes it once so that expanding
any tree node is a dict look-up, which is what keeps a 5,000-VM tree quick.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.contract.inventory import EntityInfo, Inventory, VMInfo


def folder_of(vm: VMInfo) -> tuple[str, ...]:
    """Folders between the datacenter's ``vm`` folder and the VM itself."""
    parts = vm.path.strip("/").split("/")
    return tuple(parts[2:-1]) if len(parts) > 3 else ()


def datacenter_of(vm: VMInfo) -> str:
    return vm.path.strip("/").split("/", 1)[0]


def total_bytes(vm: VMInfo) -> int:
    return sum(d.capacity_bytes for d in vm.disks)


@dataclass
class Group:
    """A tree node's children: sub-groups keyed by (kind, name), then VMs."""

    kind: str
    name: str
    groups: dict[tuple[str, str], Group] = field(default_factory=dict)
    vms: list[VMInfo] = field(default_factory=list)

    def child(self, kind: str, name: str) -> Group:
        group = self.groups.get((kind, name))
        if group is None:
            group = self.groups[(kind, name)] = Group(kind, name)
        return group


class InventoryIndex:
    """Datacenters → folders and VMs (from the VMs' paths), clusters → hosts → VMs."""

    def __init__(self, inventory: Inventory) -> None:
        self.vcenter = inventory.vcenter
        self.vms = inventory.vms
        self.by_path = {vm.path: vm for vm in self.vms}
        self.datacenters: dict[str, Group] = {}
        entities = {e.moref: e for e in inventory.entities}
        for entity in inventory.datacenters:
            self._dc(entity.name)
        by_host: dict[str, list[VMInfo]] = {}
        for vm in self.vms:
            group = self._dc(datacenter_of(vm))
            for folder in folder_of(vm):
                group = group.child("folder", folder)
            group.vms.append(vm)
            if vm.host:
                by_host.setdefault(vm.host, []).append(vm)
        for host in inventory.of_kind("HostSystem"):
            self._place_host(host, entities, by_host.get(host.moref, []))
        self.datacenters = dict(sorted(self.datacenters.items(), key=lambda kv: kv[0].lower()))
        for dc in self.datacenters.values():
            _sort(dc)

    def _dc(self, name: str) -> Group:
        group = self.datacenters.get(name)
        if group is None:
            group = self.datacenters[name] = Group("datacenter", name)
        return group

    def _place_host(
        self, host: EntityInfo, entities: dict[str, EntityInfo], vms: list[VMInfo]
    ) -> None:
        """A host goes under its cluster, or straight under its datacenter when standalone."""
        parent = self._dc(host.datacenter or (host.path or "/?").split("/")[1])
        owner = entities.get(host.parent or "")
        if owner is not None and owner.kind == "ClusterComputeResource":
            parent = parent.child("cluster", owner.name)
        parent.child("host", host.name).vms = vms

    def matching(self, text: str) -> list[VMInfo]:
        needle = text.lower()
        return [vm for vm in self.vms if needle in vm.name.lower()]


def _sort(group: Group) -> None:
    group.groups = dict(sorted(group.groups.items(), key=lambda kv: (kv[0][0], kv[0][1].lower())))
    group.vms.sort(key=lambda vm: vm.name.lower())
    for sub in group.groups.values():
        _sort(sub)
