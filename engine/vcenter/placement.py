"""Where a restored VM goes: folder, resource pool, datastore and host, each resolved and
checked before anything is created, so that a wrong name is one line and not a half VM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from engine.contract.vmconfig import VMConfig
from engine.errors import BadInput, Conflict, NotFound
from engine.vcenter.connection import VCenter
from engine.vcenter.properties import container_filter, prop_spec, retrieve
from engine.vcenter.vmconfig import typed_read, typed_read_many
from engine.vcenter.vms import inventory_path

MAX_NAME = 80  # vCenter's limit for a VM name


@dataclass(frozen=True)
class Placement:
    """Where a restored VM goes; every part resolved and checked."""

    datacenter: Any  # vim.Datacenter
    folder: Any  # vim.Folder (a VM folder)
    folder_path: str
    pool: Any  # vim.ResourcePool
    pool_path: str
    datastore: Any  # vim.Datastore
    datastore_name: str
    host: Any | None  # vim.HostSystem: one that sees the datastore


def _path(text: str) -> str:
    return "/" + text.strip().strip("/")


def _find(vc: VCenter, path: str) -> Any | None:
    return vc.content.searchIndex.FindByInventoryPath(path.strip("/"))


def _datacenter_of(vc: VCenter, obj: Any) -> Any | None:
    current = obj
    while current is not None and not isinstance(current, vim.Datacenter):
        current = typed_read(vc, current, ["parent"]).get("parent")
    return current


def _folder(vc: VCenter, path: str) -> Any:
    obj = _find(vc, path)
    if not isinstance(obj, vim.Folder):
        raise NotFound(f"folder {path} does not exist")
    if "VirtualMachine" not in (typed_read(vc, obj, ["childType"]).get("childType") or ()):
        raise BadInput(f"{path} is not a VM folder")
    return obj


def _datastore(vc: VCenter, dc: Any, dc_name: str, name: str) -> Any:
    stores = list(typed_read(vc, dc, ["datastore"]).get("datastore") or ())
    for ds, props in typed_read_many(vc, stores, ["name"]):
        if props.get("name") == name:
            return ds
    raise NotFound(f"datastore {name} does not exist in datacenter {dc_name}")


def _pool(vc: VCenter, path: str) -> tuple[Any, Any | None]:
    """(resource pool, host) for a pool path, or a cluster's or host's path (its root pool)."""
    obj = _find(vc, path)
    host = None
    if isinstance(obj, vim.HostSystem):
        host, obj = obj, typed_read(vc, obj, ["parent"]).get("parent")
    if isinstance(obj, vim.ComputeResource):
        obj = typed_read(vc, obj, ["resourcePool"]).get("resourcePool")
    if not isinstance(obj, vim.ResourcePool):
        raise NotFound(f"resource pool {path} does not exist")
    return obj, host


def _host(
    vc: VCenter, pool: Any, pool_path: str, ds: Any, ds_name: str, wanted: Any, recorded: str | None
) -> Any:
    """A usable host of the pool's cluster that mounts the datastore: the one asked for, or
    the one the VM ran on, or the first by name. vCenter needs one for clusters without DRS.
    Mounts are read from the hosts' side (vcsim lists only one host on a shared datastore)."""
    owner = typed_read(vc, pool, ["owner"]).get("owner")
    hosts = list(typed_read(vc, owner, ["host"]).get("host") or ()) if owner is not None else []
    usable = []
    paths = ["name", "datastore", "runtime.connectionState", "runtime.inMaintenanceMode"]
    for host, props in typed_read_many(vc, hosts, paths):
        if (
            ds._moId in {d._moId for d in props.get("datastore") or ()}
            and props.get("runtime.connectionState") == "connected"
            and not props.get("runtime.inMaintenanceMode")
        ):
            usable.append((props.get("name", ""), host))
    if wanted is not None:
        if wanted._moId not in {h._moId for _, h in usable}:
            raise BadInput(
                f"host {pool_path} cannot use datastore {ds_name} (not mounted or not connected)"
            )
        return wanted
    if not usable:
        raise BadInput(f"no connected host of {pool_path} mounts datastore {ds_name}")
    usable.sort(key=lambda nh: (nh[0] != recorded, nh[0]))
    return usable[0][1]


def resolve_placement(
    vc: VCenter,
    config: VMConfig,
    *,
    folder: str | None = None,
    datastore: str | None = None,
    pool: str | None = None,
) -> Placement:
    """The placement of a restore: each part as given, or where the VM lived when None."""
    folder_path = _path(folder) if folder else config.folder
    pool_path = _path(pool) if pool else config.resource_pool
    ds_name = datastore.strip() if datastore else config.datastore
    for what, value, flag in (
        ("folder", folder_path, "folder"),
        ("resource pool", pool_path, "pool"),
        ("datastore", ds_name, "datastore"),
    ):
        if not value:
            raise BadInput(f"the restore point does not record the VM's {what}: give a {flag}")
    assert folder_path and pool_path and ds_name
    folder_obj = _folder(vc, folder_path)
    dc = _datacenter_of(vc, folder_obj)
    if dc is None:
        raise NotFound(f"folder {folder_path} is in no datacenter")
    dc_name = typed_read(vc, dc, ["name"]).get("name", dc._moId)
    ds = _datastore(vc, dc, dc_name, ds_name)
    pool_obj, wanted_host = _pool(vc, pool_path)
    pool_dc = _datacenter_of(vc, pool_obj)
    if pool_dc is None or pool_dc._moId != dc._moId:
        raise BadInput(
            f"resource pool {pool_path} is not in datacenter {dc_name} of folder {folder_path}"
        )
    host = _host(vc, pool_obj, pool_path, ds, ds_name, wanted_host, config.host)
    return Placement(
        datacenter=dc,
        folder=folder_obj,
        folder_path=folder_path,
        pool=pool_obj,
        pool_path=pool_path,
        datastore=ds,
        datastore_name=ds_name,
        host=host,
    )


def check_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME:
        raise BadInput(f"a VM name is 1 to {MAX_NAME} characters, not {name!r}")
    return cleaned


def check_name_free(vc: VCenter, placement: Placement, name: str) -> None:
    """Refuse a name any VM of the datacenter has (in any folder): two VMs of one name in
    a datacenter make every path-based tool, and the operator, guess."""
    wanted = check_name(name)
    view = vc.content.viewManager.CreateContainerView(
        placement.datacenter, [vim.VirtualMachine], True
    )
    try:
        spec = container_filter(view, [prop_spec(vim.VirtualMachine, ["name"])])
        same = [moref for _, moref, props in retrieve(vc, spec) if props.get("name") == wanted]
    finally:
        view.Destroy()
    if same:
        path, _ = inventory_path(vc, vim.VirtualMachine(same[0], vc.si._stub))
        raise Conflict(f"a VM named {wanted} already exists ({path})")
