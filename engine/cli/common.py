"""What every command group shares: settings, a migrated database session, the hub
client, output."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console

from engine.config import Settings, ensure_dirs, get_settings
from engine.errors import BadInput

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from engine.hub_client import HubClient

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

_upgraded: set[str] = set()


def settings() -> Settings:
    s = get_settings()
    ensure_dirs(s)
    return s


@contextmanager
def db_session() -> Iterator[Session]:
    """A session on the configured database, brought to the newest schema first."""
    # Imported here so that commands which never touch the database start quickly.
    from engine.db.session import session_scope, upgrade

    s = settings()
    if s.db_url not in _upgraded:
        upgrade(s.db_url)
        _upgraded.add(s.db_url)
    with session_scope(s.db_url) as session:
        yield session


def hub_client(s: Settings | None = None) -> HubClient:
    """The typed hub client on ``hub.public_url``, with the token the CLI presents."""
    # Imported here: only the commands that talk to the hub pay for httpx.
    from engine.api.auth import client_token
    from engine.hub_client import HubClient

    s = s or settings()
    return HubClient(s.hub.public_url, client_token(s))


def on_hub(call: Callable[[HubClient], Awaitable[T]], s: Settings | None = None) -> T:
    """``call`` with a hub client, run to its end: how a (synchronous) command asks the
    hub. Its errors are the engine's (a 404 is ``NotFound``, exit code 7)."""

    async def run() -> T:
        async with hub_client(s) as hub:
            return await call(hub)

    return asyncio.run(run())


def read_secret_stdin(what: str) -> str:
    """One line from standard input: how secrets reach a command without touching argv."""
    if sys.stdin.isatty():
        err_console.print(f"{what}: ", end="")
        import getpass

        value = getpass.getpass(prompt="")
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise BadInput(f"no {what} on standard input")
    return value
