"""Plain data about a vCenter's inventory: what the engine, the hub and the console share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DiskInfo:
    key: int
    label: str
    capacity_bytes: int
    file_name: str  # "[datastore] dir/name.vmdk"
    datastore: str
    controller_key: int
    unit_number: int
    change_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class VMInfo:
    name: str
    path: str  # the seed's inventory path: /DC/vm/[folders/]NAME
    moref: str
    power_state: str
    guest_os: str
    cpus: int
    memory_mb: int
    cbt_enabled: bool
    has_snapshots: bool
    disks: list[DiskInfo] = field(default_factory=list)
    datacenter: str = ""
    host: str | None = None  # moref
    resource_pool: str | None = None  # moref
    parent: str | None = None  # folder moref

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EntityInfo:
    """A datacenter, folder, cluster, host or resource pool."""

    kind: str  # Datacenter | Folder | ClusterComputeResource | ComputeResource | HostSystem | ...
    name: str
    path: str
    moref: str
    parent: str | None
    datacenter: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Inventory:
    vcenter: str
    entities: list[EntityInfo]
    vms: list[VMInfo]

    def of_kind(self, *kinds: str) -> list[EntityInfo]:
        return [e for e in self.entities if e.kind in kinds]

    @property
    def datacenters(self) -> list[EntityInfo]:
        return self.of_kind("Datacenter")

    def to_dict(self) -> dict[str, Any]:
        return {
            "vcenter": self.vcenter,
            "entities": [e.to_dict() for e in self.entities],
            "vms": [v.to_dict() for v in self.vms],
        }


def datastore_of(file_name: str) -> str:
    """ "[ds1] dir/x.vmdk" -> "ds1"."""
    if file_name.startswith("[") and "]" in file_name:
        return file_name[1 : file_name.index("]")]
    return ""
