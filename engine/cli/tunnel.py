"""``sendense tunnel``: hold the node's SSH tunnel to the hub, and report on it."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from engine.cli.common import console, settings
from engine.contract.status import TunnelState
from engine.errors import BadInput

# asyncssh (through engine.node.tunnel.connection) is imported inside the commands: every other
# `sendense` command would otherwise pay for loading it at start-up.

tunnel_app = typer.Typer(help="The node's SSH tunnel to the hub.", no_args_is_help=True)


@tunnel_app.command("run")
def tunnel_run(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each forwarded connection."),
) -> None:
    """Hold the tunnel in the foreground (what sendense-tunnel.service runs).

    Reconnects with backoff when the connection drops; exits 0 on SIGTERM/SIGINT and 1
    with one line when it cannot work without an operator (missing key or known_hosts,
    untrusted host key, refused key).
    """
    from engine.node.tunnel.connection import Tunnel
    from engine.node.tunnel.serve import serve

    serve(Tunnel(settings()), verbose=verbose)


@tunnel_app.command("status")
def tunnel_status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show whether the tunnel is up, since when, its round-trip time and last error.

    Exit code 0 when up, 1 otherwise, so scripts and health checks can test it.
    """
    from engine.node.tunnel.status import read_status

    status = read_status(settings())
    if as_json:
        console.print_json(status.model_dump_json())
    else:
        rtt = status.rtt_ms
        rows = [
            ("state", status.state),
            ("since", status.since or "-"),
            ("hub", status.hub or "-"),
            ("connections", f"{status.connections_up}/{status.connections} up"),
            ("rtt", f"{rtt:.1f} ms" if rtt is not None else "-"),
            ("last error", status.last_error or "-"),
            *(("forward", line) for line in status.forwards),
        ]
        for label, value in rows:
            console.print(f"{label + ':':13}{value}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if status.state is TunnelState.UP else 1)


@tunnel_app.command("authorized-key")
def tunnel_authorized_key(
    public_key: Path = typer.Argument(..., help="The node's public key file (id_ed25519.pub)."),
) -> None:
    """Print the hub's authorized_keys line for a node key (run on the hub).

    The key may open the seed's forwards and nothing else: the NBD ports and the hub API
    on the hub's loopback, and the remote node-API port; no shell, no pty, no agent.
    """
    import asyncssh

    from engine.node.tunnel.forwards import authorized_key_options

    try:
        key = public_key.read_text().strip()
    except OSError as exc:
        raise BadInput(f"cannot read {public_key}: {exc.strerror}") from None
    with contextlib.suppress(asyncssh.KeyImportError, ValueError):
        asyncssh.import_private_key(key)
        raise BadInput(f"{public_key} is a private key: give the .pub file, keep this one secret")
    try:
        pub = asyncssh.import_public_key(key)
    except (asyncssh.KeyImportError, ValueError):
        raise BadInput(f"{public_key} does not hold an OpenSSH public key") from None
    line = pub.export_public_key("openssh").decode().strip()
    console.print(f"{authorized_key_options(settings())} {line}", highlight=False, soft_wrap=True)
