"""``sendense hub`` and ``sendense node``: serve one service in the foreground.

``sendense run`` starts these same commands detached; systemd units run them as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from engine.cli.common import settings
from engine.config import Settings

if TYPE_CHECKING:  # each service loads FastAPI and its own world: only when it is run
    from fastapi import FastAPI


def _hub_app(s: Settings) -> FastAPI:
    from engine.hub.app import create_app

    return create_app(s)


def _node_app(s: Settings) -> FastAPI:
    from engine.node.app import create_app

    return create_app(s)


def _serve_command(
    service: str, make_app: Callable[[Settings], FastAPI], doc: str
) -> Callable[..., None]:
    """The command that serves ``service`` until stopped, on the listen address and port
    of its settings section unless given; its log lines go to stderr beside uvicorn's."""

    def command(
        host: str | None = typer.Option(
            None, "--host", help=f"Listen address (settings: {service}.host)."
        ),
        port: int | None = typer.Option(
            None, "--port", help=f"Listen port (settings: {service}.port)."
        ),
    ) -> None:
        import logging

        import uvicorn

        s = settings()
        where = s.hub if service == "hub" else s.node
        where.host = host or where.host
        where.port = port or where.port
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        # Open event streams (consoles) must not hold a stopping service for ever.
        uvicorn.run(
            make_app(s),
            host=where.host,
            port=where.port,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=5,
        )

    command.__doc__ = doc
    return command


hub_command = _serve_command(
    "hub", _hub_app, "Run the hub (SHA) in the foreground: API, exports, jobs."
)
node_command = _serve_command(
    "node", _node_app, "Run a node (SNA) in the foreground: runs sendense-backup-client per job."
)
