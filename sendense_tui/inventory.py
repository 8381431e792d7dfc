"""The vCenter inventory as the console's tree wants it.

The hub sends the whole inventory (``sendense inventory --json``: ``vcenter``,
``entities`` and ``vms``) in one answer; this module indexes it once so that expanding
any tree node is a dict look-up, which is what keeps a 5,000-VM tree quick. It reads
the JSON itself rather than importing the engine's models: the console never imports
``engine``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Disk:
    key: int
    label: str
    capacity_bytes: int
    datastore: str
    file_name: str


@dataclass
class VM:
    name: str
    path: str
    moref: str
    power_state: str
    guest_os: str
    cpus: int | None
    memory_mb: int | None
    cbt_enabled: bool
    has_snapshots: bool
    host: str | None  # the host's moref
    disks: list[Disk]

    @property
    def folder(self) -> tuple[str, ...]:
        """Folders between the datacenter's ``vm`` folder and the VM itself."""
        parts = self.path.strip("/").split("/")
        return tuple(parts[2:-1]) if len(parts) > 3 else ()

    @property
    def datacenter(self) -> str:
        return self.path.strip("/").split("/", 1)[0]

    @property
    def total_bytes(self) -> int:
        return sum(d.capacity_bytes for d in self.disks)


@dataclass
class Group:
    """A tree node's children: sub-groups keyed by (kind, name), then VMs."""

    kind: str
    name: str
    groups: dict[tuple[str, str], Group] = field(default_factory=dict)
    vms: list[VM] = field(default_factory=list)

    def child(self, kind: str, name: str) -> Group:
        group = self.groups.get((kind, name))
        if group is None:
            group = self.groups[(kind, name)] = Group(kind, name)
        return group


def _vm(data: dict[str, Any]) -> VM:
    return VM(
        name=str(data["name"]),
        path=str(data["path"]),
        moref=str(data.get("moref") or ""),
        power_state=str(data.get("power_state") or ""),
        guest_os=str(data.get("guest_os") or ""),
        cpus=data.get("cpus"),
        memory_mb=data.get("memory_mb"),
        cbt_enabled=bool(data.get("cbt_enabled")),
        has_snapshots=bool(data.get("has_snapshots")),
        host=data.get("host"),
        disks=[
            Disk(
                key=int(d["key"]),
                label=str(d.get("label") or ""),
                capacity_bytes=int(d.get("capacity_bytes") or 0),
                datastore=str(d.get("datastore") or ""),
                file_name=str(d.get("file_name") or ""),
            )
            for d in data.get("disks") or []
        ],
    )


class Inventory:
    """Datacenters → folders and VMs (from the VMs' paths), clusters → hosts → VMs."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.vcenter = str(data.get("vcenter") or "")
        self.vms = [_vm(v) for v in data.get("vms") or []]
        self.by_path = {vm.path: vm for vm in self.vms}
        self.datacenters: dict[str, Group] = {}
        entities = {str(e["moref"]): e for e in data.get("entities") or []}
        for entity in entities.values():
            if entity.get("kind") == "Datacenter":
                self._dc(str(entity["name"]))
        by_host: dict[str, list[VM]] = {}
        for vm in self.vms:
            group = self._dc(vm.datacenter)
            for folder in vm.folder:
                group = group.child("folder", folder)
            group.vms.append(vm)
            if vm.host:
                by_host.setdefault(vm.host, []).append(vm)
        for moref, entity in entities.items():
            if entity.get("kind") == "HostSystem":
                self._place_host(entity, entities, by_host.get(moref, []))
        self.datacenters = dict(sorted(self.datacenters.items(), key=lambda kv: kv[0].lower()))
        for dc in self.datacenters.values():
            _sort(dc)

    def _dc(self, name: str) -> Group:
        group = self.datacenters.get(name)
        if group is None:
            group = self.datacenters[name] = Group("datacenter", name)
        return group

    def _place_host(
        self, host: dict[str, Any], entities: dict[str, dict[str, Any]], vms: list[VM]
    ) -> None:
        """A host goes under its cluster, or straight under its datacenter when standalone."""
        dc_name = host.get("datacenter") or str(host.get("path") or "/?").split("/")[1]
        parent: Group = self._dc(str(dc_name))
        owner = entities.get(str(host.get("parent")))
        if owner is not None and owner.get("kind") == "ClusterComputeResource":
            parent = parent.child("cluster", str(owner["name"]))
        parent.child("host", str(host["name"])).vms = vms

    def matching(self, text: str) -> list[VM]:
        needle = text.lower()
        return [vm for vm in self.vms if needle in vm.name.lower()]


def _sort(group: Group) -> None:
    group.groups = dict(sorted(group.groups.items(), key=lambda kv: (kv[0][0], kv[0][1].lower())))
    group.vms.sort(key=lambda vm: vm.name.lower())
    for sub in group.groups.values():
        _sort(sub)
