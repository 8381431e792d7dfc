"""Which VMs a policy's include and exclude paths name, from vCenter inventories.

A path is an inventory path (``/DC/vm/Prod/web 01``, ``/DC/host/Cluster``). What it takes:

- a VM: that VM;
- a Datacenter or a Folder: every VM below it, and the VMs on the hosts and in the
  resource pools below it (a ``host`` folder takes the VMs of its clusters);
- a cluster (ClusterComputeResource, or a standalone host's ComputeResource): the VMs
  on its hosts;
- a HostSystem: the VMs on that host;
- a ResourcePool: the VMs in it or in its child pools.

One rule covers them all: a VM is taken when its own path is below the path, or its
host or resource pool is at or below it. Excludes take out by the same rule. A path is
looked for in every registered vCenter; the VMs of each vCenter it names are taken.

``resolve`` is pure (inventories in, VMs out); ``read_inventories`` reads them now,
and ``checked`` turns an unusable outcome into the one-line error its caller raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine.config import Settings
from engine.contract.inventory import Inventory, VMInfo
from engine.credentials import VMwareCredentialService
from engine.db.session import session_scope
from engine.errors import BadInput, SendenseError, VCenterError

log = logging.getLogger("sendense.hub.policies")


def normalise(path: str) -> str:
    """``DC/vm/x/`` and ``/DC/vm/x`` are one path: a leading slash, none at the end."""
    return "/" + path.strip().strip("/")


@dataclass(frozen=True)
class Source:
    """One registered vCenter's inventory, and the credential it was read with."""

    credential_id: int
    inventory: Inventory

    @property
    def vcenter_host(self) -> str:
        return self.inventory.vcenter


@dataclass(frozen=True)
class Taken:
    """A VM a path named: where it is, and which path took it."""

    source: Source
    vm: VMInfo
    matched_by: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.source.vcenter_host, self.vm.moref)


@dataclass
class Resolution:
    vms: list[Taken] = field(default_factory=list)
    excluded: list[Taken] = field(default_factory=list)
    # Paths found in no inventory.
    unknown_includes: list[str] = field(default_factory=list)
    unknown_excludes: list[str] = field(default_factory=list)


def _below(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def _named(source: Source, path: str) -> list[VMInfo] | None:
    """The VMs ``path`` takes in this inventory; None when the path is not in it."""
    inv = source.inventory
    vms = [vm for vm in inv.vms if vm.path == path]
    containers = [e for e in inv.entities if e.path == path]
    if not vms and not containers:
        return None
    for top in containers:
        under = [e for e in inv.entities if _below(e.path, top.path)]
        hosts = {e.moref for e in under if e.kind == "HostSystem"}
        pools = {e.moref for e in under if e.kind == "ResourcePool"}
        vms.extend(
            vm
            for vm in inv.vms
            if vm.path.startswith(top.path + "/") or vm.host in hosts or vm.resource_pool in pools
        )
    return vms


def _take(
    sources: Sequence[Source], paths: Iterable[str]
) -> tuple[dict[tuple[str, str], Taken], list[str]]:
    """Every VM the paths take (the first path that took it), and the paths found nowhere."""
    taken: dict[tuple[str, str], Taken] = {}
    unknown: list[str] = []
    for given in paths:
        path = normalise(given)
        found = False
        for source in sources:
            vms = _named(source, path)
            if vms is None:
                continue
            found = True
            for vm in vms:
                t = Taken(source, vm, given)
                taken.setdefault(t.key, t)
        if not found:
            unknown.append(given)
    return taken, unknown


def resolve(
    sources: Sequence[Source], include: Sequence[str], exclude: Sequence[str]
) -> Resolution:
    """The VMs the includes take, less those the excludes take, ordered by vCenter and path."""
    included, unknown_in = _take(sources, include)
    excluding, unknown_ex = _take(sources, exclude)
    order = sorted(included, key=lambda k: (k[0], included[k].vm.path))
    return Resolution(
        vms=[included[k] for k in order if k not in excluding],
        excluded=[excluding[k] for k in order if k in excluding],
        unknown_includes=unknown_in,
        unknown_excludes=unknown_ex,
    )


@dataclass
class Inventories:
    """Every registered vCenter's inventory read now, and the ones that could not be."""

    sources: list[Source] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def read_inventories(settings: Settings) -> Inventories:
    """Log in to every active registered vCenter and read its inventory (fresh: a VM
    added to a folder since is taken)."""
    from engine.vcenter import connect, get_inventory

    with session_scope(settings.db_url) as s:
        service = VMwareCredentialService(s, settings.key_path)
        rows = [row for row in service.list() if row.is_active]
        logins = [service.get_credentials(row.id) for row in rows]
    read = Inventories()
    for creds in logins:
        try:
            if not creds.thumbprint:
                raise VCenterError(f"vCenter {creds.vcenter_host} has no pinned thumbprint")
            with connect(
                creds.vcenter_host, creds.username, creds.password, thumbprint=creds.thumbprint
            ) as vc:
                read.sources.append(Source(creds.id, get_inventory(vc)))
        except SendenseError as exc:
            log.warning("policy resolution: %s", exc)
            read.failures.append(f"vCenter {creds.vcenter_host} could not be read: {exc}")
    return read


def _paths(paths: Sequence[str]) -> str:
    return ", ".join(repr(p) for p in paths)


def checked(
    read: Inventories, res: Resolution, *, excludes_too: bool, empty_ok: bool = False
) -> Resolution:
    """``res`` when it names only paths that exist and selects a VM (or ``empty_ok``);
    otherwise the error: a vCenter that could not be read (502) when that may be why,
    else bad input."""
    if not read.sources and not read.failures:
        raise BadInput("no vCenter is registered: add one first (sendense vcenter add)")
    missing = [("include", p) for p in res.unknown_includes]
    if excludes_too:
        missing += [("exclude", p) for p in res.unknown_excludes]
    if missing:
        kind = missing[0][0] if len({k for k, _ in missing}) == 1 else "include/exclude"
        paths = [p for _, p in missing]
        noun = (
            f"{kind} path {_paths(paths)} is"
            if len(paths) == 1
            else f"{kind} paths {_paths(paths)} are"
        )
        if read.failures:
            raise VCenterError(f"{noun} in no inventory read; {'; '.join(read.failures)}")
        raise BadInput(f"{noun} in no registered vCenter's inventory")
    if not res.vms and not empty_ok:
        but = " once the excludes are taken out" if res.excluded else ""
        raise BadInput(f"the includes select no VM{but}: an empty selection backs up nothing")
    return res
