"""The seed's forwards, from the settings, and the hub's ``authorized_keys`` line that
allows exactly those."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import Settings

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Forward:
    """One forward: ``remote`` ones listen on the hub, the others on the node."""

    remote: bool
    listen_host: str
    listen_port: int
    dest_host: str
    dest_port: int


def plan_forwards(settings: Settings) -> list[Forward]:
    """The seed's forwards, from the settings (tests shrink the NBD range to free ports)."""
    tunnel = settings.tunnel
    local_ports = [*range(settings.nbd.port_min, settings.nbd.port_max + 1), settings.hub.port]
    local = [Forward(False, tunnel.local_host, p, LOOPBACK, p) for p in dict.fromkeys(local_ports)]
    remote = Forward(
        True, LOOPBACK, tunnel.remote_node_port, settings.node.host, settings.node.port
    )
    return [*local, remote]


def describe_forwards(settings: Settings) -> list[str]:
    """``ssh``-style one-liners (``-L``/``-R``) for status output; the NBD range as one."""
    t, nbd = settings.tunnel, settings.nbd
    span = f"{nbd.port_min}-{nbd.port_max}" if nbd.port_min != nbd.port_max else str(nbd.port_min)
    return [
        f"-L {t.local_host}:{span} -> hub {LOOPBACK}:{span}",
        f"-L {t.local_host}:{settings.hub.port} -> hub {LOOPBACK}:{settings.hub.port}",
        f"-R hub {LOOPBACK}:{t.remote_node_port} -> {settings.node.host}:{settings.node.port}",
    ]


def authorized_key_options(settings: Settings) -> str:
    """The hub's ``authorized_keys`` options for a node key: these forwards, nothing else.

    ``restrict`` takes away pty, agent, X11 and forwarding; ``port-forwarding`` gives
    forwarding back, limited by ``permitopen``/``permitlisten`` to the seed's ports; the
    forced command means a login can run nothing (the tunnel never opens a session).
    """
    forwards = plan_forwards(settings)
    opens = [f'permitopen="{f.dest_host}:{f.dest_port}"' for f in forwards if not f.remote]
    listens = [f'permitlisten="{f.listen_host}:{f.listen_port}"' for f in forwards if f.remote]
    return ",".join(["restrict", "port-forwarding", *opens, *listens, 'command="/bin/false"'])
