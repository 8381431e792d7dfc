"""The bearer token shared by hub, node and CLI.

One random token per data folder, in a 0600 file made on first start, so a hub and a
node started on the same folder trust each other with no set-up. A node on another
machine is given the hub's token in its settings (``node.hub_token``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from engine.config import Settings
from engine.errors import SendenseError


class TokenError(SendenseError):
    """No usable API token; the message says where it was looked for."""


def load_or_create_token(path: Path) -> str:
    """The token in ``path``, created (0600 from its first byte) when missing.

    The file is written under a temporary name and hard-linked into place, so a hub and
    a node starting at the same moment agree on one token and never read a half-written
    file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its token
        finally:
            tmp.unlink()
    return read_token(path)


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise TokenError(
            f"no API token at {path}: start the hub once (sendense hub) to create it"
        ) from None
    if not token:
        raise TokenError(f"the API token file {path} is empty")
    return token


def node_token(settings: Settings) -> str:
    """What a node presents to its hub and accepts from it: the configured hub token,
    else the data folder's token file."""
    configured = settings.node.hub_token.get_secret_value()
    return configured or load_or_create_token(settings.token_path)


def client_token(settings: Settings) -> str:
    """What the CLI presents to the hub: the same choice as a node's."""
    configured = settings.node.hub_token.get_secret_value()
    return configured or read_token(settings.token_path)


def require_bearer(token: str) -> Callable[..., None]:
    """A FastAPI dependency that admits only requests carrying ``token``."""
    # Imported here so the CLI, which only reads tokens, starts without FastAPI.
    from fastapi import Depends, HTTPException, status
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    scheme = HTTPBearer(auto_error=False)

    def check(creds: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing bearer token (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(creds.credentials.encode(), token.encode()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
