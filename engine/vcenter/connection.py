"""Connecting to vCenter with its certificate pinned by SHA-256 thumbprint.

vCenters mostly run self-signed certificates, so CA validation says little; pinning the
certificate seen at registration (``sendense vcenter add --trust``) is what stops a man in
the middle. The check runs on the connection that carries the login, before the password
is sent.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
from types import TracebackType
from typing import Any

from pyVim import connect as pyvim_connect
from pyVmomi import vim
from pyVmomi.Security import ThumbprintMismatchException

from engine.contract.fields import split_host
from engine.errors import LoginError, ThumbprintMismatch, VCenterError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0


def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fetch_thumbprint(host: str, port: int = 443) -> str:
    """The SHA-256 of the certificate the server presents: lower-case hex, no colons."""
    try:
        with (
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as sock,
            _unverified_context().wrap_socket(sock, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise VCenterError(f"cannot reach vCenter {host}:{port}: {exc}") from None
    if not der:
        raise VCenterError(f"vCenter {host}:{port} presented no certificate")
    return hashlib.sha256(der).hexdigest()


class VCenter:
    """A logged-in vCenter session; closing it logs out."""

    def __init__(self, si: Any, host: str) -> None:
        self.si = si
        self.host = host
        self.content = si.RetrieveContent()

    def close(self) -> None:
        try:
            pyvim_connect.Disconnect(self.si)
        except Exception as exc:  # logging out of a dead session must not mask the real error
            log.debug("logout from %s failed: %s", self.host, exc)

    def __enter__(self) -> VCenter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    host: str,
    username: str,
    password: str,
    *,
    thumbprint: str | None,
    insecure: bool = False,
) -> VCenter:
    """Log in to ``host`` ("host" or "host:port"), refusing any certificate but the pinned one.

    ``insecure=True`` skips the pin, for labs only: it logs a warning every time.
    """
    name, port = split_host(host)
    if thumbprint:
        expected = thumbprint.replace(":", "").lower()
        actual = fetch_thumbprint(name, port)
        if actual != expected:
            raise _mismatch(host, expected, actual)
    elif insecure:
        log.warning("connecting to vCenter %s WITHOUT certificate verification (lab mode)", host)
    else:
        raise VCenterError(
            f"no certificate thumbprint pinned for vCenter {host}: "
            "register it with --thumbprint or --trust"
        )
    try:
        si = pyvim_connect.SmartConnect(
            host=name,
            port=port,
            user=username,
            pwd=password,
            thumbprint=thumbprint.replace(":", "").lower() if thumbprint else None,
            sslContext=_unverified_context() if insecure and not thumbprint else None,
        )
    except vim.fault.InvalidLogin:
        raise LoginError(f"vCenter {host} refused the login for {username}") from None
    except ThumbprintMismatchException as exc:
        raise _mismatch(host, exc.expected, exc.actual) from None
    except (OSError, ssl.SSLError) as exc:
        raise VCenterError(f"cannot reach vCenter {host}: {exc}") from None
    return VCenter(si, host)


def _mismatch(host: str, expected: str, actual: str) -> ThumbprintMismatch:
    return ThumbprintMismatch(
        f"vCenter {host} presented certificate {actual}, but {expected} is pinned; "
        "if the certificate was replaced on purpose, update it with `sendense vcenter add --trust`"
    )
