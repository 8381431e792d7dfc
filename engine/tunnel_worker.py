"""One extra tunnel connection, run by the main tunnel when ``tunnel.connections`` > 1.

``python -m engine.tunnel_worker N``: holds the local forwards on its own SSH connection,
sharing each port with the main tunnel and the other workers. It stops on SIGTERM, and
when the main tunnel that started it is gone (it must never hold the ports alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from engine.config import get_settings
from engine.tunnel import Tunnel, TunnelError

PARENT_CHECK_SECONDS = 1.0


async def _run(worker: int) -> None:
    tunnel = Tunnel(get_settings(), worker=worker)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(tunnel.stop()))
    parent = os.getppid()

    async def watch_parent() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(PARENT_CHECK_SECONDS)
        await tunnel.stop()

    watcher = asyncio.create_task(watch_parent())
    try:
        await tunnel.run()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        asyncio.run(_run(int(sys.argv[1])))
    except TunnelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
