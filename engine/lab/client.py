"""The lab's own calls (not vSphere API): write into a disk, reset change tracking,
grow a disk, add one, make quiescing fail, make CreateVM_Task fail. Authenticated with
the lab login; the certificate is the pinned one."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engine.lab.launcher import LabError, LabInfo


def _call(info: LabInfo, what: str, **params: Any) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=str(Path(info.password_file).parent / "cert.pem"))
    try:
        response = httpx.post(
            f"{info.api}/{what}",
            params=params,
            auth=(info.user, info.password),
            verify=ctx,
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise LabError(f"the lab at {info.host} did not answer: {exc}") from None
    if response.status_code != 200:
        raise LabError(f"lab {what} refused: {response.text.strip()}")
    result: dict[str, Any] = response.json()
    return result


def write(
    info: LabInfo, vm: str, disk_key: int, offset: int, length: int, *, zero: bool = False
) -> str:
    """A guest write: new deterministic data into the disk's flat file, or with ``zero``
    zeroes over what was there (a hole punched: the range reads as zero); either way one
    recorded change. Returns the new change id."""
    params: dict[str, Any] = {"vm": vm, "disk": disk_key, "offset": offset, "length": length}
    if zero:
        params["zero"] = 1
    return str(_call(info, "write", **params)["change_id"])


def resize_disk(info: LabInfo, vm: str, disk_key: int, mib: int) -> int:
    """Grow the disk to ``mib`` MiB as ReconfigVM_Task would (refused with snapshots or
    for a shrink); change tracking goes on. Returns the new capacity in bytes."""
    return int(_call(info, "resize", vm=vm, disk=disk_key, mib=mib)["capacity_bytes"])


@dataclass(frozen=True)
class AddedDisk:
    key: int  # device key, the next free one (2002 on pgtest1)
    capacity_bytes: int
    file_name: str  # "[DatabanxDS] pgtest1/pgtest1_2.vmdk"
    change_id: str | None  # None while the VM's change tracking is not active


def add_disk(info: LabInfo, vm: str, mib: int) -> AddedDisk:
    """Add a new disk of ``mib`` MiB with deterministic content to the VM, as
    ReconfigVM_Task would; tracked at once when the VM's CBT is active."""
    r = _call(info, "add-disk", vm=vm, mib=mib)
    change_id = r.get("change_id")
    return AddedDisk(
        int(r["disk"]), int(r["capacity_bytes"]), str(r["file"]), change_id and str(change_id)
    )


def reset_tracking(info: LabInfo, vm: str, disk_key: int) -> str:
    """Start a new change-tracking epoch for the disk (new uuid); returns its change id."""
    return str(_call(info, "reset", vm=vm, disk=disk_key)["change_id"])


def quiesce_fault(info: LabInfo, vm: str, enabled: bool = True) -> None:
    """Make quiesced snapshots of the VM fail (as when VMware Tools cannot quiesce)."""
    _call(info, "quiesce-fault", vm=vm, enabled=int(enabled))


def refuse_create_vm(info: LabInfo, reason: str | None) -> None:
    """Make every CreateVM_Task fail with ``reason`` as vCenter's message; None ends it."""
    _call(info, "refuse-create-vm", reason=reason or "")
