"""``sendense tunnel``: hold the node's SSH tunnel to the hub, and report on it."""

from __future__ import annotations

import asyncio
import json
import logging
import signal

import typer

from engine.cli.common import console, settings
from engine.tunnel import Tunnel, read_status

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
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # asyncssh logs every forwarded connection at INFO: only worth it when asked for.
    logging.getLogger("asyncssh").setLevel(logging.INFO if verbose else logging.WARNING)
    asyncio.run(_run(Tunnel(settings())))


async def _run(tunnel: Tunnel) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(tunnel.stop()))
    await tunnel.run()


@tunnel_app.command("status")
def tunnel_status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show whether the tunnel is up, since when, its round-trip time and last error.

    Exit code 0 when up, 1 otherwise, so scripts and health checks can test it.
    """
    status = read_status(settings())
    if as_json:
        console.print_json(json.dumps(status))
    else:
        rtt = status.get("rtt_ms")
        console.print(f"state:      {status['state']}", highlight=False, soft_wrap=True)
        console.print(f"since:      {status.get('since') or '-'}", highlight=False, soft_wrap=True)
        console.print(f"hub:        {status.get('hub', '-')}", highlight=False, soft_wrap=True)
        console.print(
            f"rtt:        {f'{rtt:.1f} ms' if rtt is not None else '-'}",
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            f"last error: {status.get('last_error') or '-'}", highlight=False, soft_wrap=True
        )
        for line in status.get("forwards", []):
            console.print(f"forward:    {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if status["state"] == "up" else 1)
