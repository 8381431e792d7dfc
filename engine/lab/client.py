"""The lab's own calls (not vSphere API): write into a disk, reset change tracking,
make quiescing fail, make CreateVM_Task fail. Authenticated with the lab login; the
certificate is the pinned one."""

from __future__ import annotations

import ssl
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


def write(info: LabInfo, vm: str, disk_key: int, offset: int, length: int) -> str:
    """Write new deterministic data into a disk's flat file; returns the new change id."""
    result = _call(info, "write", vm=vm, disk=disk_key, offset=offset, length=length)
    return str(result["change_id"])


def reset_tracking(info: LabInfo, vm: str, disk_key: int) -> str:
    """Start a new change-tracking epoch for the disk (new uuid); returns its change id."""
    return str(_call(info, "reset", vm=vm, disk=disk_key)["change_id"])


def quiesce_fault(info: LabInfo, vm: str, enabled: bool = True) -> None:
    """Make quiesced snapshots of the VM fail (as when VMware Tools cannot quiesce)."""
    _call(info, "quiesce-fault", vm=vm, enabled=int(enabled))


def refuse_create_vm(info: LabInfo, reason: str | None) -> None:
    """Make every CreateVM_Task fail with ``reason`` as vCenter's message; None ends it."""
    _call(info, "refuse-create-vm", reason=reason or "")
