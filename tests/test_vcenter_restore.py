"""The vCenter side of restoring a whole VM, against the real vcsim lab: the configuration
recorded at backup time, where a restored VM goes, making it, and what is done to it
afterwards. Every VM a test makes is removed by the ``made`` fixture, whatever happens."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyVmomi import vim

from engine.config import Settings
from engine.contract.progress import ConfigRecorded, ProgressLine
from engine.contract.vmconfig import ControllerConfig, DiskConfig, NicConfig, VMConfig
from engine.db.models import BackupJob
from engine.db.session import session_scope
from engine.errors import BadInput, Conflict, NotFound, VCenterError, VMNotFound
from engine.node.client.migration import record_config
from engine.node.sources import flat_extent
from engine.vcenter import (
    CreatedVM,
    Placement,
    VCenter,
    check_name_free,
    create_snapshot,
    create_vm,
    datastore_file_path,
    destroy_vm,
    enable_cbt,
    find_vm,
    get_inventory,
    power_off,
    power_on,
    query_changed_areas,
    remove_snapshot,
    rename_vm,
    resolve_placement,
    vm_config,
)
from engine.vcenter.tasks import wait
from tests.fixtures.lab import LAB_DISK_MIB, Lab
from tests.fixtures.points import Point

MiB = 1024 * 1024
PG_FOLDER = "/DatabanxDC/vm"
PG_POOL = "/DatabanxDC/host/DatabanxCluster/Resources"


@pytest.fixture
def vc(lab: Lab) -> Iterator[VCenter]:
    with lab.connect() as conn:
        yield conn


@pytest.fixture
def pg_config(vc: VCenter) -> VMConfig:
    return vm_config(vc, find_vm(vc, "/DatabanxDC/vm/pgtest1"))


MakeVM = Callable[..., CreatedVM]


@pytest.fixture
def made(vc: VCenter) -> Iterator[MakeVM]:
    """create_vm with a fresh name; every VM made is destroyed at the end."""
    morefs: list[str] = []

    def make(config: VMConfig, placement: Placement | None = None, **kw: object) -> CreatedVM:
        name = f"restored-{uuid.uuid4().hex[:8]}"
        vm = create_vm(vc, config, name, placement or resolve_placement(vc, config), **kw)
        morefs.append(vm.moref)
        return vm

    yield make
    for moref in morefs:
        destroy_vm(vc, moref)


def hardware(config: VMConfig) -> dict[str, object]:
    """What a restore must reproduce: everything but names, files, MACs and placement."""
    return {
        "cpu": (config.num_cpus, config.cores_per_socket, config.memory_mb),
        "guest": (config.guest_id, config.firmware, config.hardware_version, config.annotation),
        "controllers": [(c.key, c.kind, c.bus_number, c.sharing) for c in config.controllers],
        "disks": [
            (d.key, d.controller_key, d.unit_number, d.capacity_bytes, d.thin, d.eagerly_scrub)
            for d in config.disks
        ],
        "nics": [(n.key, n.kind, n.network, n.start_connected) for n in config.nics],
    }


def allocated(path: Path) -> bool:
    """Whether the file holds any data (SEEK_DATA finds none in an all-hole file)."""
    with path.open("rb") as f:
        try:
            os.lseek(f.fileno(), 0, os.SEEK_DATA)
        except OSError:
            return False
    return True


# --- the recorded configuration ---------------------------------------------------------


def test_vm_config_of_pgtest1(pg_config: VMConfig) -> None:
    c = pg_config
    assert (c.name, c.guest_id, c.num_cpus, c.memory_mb) == ("pgtest1", "ubuntu64Guest", 2, 4096)
    assert (c.firmware, c.hardware_version, c.annotation) == (
        "bios",
        "vmx-13",
        "Seed site database VM",
    )
    assert (c.folder, c.resource_pool, c.datastore, c.host) == (
        PG_FOLDER,
        PG_POOL,
        "DatabanxDS",
        "esx01.databanx.lab",
    )
    assert (
        ControllerConfig(key=1000, kind="lsilogic", bus_number=0, sharing="noSharing")
        in c.controllers
    )
    assert {x.kind for x in c.controllers} == {"lsilogic", "ide"}  # vSphere's IDE 0 and 1 too
    assert [(d.key, d.controller_key, d.unit_number, d.capacity_bytes) for d in c.disks] == [
        (2000, 1000, 0, LAB_DISK_MIB * MiB),
        (2001, 1000, 1, LAB_DISK_MIB * 5 // 3 * MiB),
    ]
    assert all(d.thin and not d.eagerly_scrub and d.datastore == "DatabanxDS" for d in c.disks)
    assert c.disks[0].file_name == "[DatabanxDS] pgtest1/pgtest1.vmdk"
    [nic] = c.nics
    assert (nic.key, nic.kind, nic.network, nic.address_type) == (
        4000,
        "vmxnet3",
        "VM Network",
        "generated",
    )
    assert nic.mac_address and nic.mac_address.startswith("00:0c:29") and nic.start_connected
    VMConfig.model_validate_json(c.model_dump_json())  # storable as it stands


def test_vm_config_from_a_snapshot_is_the_vm_as_of_the_point(lab: Lab, vc: VCenter) -> None:
    vm = find_vm(vc, lab.web01.path)
    before = vm_config(vc, vm)
    snap = create_snapshot(vc, vm, f"cfg-{uuid.uuid4().hex[:6]}", allow_crash_consistent=True)
    try:
        wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(memoryMB=before.memory_mb * 2)))
        try:
            at_point = vm_config(vc, vm, snap.ref)
            now = vm_config(vc, vm)
        finally:
            wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(memoryMB=before.memory_mb)))
    finally:
        remove_snapshot(vc, snap.ref)
    assert now.memory_mb == before.memory_mb * 2
    assert at_point == before
    assert at_point.folder == "/DatabanxDC/vm/Prod/Web Tier" and at_point.name == "web 01"


def test_a_config_that_cannot_be_read_costs_the_point_a_vm_restore_not_the_backup(
    lab: Lab, vc: VCenter, caplog: pytest.LogCaptureFixture
) -> None:
    lines: list[ProgressLine] = []

    class Collect:
        def emit(self, line: ProgressLine) -> None:
            lines.append(line)

        def close(self) -> None:
            pass

    vm = find_vm(vc, lab.web01.path)
    snap = create_snapshot(vc, vm, f"cfg-{uuid.uuid4().hex[:6]}", allow_crash_consistent=True)
    try:
        record_config(vc, vm, snap, "job-ok", Collect())
    finally:
        remove_snapshot(vc, snap.ref)
    # A real failure: the snapshot is gone when its configuration is read.
    with caplog.at_level(logging.WARNING, logger="sendense.client"):
        record_config(vc, vm, snap, "job-gone", Collect())
    assert [type(x) for x in lines] == [ConfigRecorded]
    assert isinstance(lines[0], ConfigRecorded) and lines[0].config.name == "web 01"
    [warning] = [r.getMessage() for r in caplog.records if "job-gone" in r.getMessage()]
    assert "ManagedObjectNotFound" in warning and "will not restore a whole VM" in warning
    assert "\n" not in warning


# --- placement ---------------------------------------------------------------------------


def test_placement_defaults_to_where_the_vm_lived(vc: VCenter, pg_config: VMConfig) -> None:
    p = resolve_placement(vc, pg_config)
    assert (p.folder_path, p.pool_path, p.datastore_name) == (PG_FOLDER, PG_POOL, "DatabanxDS")
    assert isinstance(p.datacenter, vim.Datacenter) and isinstance(p.pool, vim.ResourcePool)
    assert p.host is not None and p.host.name == "esx01.databanx.lab"


def test_placement_takes_a_cluster_or_a_host_for_the_pool(vc: VCenter, pg_config: VMConfig) -> None:
    cluster = resolve_placement(vc, pg_config, pool="/DatabanxDC/host/DatabanxCluster")
    assert cluster.pool._moId == resolve_placement(vc, pg_config).pool._moId
    host = resolve_placement(
        vc,
        pg_config,
        pool="DatabanxDC/host/DatabanxCluster/esx02.databanx.lab",
        folder="/DatabanxDC/vm/Prod",
    )
    assert host.host.name == "esx02.databanx.lab" and host.folder_path == "/DatabanxDC/vm/Prod"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"folder": "/DatabanxDC/vm/nope"}, "folder /DatabanxDC/vm/nope does not exist"),
        ({"datastore": "nope"}, "datastore nope does not exist in datacenter DatabanxDC"),
        ({"pool": "/DatabanxDC/host/nope"}, "resource pool /DatabanxDC/host/nope does not exist"),
    ],
)
def test_placement_that_does_not_exist_is_one_line(
    vc: VCenter, pg_config: VMConfig, where: dict[str, str], message: str
) -> None:
    with pytest.raises(NotFound) as err:
        resolve_placement(vc, pg_config, **where)
    assert str(err.value) == message
    assert (err.value.exit_code, err.value.http_status) == (7, 404)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"folder": "/DatabanxDC/host"}, "/DatabanxDC/host is not a VM folder"),
        (
            {"pool": "/DC0/host/DC0_C0"},
            "resource pool /DC0/host/DC0_C0 is not in datacenter DatabanxDC",
        ),
        (
            {"pool": "/DC0/host/DC0_C0/DC0_C0_H0"},
            "resource pool /DC0/host/DC0_C0/DC0_C0_H0 is not in",
        ),
    ],
)
def test_placement_that_does_not_fit_is_bad_input(
    vc: VCenter, pg_config: VMConfig, where: dict[str, str], message: str
) -> None:
    with pytest.raises(BadInput) as err:
        resolve_placement(vc, pg_config, **where)
    assert str(err.value).startswith(message) and err.value.exit_code == 2


def test_a_point_without_placement_needs_it_given(vc: VCenter, pg_config: VMConfig) -> None:
    bare = pg_config.model_copy(update={"folder": None})
    with pytest.raises(BadInput, match="does not record the VM's folder: give a folder"):
        resolve_placement(vc, bare)
    assert resolve_placement(vc, bare, folder=PG_FOLDER).folder_path == PG_FOLDER


def test_a_name_taken_anywhere_in_the_datacenter_is_a_conflict(
    vc: VCenter, pg_config: VMConfig
) -> None:
    p = resolve_placement(vc, pg_config)  # /DatabanxDC/vm; web 01 is two folders down
    with pytest.raises(Conflict) as err:
        check_name_free(vc, p, "web 01")
    assert (
        str(err.value) == "a VM named web 01 already exists (/DatabanxDC/vm/Prod/Web Tier/web 01)"
    )
    assert (err.value.exit_code, err.value.http_status) == (8, 409)
    elsewhere = next(v.name for v in get_inventory(vc).vms if v.datacenter == "DC0")
    check_name_free(vc, p, elsewhere)  # a VM of another datacenter does not count
    check_name_free(vc, p, f"free-{uuid.uuid4().hex[:6]}")
    with pytest.raises(BadInput):
        check_name_free(vc, p, "  ")


# --- making the VM ----------------------------------------------------------------------


def test_create_vm_makes_the_recorded_hardware_with_empty_disks(
    vc: VCenter, pg_config: VMConfig, made: MakeVM
) -> None:
    new = made(pg_config)
    assert new.path == f"{PG_FOLDER}/{new.name}" and new.moref.startswith("vm-")
    again = vm_config(vc, find_vm(vc, new.path))
    assert hardware(again) == hardware(pg_config)
    assert (again.folder, again.resource_pool, again.datastore) == (
        PG_FOLDER,
        PG_POOL,
        "DatabanxDS",
    )
    [nic], [old_nic] = again.nics, pg_config.nics
    assert nic.address_type == "generated" and nic.mac_address != old_nic.mac_address
    assert [(d.source_key, d.key, d.capacity_bytes) for d in new.disks] == [
        (d.key, d.key, d.capacity_bytes) for d in pg_config.disks
    ]
    folder = None
    for disk in new.disks:
        assert disk.file_name.startswith(f"[DatabanxDS] {new.name}/")
        descriptor = datastore_file_path(vc, disk.file_name)
        flat = flat_extent(descriptor)  # a real descriptor, naming its flat file beside it
        assert flat.parent == descriptor.parent and flat.stat().st_size == disk.capacity_bytes
        assert not allocated(flat)  # a new disk reads as zeroes and holds nothing
        folder = descriptor.parent
    assert folder is not None and folder.is_dir()
    destroy_vm(vc, new.moref)
    with pytest.raises(VMNotFound):
        find_vm(vc, new.path)
    assert not folder.exists()
    destroy_vm(vc, new.moref)  # gone already: nothing to do


def test_create_vm_keeps_kinds_buses_provisioning_and_firmware(
    vc: VCenter, pg_config: VMConfig, made: MakeVM
) -> None:
    config = pg_config.model_copy(
        update={
            "firmware": "efi",
            "num_cpus": 4,
            "cores_per_socket": 2,
            "memory_mb": 1024,
            "annotation": None,
            "controllers": [
                ControllerConfig(key=200, kind="ide", bus_number=0),
                ControllerConfig(key=1000, kind="pvscsi", bus_number=0, sharing="noSharing"),
                ControllerConfig(
                    key=1001, kind="lsilogic-sas", bus_number=1, sharing="virtualSharing"
                ),
            ],
            "disks": [
                DiskConfig(
                    key=2000, controller_key=1000, unit_number=0, capacity_bytes=MiB, thin=True
                ),
                DiskConfig(
                    key=2001, controller_key=1000, unit_number=3, capacity_bytes=2 * MiB, thin=False
                ),
                DiskConfig(
                    key=2002,
                    controller_key=1001,
                    unit_number=0,
                    capacity_bytes=MiB,
                    thin=False,
                    eagerly_scrub=True,
                ),
                DiskConfig(key=3000, controller_key=200, unit_number=0, capacity_bytes=MiB),
            ],
            "nics": [
                NicConfig(
                    key=4000,
                    kind="e1000e",
                    network="VM Network",
                    mac_address="00:50:56:01:02:03",
                    address_type="manual",
                ),
                NicConfig(key=4001, kind="vmxnet3", network="gone-network"),
            ],
        }
    )
    new = made(config, keep_mac=True)
    again = vm_config(vc, find_vm(vc, new.moref))
    assert hardware(again)["cpu"] == (4, 2, 1024) and again.firmware == "efi"
    assert [(c.kind, c.bus_number, c.sharing) for c in again.controllers if c.kind != "ide"] == [
        ("pvscsi", 0, "noSharing"),
        ("lsilogic-sas", 1, "virtualSharing"),
    ]
    on = {c.key: (c.kind, c.bus_number) for c in again.controllers}
    got = sorted(
        (on[d.controller_key], d.unit_number, d.capacity_bytes, d.thin, d.eagerly_scrub)
        for d in again.disks
    )
    assert got == sorted(
        [
            (("pvscsi", 0), 0, MiB, True, False),
            (("pvscsi", 0), 3, 2 * MiB, False, False),
            (("lsilogic-sas", 1), 0, MiB, False, True),
            (("ide", 0), 0, MiB, True, False),
        ]
    )
    assert {d.source_key for d in new.disks} == {2000, 2001, 2002, 3000}
    kept, gone = sorted(again.nics, key=lambda n: n.kind)
    assert (kept.kind, kept.network, kept.mac_address, kept.address_type) == (
        "e1000e",
        "VM Network",
        "00:50:56:01:02:03",
        "manual",
    )
    # A network that does not exist here: the NIC is there, on no network, not connected.
    assert (gone.kind, gone.network, gone.start_connected) == ("vmxnet3", None, False)


def test_vcenter_refusing_create_vm_is_its_reason_and_leaves_no_vm(
    lab: Lab, vc: VCenter, pg_config: VMConfig
) -> None:
    name = f"refused-{uuid.uuid4().hex[:6]}"
    placement = resolve_placement(vc, pg_config)
    lab.refuse_create_vm("Insufficient disk space on datastore 'DatabanxDS'.")
    try:
        with pytest.raises(VCenterError) as err:
            create_vm(vc, pg_config, name, placement)
    finally:
        lab.refuse_create_vm(None)
    assert str(err.value) == (
        f"vCenter refused to create VM {name}: GenericVmConfigFault: "
        "Insufficient disk space on datastore 'DatabanxDS'."
    )
    assert err.value.exit_code == 3
    assert name not in {v.name for v in get_inventory(vc).vms}
    check_name_free(vc, placement, name)


def test_power_and_rename(vc: VCenter, pg_config: VMConfig, made: MakeVM) -> None:
    new = made(pg_config)
    state = lambda: find_vm(vc, new.moref).runtime.powerState  # noqa: E731
    assert state() == "poweredOff"
    power_on(vc, new.moref)
    power_on(vc, new.moref)  # on already: nothing to do
    assert state() == "poweredOn"
    renamed = f"{new.name}-renamed"
    rename_vm(vc, new.moref, renamed)
    assert find_vm(vc, f"{PG_FOLDER}/{renamed}")._moId == new.moref
    with pytest.raises(BadInput):
        rename_vm(vc, new.moref, "")
    power_off(vc, new.moref)
    assert state() == "poweredOff"
    power_on(vc, new.moref)
    destroy_vm(vc, new.moref)  # powers it off first
    with pytest.raises(VMNotFound):
        power_on(vc, new.moref)


def test_a_restored_vm_can_be_backed_up_like_any_lab_vm(
    lab: Lab, vc: VCenter, pg_config: VMConfig, made: MakeVM
) -> None:
    new = made(pg_config)
    vm = find_vm(vc, new.moref)
    enable_cbt(vc, vm)
    disk = new.disks[0]
    lab.write(new.moref, disk.key, MiB, 65536)  # the lab follows the new VM's disks
    snap = create_snapshot(vc, vm, "after-restore", allow_crash_consistent=True)
    try:
        areas = query_changed_areas(vc, vm, snap.ref, disk.key, disk.capacity_bytes, "*")
    finally:
        remove_snapshot(vc, snap.ref)
    assert areas == [(MiB, 65536)]


# --- recorded at backup time -------------------------------------------------------------


def test_a_backup_records_the_vm_config_with_its_point(
    point: Point, settings: Settings, vc: VCenter, pg_config: VMConfig
) -> None:
    with session_scope(settings.db_url) as s:
        row = s.get(BackupJob, point.point_id)
        assert row is not None and row.vm_config
        recorded = VMConfig.model_validate_json(row.vm_config)
    assert recorded == pg_config
    assert (recorded.num_cpus, recorded.memory_mb, recorded.guest_id) == (2, 4096, "ubuntu64Guest")
    assert [(d.key, d.capacity_bytes) for d in recorded.disks] == [
        (key, point.registration.pgtest1.disks[i].capacity_bytes)
        for i, key in enumerate(sorted(point.disks))
    ]
    assert [(n.kind, n.network) for n in recorded.nics] == [("vmxnet3", "VM Network")]
