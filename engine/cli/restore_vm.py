"""``sendense restore vm``: a whole VM back into vCenter (not built yet)."""

from __future__ import annotations

from engine.errors import BadInput


def restore_vm_command() -> None:
    """Recreate a point's VM in vCenter (not built yet)."""
    raise BadInput("restore vm is not built yet")
