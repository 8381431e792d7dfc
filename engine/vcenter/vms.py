"""One VM: find it by path or moref, describe it, and find its disk files on a datastore."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pyVmomi import vim, vmodl

from engine.contract.inventory import VMInfo
from engine.errors import BadInput, VCenterError, VMNotFound
from engine.vcenter.connection import VCenter
from engine.vcenter.inventory import VM_PROPERTIES, vm_from_properties
from engine.vcenter.properties import read

MOREF = re.compile(r"^vm-\d+$")


def _props(vc: VCenter, obj: Any, paths: list[str]) -> dict[str, Any]:
    try:
        props = read(vc, obj, paths)
    except vmodl.fault.ManagedObjectNotFound:
        props = {}
    if not props:
        raise VMNotFound(f"VM {obj._moId} does not exist on vCenter {vc.host}")
    return props


def find_vm(vc: VCenter, path_or_moref: str) -> vim.VirtualMachine:
    """By inventory path ("/DC/vm/NAME", "DC/vm/Folder/NAME", with or without the leading
    slash, spaces allowed) or by moref ("vm-123")."""
    wanted = path_or_moref.strip()
    if not wanted:
        raise BadInput("no VM path or moref given")
    if MOREF.match(wanted):
        vm = vim.VirtualMachine(wanted, vc.si._stub)
        _props(vc, vm, ["name"])  # raises VMNotFound when there is no such VM
        return vm
    obj = vc.content.searchIndex.FindByInventoryPath(wanted.strip("/"))
    if not isinstance(obj, vim.VirtualMachine):
        raise VMNotFound(f"no VM at {wanted!r} on vCenter {vc.host}")
    return obj


def inventory_path(vc: VCenter, obj: Any) -> tuple[str, str]:
    """(path, datacenter name) of an object, walking its parents (a few small reads)."""
    names: list[str] = []
    datacenter = ""
    root = vc.content.rootFolder._moId
    current = obj
    while current._moId != root:
        props = _props(vc, current, ["name", "parent"])
        names.append(props["name"])
        if isinstance(current, vim.Datacenter):
            datacenter = props["name"]
        parent = props.get("parent")
        if not parent:
            break
        current = parent.managed(vc)
    return "/" + "/".join(reversed(names)), datacenter


def vm_info(vc: VCenter, vm: vim.VirtualMachine) -> VMInfo:
    """Everything the engine needs about one VM, in one property read plus its path."""
    props = _props(vc, vm, VM_PROPERTIES)
    path, datacenter = inventory_path(vc, vm)
    return vm_from_properties(vm._moId, props, path, datacenter)


def datastore_file_path(vc: VCenter, file_name: str, datacenter: Any = None) -> Path:
    """ "[ds] dir/x.vmdk" as a local path, through the datastore's URL: right for the lab
    (local folders) and for NFS datastores mounted on this node at their URL path."""
    match = re.match(r"^\[([^\]]+)\]\s*(.*)$", file_name)
    if not match:
        raise BadInput(f"{file_name!r} is not a datastore path like '[ds] dir/disk.vmdk'")
    ds_name, rel = match.groups()
    scope = datacenter or vc.content.rootFolder
    view = vc.content.viewManager.CreateContainerView(scope, [vim.Datastore], True)
    try:
        for ds in view.view:
            summary = ds.summary
            if summary.name == ds_name:
                url = summary.url
                break
        else:
            raise VCenterError(f"datastore {ds_name!r} not found on vCenter {vc.host}")
    finally:
        view.Destroy()
    local = re.sub(r"^(ds|file)://", "", url)
    return Path(local) / rel
