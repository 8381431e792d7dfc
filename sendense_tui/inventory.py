"""The vCenter inventory as the console's tree wants it.

The hub sends the whole inventory (``sendense inventory --json``) in one answer; this
module indexes it once so that expanding any tree node is a dict look-up, which is what
keeps a 5,000-VM tree quick. Key names are read tolerantly (``key``/``disk_key``,
``path``/``vm_path``…) so the console follows the engine's JSON without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _pick(data: dict[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in data and data[name] is not None:
            return data[name]
    return default


@dataclass
class Disk:
    key: int
    label: str
    capacity_bytes: int
    datastore: str
    file: str


@dataclass
class VM:
    name: str
    path: str
    moref: str
    power_state: str
    guest_os: str
    cpu_count: int | None
    memory_mb: int | None
    cbt_enabled: bool
    snapshots: bool
    host: str
    disks: list[Disk]

    @property
    def datacenter(self) -> str:
        return self.path.strip("/").split("/", 1)[0]

    @property
    def folder(self) -> tuple[str, ...]:
        """Folders between the datacenter's ``vm`` folder and the VM itself."""
        parts = self.path.strip("/").split("/")
        return tuple(parts[2:-1]) if len(parts) > 3 else ()

    @property
    def total_bytes(self) -> int:
        return sum(d.capacity_bytes for d in self.disks)


@dataclass
class Group:
    """A tree node's children: sub-groups by name, then VMs."""

    kind: str
    name: str
    groups: dict[tuple[str, str], Group] = field(default_factory=dict)
    vms: list[VM] = field(default_factory=list)

    def child(self, kind: str, name: str) -> Group:
        group = self.groups.get((kind, name))
        if group is None:
            group = self.groups[(kind, name)] = Group(kind, name)
        return group


def _disk(data: dict[str, Any]) -> Disk:
    return Disk(
        key=int(_pick(data, "key", "disk_key", "device_key", default=0)),
        label=str(_pick(data, "label", default="")),
        capacity_bytes=int(_pick(data, "capacity_bytes", "capacity", "size_bytes", default=0)),
        datastore=str(_pick(data, "datastore", default="")),
        file=str(_pick(data, "file", "file_name", "vmdk_path", "backing", default="")),
    )


def _vm(data: dict[str, Any]) -> VM:
    snaps = _pick(data, "snapshots", "has_snapshots", "snapshot_present", default=False)
    return VM(
        name=str(data["name"]),
        path=str(_pick(data, "path", "vm_path", "inventory_path", default=data["name"])),
        moref=str(_pick(data, "moref", "vmware_vm_id", "id", default="")),
        power_state=str(_pick(data, "power_state", "power", default="")),
        guest_os=str(_pick(data, "guest_os", "guest", default="")),
        cpu_count=_pick(data, "cpu_count", "cpus", "num_cpu"),
        memory_mb=_pick(data, "memory_mb", "memory"),
        cbt_enabled=bool(_pick(data, "cbt_enabled", "cbt", default=False)),
        snapshots=bool(snaps),
        host=str(_pick(data, "host", "host_name", default="")),
        disks=[_disk(d) for d in data.get("disks") or []],
    )


class Inventory:
    """Datacenters → (folders | clusters → hosts | hosts) → VMs, indexed once."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.vms = [_vm(v) for v in data.get("vms") or []]
        self.by_path = {vm.path: vm for vm in self.vms}
        self.datacenters: dict[str, Group] = {}
        for dc in data.get("datacenters") or []:
            name = dc if isinstance(dc, str) else str(dc.get("name"))
            self._dc(name)
        by_host: dict[str, list[VM]] = {}
        for vm in self.vms:
            group = self._dc(vm.datacenter)
            for folder in vm.folder:
                group = group.child("folder", folder)
            group.vms.append(vm)
            if vm.host:
                by_host.setdefault(vm.host, []).append(vm)
        self._place_hosts(data, by_host)
        for dc in self.datacenters.values():
            _sort(dc)

    def _dc(self, name: str) -> Group:
        group = self.datacenters.get(name)
        if group is None:
            group = self.datacenters[name] = Group("datacenter", name)
        return group

    def _place_hosts(self, data: dict[str, Any], by_host: dict[str, list[VM]]) -> None:
        for cluster in data.get("clusters") or []:
            dc = self._dc(str(_pick(cluster, "datacenter", default=_dc_of(cluster))))
            group = dc.child("cluster", str(cluster["name"]))
            for host in cluster.get("hosts") or []:
                name = host if isinstance(host, str) else str(host.get("name"))
                group.child("host", name).vms = by_host.get(name, [])
        for host in data.get("hosts") or []:
            name = str(host["name"])
            cluster = host.get("cluster")
            dc = self._dc(str(_pick(host, "datacenter", default=_dc_of(host))))
            parent = dc.child("cluster", str(cluster)) if cluster else dc
            parent.child("host", name).vms = by_host.get(name, [])

    def matching(self, text: str) -> list[VM]:
        needle = text.lower()
        return [vm for vm in self.vms if needle in vm.name.lower()]


def _dc_of(item: dict[str, Any]) -> str:
    path = str(item.get("path") or "")
    return path.strip("/").split("/", 1)[0] if path else "?"


def _sort(group: Group) -> None:
    group.groups = dict(sorted(group.groups.items(), key=lambda kv: (kv[0][0], kv[0][1].lower())))
    group.vms.sort(key=lambda vm: vm.name.lower())
    for sub in group.groups.values():
        _sort(sub)
