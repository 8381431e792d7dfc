"""``sendense vcenter``: stored vCenter logins (passwords sealed, never printed)."""

from __future__ import annotations

import typer
from rich.table import Table

from engine.cli.common import console, db_session, err_console, read_secret_stdin, settings
from engine.contract.fields import normalise_thumbprint, split_host
from engine.credentials import VMwareCredentialService
from engine.errors import BadInput

vcenter_app = typer.Typer(help="vCenter credentials.", no_args_is_help=True)


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
    trust: bool = typer.Option(
        False, "--trust", help="Pin the certificate the vCenter presents now (check it!)."
    ),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Log in once before storing (default: verify)."
    ),
    name: str | None = typer.Option(None, "--name", help="Defaults to USER@HOST."),
) -> None:
    """Store a vCenter login; prints its id. The login is tried first unless --no-verify."""
    from engine.vcenter import connect, fetch_thumbprint

    if not password_stdin:
        raise BadInput("give the password on standard input with --password-stdin")
    if thumbprint and trust:
        raise BadInput("give either --thumbprint or --trust, not both")
    tp = normalise_thumbprint(thumbprint) if thumbprint else None
    if trust:
        tp = fetch_thumbprint(*split_host(host))
        err_console.print(
            f"trusting the certificate {host} presents: {tp}", highlight=False, soft_wrap=True
        )
    password = read_secret_stdin("vCenter password")
    if verify:
        if tp is None:
            raise BadInput("give --thumbprint or --trust so the login can be checked safely")
        connect(host, username, password, thumbprint=tp).close()
    with db_session() as session:
        row = VMwareCredentialService(session, settings().key_path).add(
            host=host, username=username, password=password, thumbprint=tp, name=name
        )
        console.print(row.id)


@vcenter_app.command("test")
def vcenter_test(
    credential_id: int = typer.Argument(..., help="The id `vcenter list` shows."),
) -> None:
    """Log in with a stored vCenter login (pinned certificate) and log out again."""
    from engine.vcenter.stored import connect_stored

    with db_session() as session:
        vc = connect_stored(session, settings().key_path, credential_id)
        with vc:
            about = vc.content.about
            console.print(f"ok: {vc.host} answers as {about.fullName}", highlight=False)


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
