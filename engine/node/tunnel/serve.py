"""Run a tunnel as a service: log to stderr, stop cleanly on SIGTERM/SIGINT, and (for a
worker) stop with the process that started it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from engine.node.tunnel.connection import Tunnel

PARENT_CHECK_SECONDS = 1.0


def serve(tunnel: Tunnel, *, verbose: bool = False, watch_parent: bool = False) -> None:
    """Run ``tunnel`` as a service: log to stderr, stop cleanly on SIGTERM/SIGINT.

    ``watch_parent`` (workers): stop too when the process that started this one is gone,
    so a worker never holds the ports alone.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # asyncssh logs every forwarded connection at INFO: only worth it when asked for.
    logging.getLogger("asyncssh").setLevel(logging.INFO if verbose else logging.WARNING)
    asyncio.run(_serve(tunnel, watch_parent))


async def _serve(tunnel: Tunnel, watch_parent: bool) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(tunnel.stop()))
    parent = os.getppid()

    async def watch() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(PARENT_CHECK_SECONDS)
        await tunnel.stop()

    watcher = asyncio.create_task(watch()) if watch_parent else None
    try:
        await tunnel.run()
    finally:
        if watcher is not None:
            watcher.cancel()
