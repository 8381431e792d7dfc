"""The validated scalars of the wire: what an id, a name, a host or a path may be.

Input is checked here, at the edge, so nothing behind an API meets an id that overflows
a database integer, a NUL in a path, or a host that does not parse. Each check fails
with one sentence, which the services answer as a 422's ``detail``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from engine.errors import BadInput

# Database ids are at most a signed 32-bit integer (MariaDB's INT); larger is no id.
MAX_ID = 2**31 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class FieldError(BadInput, ValueError):
    """A value refused: inside a model it is a validation error (HTTP 422 naming the
    field); called directly it is bad input (exit code 2)."""


def url_safe(text: str) -> str:
    """``text`` with every character outside ``A-Za-z0-9._-`` made ``_``: safe unquoted in
    a URL, a shell word, an NBD export name and a file name."""
    return _UNSAFE.sub("_", text)


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise FieldError("must not contain NUL or control characters")
    return value


def _no_slash(value: str) -> str:
    if "/" in value:
        raise FieldError("must not contain '/'")
    return value


def split_host(value: str, default_port: int = 443) -> tuple[str, int]:
    """``host``, ``host:port``, ``v4:port`` or ``[v6]:port`` into (host, port); refuses the
    rest with a sentence that says why."""
    text = value.strip()
    if text.startswith("["):
        inner, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise FieldError(f"host {value!r}: an IPv6 address needs its closing ']'")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise FieldError(f"host {value!r}: {inner!r} is not an IPv6 address") from None
        name, port_text = inner, rest[1:] if rest.startswith(":") else None
        if rest and not rest.startswith(":"):
            raise FieldError(f"host {value!r}: expected ':port' after ']'")
    elif text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise FieldError(f"host {value!r}: write an IPv6 address as [addr]:port") from None
        name, port_text = text, None
    else:
        name, _, port_text_raw = text.partition(":")
        port_text = port_text_raw if ":" in text else None
        # Each dot-separated label 1-63 characters: what a resolver takes (RFC 1035).
        if not _HOST_NAME.match(name) or any(not 0 < len(p) < 64 for p in name.split(".")):
            raise FieldError(f"host {value!r}: {name!r} is not a host name or IPv4 address")
    if port_text is None:
        return name, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise FieldError(f"host {value!r}: port must be a number from 1 to 65535")
    return name, int(port_text)


def _host(value: str) -> str:
    split_host(value)
    return value.strip()


def normalise_thumbprint(value: str) -> str:
    """A SHA-256 fingerprint as lower-case hex without colons; refuses anything else."""
    hexed = value.replace(":", "").strip().lower()
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise FieldError(f"thumbprint {value!r} is not a SHA-256 fingerprint (64 hex digits)")
    return hexed


Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Count = Annotated[int, Field(ge=0)]
# A name a person gave (VM, repository, vCenter, node): one line, no control characters.
Name = Annotated[str, StringConstraints(min_length=1, max_length=191), AfterValidator(_no_control)]
# Free text from a person or a server (a user name, an error): one line, bounded.
Text = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_no_control)]
# An inventory path (/DC/vm/folder/NAME), a moref, or a file system path.
PathText = Annotated[
    str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_no_control)
]
Host = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_host)]
Thumbprint = Annotated[
    str, StringConstraints(min_length=1, max_length=128), AfterValidator(normalise_thumbprint)
]
# A job id as the seed's node API takes it (``job_id``) and the hub names it (``backup_id``).
JobId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=191),
    AfterValidator(_no_control),
    AfterValidator(_no_slash),
]
# MiB/s for a copy: a throttle slower than 0.1 MiB/s is a job that never ends.
RateMiB = Annotated[float, Field(ge=0.1, le=1_000_000, allow_inf_nan=False)]
