"""The same NBD copy through ``sendense tunnel run`` and through OpenSSH's ``ssh -L``.

Both tunnels dial the same private sshd (tests/fixtures/sshd.py) in the same run and
forward one port from 127.0.0.2 (the "node") to 127.0.0.1 (the "hub"). Two directions:

- write: the product's direction (a node writes a VM disk into the hub's export):
  a local ``nbdkit pattern`` source, ``nbdkit null`` behind the tunnel as the sink;
- read: ``nbdkit pattern`` behind the tunnel, ``null:`` as nbdcopy's target.

Rounds alternate between the two tunnels; the best of each is compared, so a noisy
neighbour on a shared machine hurts both alike. Goal: ratio >= 1.0.

    .venv/bin/python -m bench.bench_tunnel [--size 1G] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.config import Settings
from engine.node.tunnel.status import read_status
from tests.fixtures.sshd import SshServer

NODE, HUB = "127.0.0.2", "127.0.0.1"
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HUB, 0))
        return int(s.getsockname()[1])


def wait(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


@contextlib.contextmanager
def process(
    argv: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server for the length of a block; its errors go to our stderr."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SENDENSE_TUNNEL = [sys.executable, "-m", "engine.cli.main", "tunnel", "run"]


def tunnel_env(sshd: SshServer, port: int, home: Path) -> dict[str, str]:
    """``sendense tunnel run`` holding just ``port`` (plus free hub/node ports)."""
    return {
        **os.environ,
        **sshd.tunnel_env(),
        "SENDENSE_HOME": str(home),
        "SENDENSE_CONFIG": "",
        "SENDENSE_NBD__PORT_MIN": str(port),
        "SENDENSE_NBD__PORT_MAX": str(port),
        "SENDENSE_HUB__PORT": str(free_port()),
        "SENDENSE_NODE__PORT": str(free_port()),
        "SENDENSE_TUNNEL__REMOTE_NODE_PORT": str(free_port()),
        "SENDENSE_TUNNEL__LOCAL_HOST": NODE,
    }


def openssh_tunnel(sshd: SshServer, port: int, cipher: str | None) -> list[str]:
    argv = ["ssh", "-N", "-T", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"]
    argv += ["-o", f"UserKnownHostsFile={sshd.known_hosts}", "-F", "/dev/null"]
    if cipher:
        argv += ["-c", cipher]
    argv += ["-i", str(sshd.key_path), "-p", str(sshd.port)]
    argv += ["-L", f"{NODE}:{port}:{HUB}:{port}", f"{sshd.user}@{sshd.host}"]
    return argv


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its child processes (the tunnel's workers)."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    total = 0
    for each in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def copy(source: str, target: str, tunnel_pid: int) -> tuple[float, float]:
    """Wall seconds of one nbdcopy, and the CPU seconds the tunnel spent on it."""
    cpu = cpu_seconds(tunnel_pid)
    started = time.perf_counter()
    subprocess.run(["nbdcopy", source, target], check=True)
    return time.perf_counter() - started, cpu_seconds(tunnel_pid) - cpu


def run(size: str, rounds: int, connections: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tunnel-") as tmp:
        base = Path(tmp)
        sshd = SshServer(base / "sshd")
        sshd.start()
        port = free_port()
        sock = base / "pattern.sock"
        try:
            with (
                process(["nbdkit", "-f", "-U", str(sock), "pattern", size]),
                process(["nbdkit", "-f", "-i", HUB, "-p", str(port), "null", size]) as hub,
            ):
                wait(lambda: sock.exists() and listening(HUB, port), "nbdkit")
                local_pattern = f"nbd+unix:///?socket={sock}"
                directions = {"write": (local_pattern, f"nbd://{NODE}:{port}")}
                results = measure(sshd, port, base, rounds, directions, connections)
                hub.terminate()
                hub.wait(10)
                with process(["nbdkit", "-f", "-i", HUB, "-p", str(port), "pattern", size]):
                    wait(lambda: listening(HUB, port), "nbdkit pattern")
                    directions = {"read": (f"nbd://{NODE}:{port}", "null:")}
                    results.update(measure(sshd, port, base, rounds, directions, connections))
        finally:
            sshd.stop()
    report(results, size)


Tunnel = Callable[[], contextlib.AbstractContextManager[subprocess.Popen[bytes]]]


def measure(
    sshd: SshServer,
    port: int,
    base: Path,
    rounds: int,
    directions: dict[str, tuple[str, str]],
    connections: list[int],
) -> dict[tuple[str, str], tuple[float, float]]:
    """Best wall seconds and best tunnel CPU seconds per (direction, tunnel)."""
    env = tunnel_env(sshd, port, base / "home")
    settings = Settings(home=base / "home")

    def sendense(connections: int) -> Tunnel:
        @contextlib.contextmanager
        def tunnel() -> Iterator[subprocess.Popen[bytes]]:
            env["SENDENSE_TUNNEL__CONNECTIONS"] = str(connections)
            shared = settings.model_copy(
                update={"tunnel": settings.tunnel.model_copy(update={"connections": connections})}
            )
            with process(SENDENSE_TUNNEL, env) as proc:
                wait(lambda: read_status(shared).connections_up == connections, "tunnel")
                yield proc

        return tunnel

    def openssh(cipher: str | None) -> Tunnel:
        @contextlib.contextmanager
        def tunnel() -> Iterator[subprocess.Popen[bytes]]:
            with process(openssh_tunnel(sshd, port, cipher)) as proc:
                wait(lambda: listening(NODE, port), "ssh -L")
                yield proc

        return tunnel

    tunnels: dict[str, Tunnel] = {
        **{ours(n): sendense(n) for n in connections},
        "ssh -L": openssh(None),
        "ssh -L -c aes128-gcm": openssh("aes128-gcm@openssh.com"),
    }
    best: dict[tuple[str, str], tuple[float, float]] = {}
    for _ in range(rounds):
        for name, tunnel in tunnels.items():
            with tunnel() as proc:
                for direction, (source, target) in directions.items():
                    seconds, cpu = copy(source, target, proc.pid)
                    key = (direction, name)
                    old_seconds, old_cpu = best.get(key, (seconds, cpu))
                    best[key] = (min(old_seconds, seconds), min(old_cpu, cpu))
            wait(lambda: not listening(NODE, port), f"{name} to let go of the port")
    return best


def report(results: dict[tuple[str, str], tuple[float, float]], size: str) -> None:
    gib = parse_size(size) / (1 << 30)
    print(f"NBD copy of {size} through one forwarded port, best of the rounds:")
    print(f"  {'':5}  {'tunnel':24} {'MiB/s':>8} {'tunnel CPU s/GiB':>17}")
    for direction in ("write", "read"):
        rows = {name: v for (d, name), v in results.items() if d == direction}
        rates = {name: gib * 1024 / seconds for name, (seconds, _) in rows.items()}
        cpus = {name: cpu / gib for name, (_, cpu) in rows.items()}
        for name in rows:
            print(f"  {direction:5}  {name:24} {rates[name]:8.1f} {cpus[name]:17.2f}")
        for name in (n for n in rows if n.startswith("sendense")):
            for ref in ("ssh -L", "ssh -L -c aes128-gcm"):
                print(
                    f"  {direction:5}  {name} / {ref}: throughput ratio "
                    f"{rates[name] / rates[ref]:.2f}, CPU efficiency ratio "
                    f"{cpus[ref] / cpus[name]:.2f}"
                )


def ours(connections: int) -> str:
    return "sendense tunnel" + (f", {connections} conns" if connections > 1 else "")


def parse_size(size: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(size[:-1]) * units[size[-1].upper()] if size[-1].isalpha() else int(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="export size (default 1G)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per tunnel (default 3)")
    parser.add_argument(
        "--connections",
        default="1,2",
        help="tunnel.connections values to measure, comma-separated (default 1,2)",
    )
    args = parser.parse_args()
    run(args.size, args.rounds, [int(n) for n in args.connections.split(",")])


if __name__ == "__main__":
    main()
