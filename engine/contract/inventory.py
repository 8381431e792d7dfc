"""A vCenter's inventory as the engine reads it and the hub serves it to consoles.

``GET /vcenters/{id}/inventory`` answers ``Inventory``; ``sendense inventory --json``
prints the same. The engine's vCenter reader builds these models directly.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class DiskInfo(BaseModel):
    key: int
    label: str
    capacity_bytes: int
    file_name: str  # "[datastore] dir/name.vmdk"
    datastore: str
    controller_key: int
    unit_number: int
    change_id: str | None = None


class VMInfo(BaseModel):
    name: str
    path: str  # the seed's inventory path: /DC/vm/[folders/]NAME
    moref: str
    power_state: str
    guest_os: str
    cpus: int
    memory_mb: int
    cbt_enabled: bool
    has_snapshots: bool
    disks: list[DiskInfo] = Field(default_factory=list)
    datacenter: str = ""
    host: str | None = None  # moref
    resource_pool: str | None = None  # moref
    parent: str | None = None  # folder moref


class EntityInfo(BaseModel):
    """A datacenter, folder, cluster, host or resource pool."""

    kind: str  # Datacenter | Folder | ClusterComputeResource | ComputeResource | HostSystem | ...
    name: str
    path: str
    moref: str
    parent: str | None
    datacenter: str


class Inventory(BaseModel):
    vcenter: str
    entities: list[EntityInfo]
    vms: list[VMInfo]

    def of_kind(self, *kinds: str) -> list[EntityInfo]:
        return [e for e in self.entities if e.kind in kinds]

    @property
    def datacenters(self) -> list[EntityInfo]:
        return self.of_kind("Datacenter")


def datastore_of(file_name: str) -> str:
    """ "[ds1] dir/x.vmdk" -> "ds1"."""
    if file_name.startswith("[") and "]" in file_name:
        return file_name[1 : file_name.index("]")]
    return ""
