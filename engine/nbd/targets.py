"""The ``--nbd-targets`` string: ``<disk key>:nbd://<host>:<port>/<export>[,...]``.

The original system let two disks share a key and an export (its own example does), so
one disk silently overwrote the other. Here every such list is refused with one line
that names the entry at fault.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.errors import BadInput

# key : nbd:// host (name, IPv4 or [IPv6]) : port / export (no comma, no slash-free rule)
_ENTRY = re.compile(
    r"^(?P<key>\d+):nbd://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d+)/(?P<export>[^,\s]+)$"
)


class BadTargets(BadInput):
    pass


@dataclass(frozen=True)
class NbdTarget:
    disk_key: int
    host: str
    port: int
    export: str

    @property
    def uri(self) -> str:
        return f"nbd://{self.host}:{self.port}/{self.export}"

    def entry(self) -> str:
        return f"{self.disk_key}:{self.uri}"


def parse_targets(text: str) -> dict[int, NbdTarget]:
    """Targets by disk key; refuses malformed entries, bad ports and any sharing."""
    targets: dict[int, NbdTarget] = {}
    places: dict[tuple[str, int, str], str] = {}
    entries = [e.strip() for e in text.split(",")]
    if not text.strip():
        raise BadTargets("--nbd-targets is empty")
    for entry in entries:
        m = _ENTRY.match(entry)
        if not m:
            raise BadTargets(
                f"nbd target {entry!r} is malformed: expected <disk key>:nbd://<host>:<port>/<export>"
            )
        key = int(m["key"])
        port = int(m["port"])
        if not 1 <= port <= 65535:
            raise BadTargets(f"nbd target {entry!r}: port {port} is out of range 1-65535")
        if key in targets:
            raise BadTargets(f"nbd target {entry!r}: disk key {key} is given twice")
        target = NbdTarget(key, m["host"], port, m["export"])
        place = (target.host.lower(), port, target.export)
        if place in places:
            raise BadTargets(
                f"nbd target {entry!r}: {target.uri} is already the target of {places[place]!r}"
            )
        places[place] = entry
        targets[key] = target
    return targets


def format_targets(targets: Iterable[NbdTarget]) -> str:
    return ",".join(t.entry() for t in targets)


def match_disks(targets: dict[int, NbdTarget], disk_keys: Iterable[int]) -> None:
    """Every disk of the VM needs exactly one target, and every target a disk."""
    keys = set(disk_keys)
    for key, target in targets.items():
        if key not in keys:
            raise BadTargets(
                f"nbd target {target.entry()!r}: the VM has no disk with key {key} "
                f"(its disks: {', '.join(map(str, sorted(keys))) or 'none'})"
            )
    missing = sorted(keys - set(targets))
    if missing:
        raise BadTargets(f"disk {missing[0]} of the VM has no nbd target")
