"""A VM's configuration as a restore point records it: what ``CreateVM_Task`` needs to
build the VM again, beyond the bytes of its disks.

Recorded by the backup client from the snapshot's own ``config`` (so it is the VM as of
the point, not as of the restore) and sent to the hub in a ``vm_config`` progress line.
Names are vSphere's where vSphere has one (``guest_id``, ``firmware``), and the device
kinds are short words rather than pyVmomi class names, so that the record stays readable
in the database and in the API.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.contract.fields import Count

DeviceKey = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Word = Annotated[str, Field(max_length=255)]

# Controllers a disk hangs on: SCSI (four kinds), SATA (AHCI), NVMe, IDE.
ControllerKind = Literal["pvscsi", "lsilogic", "lsilogic-sas", "buslogic", "sata", "nvme", "ide"]
# NICs: the virtual adapter types vSphere offers.
NicKind = Literal["vmxnet3", "vmxnet2", "vmxnet", "e1000", "e1000e", "pcnet32", "sriov"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ControllerConfig(_Record):
    key: DeviceKey
    kind: ControllerKind
    bus_number: Annotated[int, Field(ge=0, le=255)] = 0
    # SCSI bus sharing: noSharing, virtualSharing, physicalSharing.
    sharing: Word | None = None


class DiskConfig(_Record):
    key: DeviceKey
    controller_key: DeviceKey
    unit_number: Annotated[int, Field(ge=0, le=255)]
    capacity_bytes: Count
    # Provisioning: thin, or thick (lazily zeroed unless ``eagerly_scrub``).
    thin: bool = True
    eagerly_scrub: bool = False
    datastore: Word | None = None
    file_name: Annotated[str, Field(max_length=1024)] | None = None  # "[ds] vm/vm.vmdk"
    label: Word | None = None


class NicConfig(_Record):
    key: DeviceKey
    kind: NicKind = "vmxnet3"
    network: Word | None = None  # the port group or network name
    mac_address: Word | None = None
    address_type: Word | None = None  # generated | manual | assigned
    start_connected: bool = True


class VMConfig(_Record):
    """Everything a restore needs to recreate the VM; placement is where it lived."""

    name: Annotated[str, Field(max_length=255)]
    guest_id: Word | None = None
    num_cpus: Annotated[int, Field(ge=1, le=4096)] = 1
    cores_per_socket: Annotated[int, Field(ge=1, le=4096)] | None = None
    memory_mb: Annotated[int, Field(ge=1)] = 1024
    firmware: Literal["bios", "efi"] = "bios"
    hardware_version: Word | None = None  # "vmx-19"
    annotation: Annotated[str, Field(max_length=65535)] | None = None
    # Where the VM lived, as inventory paths (folder, resource pool) and names.
    folder: Annotated[str, Field(max_length=1024)] | None = None
    resource_pool: Annotated[str, Field(max_length=1024)] | None = None
    datastore: Word | None = None
    host: Word | None = None
    controllers: list[ControllerConfig] = Field(default_factory=list)
    disks: list[DiskConfig] = Field(default_factory=list)
    nics: list[NicConfig] = Field(default_factory=list)
