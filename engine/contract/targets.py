"""The seed's NBD targets string, ``<disk key>:nbd://<host>:<port>/<export>[,...]``, as a model.

The hub formats it (``NbdTargets.__str__``), the node re-points it at its tunnel
(``with_host``), and the client parses it (``NbdTargets.parse``): one model at both ends,
so the string is never built or taken apart by hand. The original system let two disks
share a key and an export (its own example does), so one disk silently overwrote the
other; such a list is refused with one line that names the entry at fault.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from engine.errors import BadInput

# key : nbd:// host (name, IPv4 or [IPv6]) : port / export (no comma, no space)
_ENTRY = re.compile(
    r"^(?P<key>\d+):nbd://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d+)/(?P<export>[^,\s]+)$"
)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


class BadTargets(BadInput):
    """A targets string that cannot be used; the message names the entry at fault.

    Not a ``ValueError``: raised inside validation it reaches the caller as itself (exit
    code 2, HTTP 422) rather than wrapped in pydantic's report."""


class NbdTarget(BaseModel):
    """Where one disk is written: a VMware device key and the NBD export that takes it."""

    model_config = ConfigDict(frozen=True)

    disk_key: int = Field(ge=0)
    host: str
    port: int = Field(ge=1, le=65535)
    export: str = Field(min_length=1)

    @property
    def uri(self) -> str:
        return f"nbd://{self.host}:{self.port}/{self.export}"

    def entry(self) -> str:
        return f"{self.disk_key}:{self.uri}"


class NbdTargets(BaseModel):
    """Every disk's target, in order; on the wire the seed's comma-separated string."""

    model_config = ConfigDict(frozen=True)

    targets: tuple[NbdTarget, ...]

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"targets": _parse_entries(value)}
        return value

    @model_validator(mode="after")
    def _distinct(self) -> NbdTargets:
        if not self.targets:
            raise BadTargets("the nbd targets are empty")
        keys: set[int] = set()
        places: dict[tuple[str, int, str], str] = {}
        for target in self.targets:
            if target.disk_key in keys:
                raise BadTargets(
                    f"nbd target {target.entry()!r}: disk key {target.disk_key} is given twice"
                )
            keys.add(target.disk_key)
            place = (target.host.lower(), target.port, target.export)
            if place in places:
                raise BadTargets(
                    f"nbd target {target.entry()!r}: {target.uri} is already the target of "
                    f"{places[place]!r}"
                )
            places[place] = target.entry()
        return self

    @model_serializer
    def _to_string(self) -> str:
        return str(self)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": r"^\d+:nbd://[^,\s]+(,\d+:nbd://[^,\s]+)*$",
            "description": "<disk key>:nbd://<host>:<port>/<export>[,...], one per disk",
            "examples": ["2000:nbd://127.0.0.1:10100/pgtest1-disk2000-1796160170"],
        }

    @classmethod
    def parse(cls, text: str) -> NbdTargets:
        """The targets of a string, or ``BadTargets`` naming the entry at fault."""
        return cls(targets=tuple(_parse_entries(text)))

    def __str__(self) -> str:
        return ",".join(t.entry() for t in self.targets)

    def __iter__(self) -> Iterator[NbdTarget]:  # type: ignore[override]
        return iter(self.targets)

    def by_key(self) -> dict[int, NbdTarget]:
        return {t.disk_key: t for t in self.targets}

    def with_host(self, host: str) -> NbdTargets:
        """The same exports reached at ``host``: how a tunnelled node sees the hub's
        loopback exports (its local forwards listen on ``tunnel.local_host``)."""
        host = uri_host(host)
        return NbdTargets(targets=tuple(t.model_copy(update={"host": host}) for t in self.targets))

    def keys(self) -> list[int]:
        return [t.disk_key for t in self.targets]

    def match_disks(self, disk_keys: Iterable[int], what: str = "nbd target") -> None:
        """Every disk of the VM needs exactly one entry, and every entry a disk; ``what``
        names the entries in the error (a restore's are its ``nbd source``s)."""
        keys = set(disk_keys)
        for target in self.targets:
            if target.disk_key not in keys:
                raise BadTargets(
                    f"{what} {target.entry()!r}: the VM has no disk with key "
                    f"{target.disk_key} (its disks: {', '.join(map(str, sorted(keys))) or 'none'})"
                )
        missing = sorted(keys - set(self.keys()))
        if missing:
            raise BadTargets(f"disk {missing[0]} of the VM has no {what}")


def uri_host(host: str) -> str:
    """``host`` as a URI names it: a bare IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _parse_entries(text: str) -> list[NbdTarget]:
    if not text.strip():
        raise BadTargets("the nbd targets are empty")
    out = []
    for entry in (e.strip() for e in text.split(",")):
        m = _ENTRY.match(entry)
        if not m:
            raise BadTargets(
                f"nbd target {entry!r} is malformed: expected <disk key>:nbd://<host>:<port>/<export>"
            )
        port = int(m["port"])
        if not 1 <= port <= 65535:
            raise BadTargets(f"nbd target {entry!r}: port {port} is out of range 1-65535")
        out.append(NbdTarget(disk_key=int(m["key"]), host=m["host"], port=port, export=m["export"]))
    return out
