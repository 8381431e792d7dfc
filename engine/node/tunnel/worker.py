"""One extra tunnel connection, run by the main tunnel when ``tunnel.connections`` > 1.

``python -m engine.node.tunnel.worker N``: holds the local forwards on its own SSH
connection, sharing each port with the main tunnel and the other workers. It stops on
SIGTERM, and when the main tunnel that started it is gone (it must never hold the ports
alone). A lean entry point: the main tunnel starts one per extra connection.
"""

from __future__ import annotations

import sys

from engine.config import get_settings
from engine.node.tunnel.connection import Tunnel, TunnelError
from engine.node.tunnel.serve import serve


def main() -> None:
    try:
        serve(Tunnel(get_settings(), worker=int(sys.argv[1])), watch_parent=True)
    except TunnelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
