"""``sendense vcenter``: stored vCenter logins (passwords sealed, never printed)."""

from __future__ import annotations

import typer
from rich.table import Table

from engine.cli.common import console, db_session, read_secret_stdin, settings
from engine.credentials import VMwareCredentialService
from engine.errors import BadInput

vcenter_app = typer.Typer(help="vCenter credentials.", no_args_is_help=True)


def normalise_thumbprint(value: str) -> str:
    """SHA-256 fingerprint as lower-case hex without colons; refuse anything else."""
    hexed = value.replace(":", "").strip().lower()
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise BadInput(f"thumbprint {value!r} is not a SHA-256 fingerprint (64 hex digits)")
    return hexed


@vcenter_app.command("add")
def vcenter_add(
    host: str = typer.Option(..., "--host", help="vCenter host, or host:port."),
    username: str = typer.Option(..., "--username"),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input (required)."
    ),
    thumbprint: str | None = typer.Option(
        None, "--thumbprint", help="The certificate's SHA-256 fingerprint, hex."
    ),
    name: str | None = typer.Option(None, "--name", help="Defaults to USER@HOST."),
) -> None:
    """Store a vCenter login; prints its id."""
    if not password_stdin:
        raise BadInput("give the password on standard input with --password-stdin")
    tp = normalise_thumbprint(thumbprint) if thumbprint else None
    password = read_secret_stdin("vCenter password")
    with db_session() as session:
        row = VMwareCredentialService(session, settings().key_path).add(
            host=host, username=username, password=password, thumbprint=tp, name=name
        )
        console.print(row.id)


@vcenter_app.command("list")
def vcenter_list() -> None:
    """Show stored vCenter logins: id, host, user, thumbprint (never the password)."""
    table = Table("id", "name", "host", "user", "thumbprint")
    with db_session() as session:
        for row in VMwareCredentialService(session, settings().key_path).list():
            table.add_row(
                str(row.id),
                row.credential_name,
                row.vcenter_host,
                row.username,
                row.thumbprint or "-",
            )
    console.print(table)
