"""What can go wrong with an export, and which names an export may have."""

from __future__ import annotations

from engine.errors import BadInput, SendenseError, Unavailable

MAX_NAME_BYTES = 200  # state, pid and log files are named after the export (255-byte limit)


class ExportError(SendenseError):
    """An export that could not be made, started or kept; carries qemu's own message."""


class ExportNameError(ExportError, BadInput):
    """An export name that cannot be used (exit code 2: bad input)."""


class PortRangeExhausted(ExportError, Unavailable):
    """Every port of ``nbd.port_min``-``nbd.port_max`` is in use."""


def validate_name(name: str) -> None:
    if not name:
        raise ExportNameError("the export name is empty")
    if "/" in name or not name.isprintable():
        raise ExportNameError(
            f"export name {name!r} is not allowed: use printable characters and no '/'"
        )
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ExportNameError(f"export name {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes")
