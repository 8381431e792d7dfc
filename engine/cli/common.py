"""What every command group shares: settings, a migrated database session, output."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console

from engine.config import Settings, ensure_dirs, get_settings
from engine.errors import BadInput

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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
