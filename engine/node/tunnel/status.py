"""The tunnel's state as a file, so that any process can read it: ``<run_dir>/tunnel.json``
for the main connection, ``tunnel-worker-N.json`` for each worker's.

Each tunnel process writes its own file (atomically) on every change; ``read_status``
reads them into the contract's ``TunnelStatus`` for ``sendense tunnel status``, the
node's health and the hub's node list. A file left by a process that is gone says
``down``, whatever it was last told.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from engine.config import Settings
from engine.contract.hub import TunnelStatus
from engine.contract.status import TunnelState
from engine.node.tunnel.forwards import describe_forwards
from engine.processes import pid_alive

STATUS_FILE = "tunnel.json"
# Counted over every connection's file by read_status; one process's file holds neither.
_COUNTS = frozenset({"connections", "connections_up"})


def now_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def status_path(settings: Settings, worker: int = 0) -> Path:
    return settings.run / (f"tunnel-worker-{worker}.json" if worker else STATUS_FILE)


def write_status(path: Path, status: TunnelStatus, updated_at: float) -> None:
    """Replace ``path`` in one step: a reader never sees half a status."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = status.model_copy(update={"updated_at": now_iso(updated_at)}).model_dump_json(
        indent=2, exclude=set(_COUNTS)
    )
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def read_status(settings: Settings) -> TunnelStatus:
    """The last status the tunnel wrote, with how many of its connections are up; ``down``
    when none ran here or its process is gone."""
    path = status_path(settings)
    connections = settings.tunnel.connections
    main = _read(path)
    if main is None:
        t = settings.tunnel
        return TunnelStatus(
            state=TunnelState.DOWN,
            last_error=f"no tunnel has run here (no {path})",
            hub=f"{t.hub_ssh_host}:{t.hub_ssh_port}",
            forwards=describe_forwards(settings),
            connections=connections,
        )
    workers = [_read(status_path(settings, i)) for i in range(1, connections)]
    up = sum(1 for s in (main, *workers) if s is not None and s.state is TunnelState.UP)
    return main.model_copy(update={"connections": connections, "connections_up": up})


def _read(path: Path) -> TunnelStatus | None:
    try:
        status = TunnelStatus.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except ValidationError as exc:
        return TunnelStatus(
            state=TunnelState.DOWN,
            last_error=f"{path} is not a tunnel status ({exc.error_count()} errors)",
        )
    if status.state is TunnelState.STOPPED or pid_alive(status.pid or 0):
        return status
    last = f"; its last error: {status.last_error}" if status.last_error else ""
    return status.model_copy(
        update={
            "state": TunnelState.DOWN,
            "rtt_ms": None,
            "last_error": f"the tunnel process {status.pid} has exited{last}",
        }
    )
