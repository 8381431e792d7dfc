"""The tunnel against a real OpenSSH sshd on loopback.

The "hub" side is 127.0.0.1 (where sshd forwards to); the node's local listeners bind
127.0.0.2, so both ends of each forward can live on one machine with the same port
numbers. All ports are free ones picked per test, never the product's defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nbd
import pytest
from typer.testing import CliRunner

from engine.cli.tunnel import tunnel_app
from engine.config import Settings, get_settings
from engine.node.tunnel.connection import Tunnel, TunnelError
from engine.node.tunnel.forwards import authorized_key_options
from engine.node.tunnel.status import read_status
from tests.conftest import free_port, wait_for
from tests.fixtures.sshd import SshServer, make_key

NODE_SIDE = "127.0.0.2"
HUB_SIDE = "127.0.0.1"
SENDENSE = [sys.executable, "-m", "engine.cli.main"]


def free_range(count: int) -> int:
    """The first of ``count`` consecutive ports free on both loopback addresses."""
    while True:
        base = free_port()
        if base + count > 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                for host in (HUB_SIDE, NODE_SIDE):
                    s = socket.socket()
                    socks.append(s)
                    s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()


def bindable(host: str, port: int) -> bool:
    """Whether a server could listen there now (connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


async def until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """``wait_for`` for async tests: polls without blocking the loop the tunnel runs on."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def echo_server(host: str, port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port)


async def echoes(host: str, port: int, payload: bytes = b"") -> bool:
    payload = payload or os.urandom(256 * 1024)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    finally:
        writer.close()
    return got == payload


@pytest.fixture
def tunnel_settings(sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for a tunnel to ``sshd`` with two NBD ports and free hub/node ports."""
    base = free_range(2)
    env = {
        **sshd.tunnel_env(),
        "SENDENSE_NBD__PORT_MIN": str(base),
        "SENDENSE_NBD__PORT_MAX": str(base + 1),
        "SENDENSE_HUB__PORT": str(free_range(1)),
        "SENDENSE_NODE__PORT": str(free_port()),
        "SENDENSE_TUNNEL__REMOTE_NODE_PORT": str(free_port()),
        "SENDENSE_TUNNEL__LOCAL_HOST": NODE_SIDE,
        "SENDENSE_TUNNEL__KEEPALIVE_SECONDS": "0.2",
        "SENDENSE_TUNNEL__RECONNECT_MIN_SECONDS": "0.05",
        "SENDENSE_TUNNEL__RECONNECT_MAX_SECONDS": "0.4",
        "SENDENSE_TUNNEL__CONNECT_TIMEOUT": "5",
        # One process unless a test is about more: workers are covered on their own.
        "SENDENSE_TUNNEL__CONNECTIONS": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = get_settings()
    # The line an operator puts on the hub: the tests run with exactly that restriction.
    sshd.authorize(authorized_key_options(settings))
    return settings


@pytest.fixture
async def tunnel(tunnel_settings: Settings) -> AsyncIterator[Tunnel]:
    """A running tunnel, stopped (and its task awaited) at teardown."""
    t = Tunnel(tunnel_settings)
    task = asyncio.create_task(t.run())
    yield t
    await t.stop()
    with contextlib.suppress(TunnelError):
        await task


def nbd_ports(settings: Settings) -> list[int]:
    return list(range(settings.nbd.port_min, settings.nbd.port_max + 1))


async def test_forwards_carry_data_with_restricted_key(
    tunnel: Tunnel, tunnel_settings: Settings, sshd: SshServer
) -> None:
    s = tunnel_settings
    assert 'command="/bin/false"' in sshd.authorized_keys.read_text()
    hub_ports = [*nbd_ports(s), s.hub.port]
    servers = [await echo_server(HUB_SIDE, p) for p in hub_ports]
    servers.append(await echo_server(s.node.host, s.node.port))
    try:
        await tunnel.wait_up(10)
        for port in hub_ports:
            assert await echoes(NODE_SIDE, port), f"local forward {port}"
        assert await echoes(HUB_SIDE, s.tunnel.remote_node_port), "remote forward"

        await until(lambda: read_status(s).rtt_ms is not None, "a measured round trip")
        status = read_status(s)
        assert status.state == "up"
        assert status.connects == 1
        assert status.pid == os.getpid()
        assert 0 < status.rtt_ms < 5000
        assert status.since.endswith("+00:00")
        assert tunnel.status.state == "up"
    finally:
        for server in servers:
            server.close()

    await tunnel.stop()
    assert read_status(s).state == "stopped"
    assert read_status(s).rtt_ms is None
    for port in hub_ports:
        assert bindable(NODE_SIDE, port), f"local listener {port} still open after stop()"
    # sshd closes the hub-side listener of the remote forward once the session ends.
    await until(lambda: bindable(HUB_SIDE, s.tunnel.remote_node_port), "the remote listener")


async def test_nbd_export_through_tunnel(tunnel: Tunnel, tunnel_settings: Settings) -> None:
    port = tunnel_settings.nbd.port_min
    nbdkit = subprocess.Popen(
        ["nbdkit", "-f", "-i", HUB_SIDE, "-p", str(port), "memory", "8M"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await until(lambda: not bindable(HUB_SIDE, port), "nbdkit to listen")
        await tunnel.wait_up(10)
        data = os.urandom(2 * 1024 * 1024)

        def write_and_read() -> bytes:
            h = nbd.NBD()
            h.connect_tcp(NODE_SIDE, str(port))
            try:
                h.pwrite(data, 1024 * 1024)
                h.flush()
                return bytes(h.pread(len(data), 1024 * 1024))
            finally:
                h.shutdown()

        assert await asyncio.to_thread(write_and_read) == data
    finally:
        nbdkit.terminate()
        nbdkit.wait(10)


async def test_reconnects_after_connection_killed_and_sshd_restart(
    tunnel: Tunnel, tunnel_settings: Settings, sshd: SshServer
) -> None:
    s = tunnel_settings
    hub = await echo_server(HUB_SIDE, s.nbd.port_min)
    try:
        await tunnel.wait_up(10)
        first_since = read_status(s).since
        assert sshd.drop_connections() > 0
        await until(lambda: tunnel.status.connects == 2, "a second connection")
        await tunnel.wait_up(10)
        status = read_status(s)
        assert status.state == "up"
        assert status.last_error, "the drop left no reason in the status"
        assert status.since >= first_since
        assert await echoes(NODE_SIDE, s.nbd.port_min)

        sshd.stop()
        await until(lambda: read_status(s).state != "up", "the status to go down")
        await until(lambda: "refused" in (read_status(s).last_error or ""), "a refused reconnect")
        assert not await _connects(NODE_SIDE, s.nbd.port_min), "a listener outlived its link"
        sshd.start()
        await until(lambda: tunnel.status.connects == 3, "a connection after the restart")
        await tunnel.wait_up(10)
        assert await echoes(NODE_SIDE, s.nbd.port_min)
    finally:
        hub.close()


async def test_busy_remote_port_is_retried_until_free(
    tunnel: Tunnel, tunnel_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale hub session can hold the node-API port: retry until it lets go."""
    await tunnel.wait_up(10)
    s = tunnel_settings
    # A second node with other local ports, as after a reconnect that beat the old session.
    monkeypatch.setenv("SENDENSE_HOME", str(s.home.parent / "second"))
    monkeypatch.setenv("SENDENSE_TUNNEL__LOCAL_HOST", "127.0.0.3")
    get_settings.cache_clear()
    second_settings = get_settings()
    second = Tunnel(second_settings)
    task = asyncio.create_task(second.run())
    try:
        await until(
            lambda: "refused the remote forward" in (second.status.last_error or ""),
            "the remote forward to be refused",
        )
        assert second.status.state == "down"
        await tunnel.stop()
        await second.wait_up(10)
        assert read_status(second_settings).state == "up"
    finally:
        await second.stop()
        await task


async def test_a_second_tunnel_on_the_same_data_folder_is_refused(
    tunnel: Tunnel, tunnel_settings: Settings
) -> None:
    await tunnel.wait_up(10)
    before = read_status(tunnel_settings)
    with pytest.raises(TunnelError, match=rf"another tunnel \(pid {os.getpid()}\) is running"):
        await Tunnel(tunnel_settings).run()
    after = read_status(tunnel_settings)
    assert (after.state, after.since, after.pid) == (
        before.state,
        before.since,
        before.pid,
    ), "the refused tunnel overwrote the running one's status"


async def test_two_connections_share_the_ports(
    tunnel_settings: Settings, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENDENSE_TUNNEL__CONNECTIONS", "2")
    get_settings.cache_clear()
    s = get_settings()
    hub = await echo_server(HUB_SIDE, s.nbd.port_min)
    t = Tunnel(s)
    task = asyncio.create_task(t.run())
    try:
        await t.wait_up(10)
        await until(lambda: read_status(s).connections_up == 2, "the worker's connection")
        assert len(sshd.connection_pids()) >= 2
        worker_pid = json.loads((s.run / "tunnel-worker-1.json").read_text())["pid"]
        assert worker_pid != os.getpid()
        # The kernel spreads connections over both processes; all of them must work.
        assert all(await asyncio.gather(*(echoes(NODE_SIDE, s.nbd.port_min) for _ in range(8))))
    finally:
        hub.close()
        await t.stop()
        await task
    status = read_status(s)
    assert status.state == "stopped"
    assert status.connections_up == 0
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)
    assert bindable(NODE_SIDE, s.nbd.port_min)


async def _connects(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


async def test_unknown_host_key_is_refused(
    tunnel_settings: Settings, sshd: SshServer, tmp_path: Path
) -> None:
    other = make_key(tmp_path / "other_host_key", "not-the-hub")
    sshd.known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {other}\n")
    t = Tunnel(tunnel_settings)
    with pytest.raises(TunnelError, match=r"not trusted by .*known_hosts"):
        await asyncio.wait_for(t.run(), 10)
    status = read_status(tunnel_settings)
    assert status.state == "down"
    assert "not trusted" in status.last_error
    assert t.status.connects == 0
    with pytest.raises(TunnelError, match="not trusted"):
        await t.wait_up(1)
    assert bindable(NODE_SIDE, tunnel_settings.nbd.port_min)


async def test_refused_key_is_an_error(tunnel_settings: Settings, sshd: SshServer) -> None:
    sshd.authorized_keys.write_text("")
    with pytest.raises(TunnelError, match="refused the key"):
        await asyncio.wait_for(Tunnel(tunnel_settings).run(), 10)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SENDENSE_TUNNEL__KEY_FILE", "/nonexistent/id_ed25519", "key file .* does not exist"),
        ("SENDENSE_TUNNEL__KNOWN_HOSTS", "/nonexistent/known_hosts", "known_hosts file .* does"),
    ],
)
async def test_missing_files_are_clear_errors(
    tunnel_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    with pytest.raises(TunnelError, match=message):
        await Tunnel(get_settings()).run()


def test_read_status_without_a_tunnel(settings: Settings) -> None:
    status = read_status(settings)
    assert status.state == "down"
    assert "no tunnel has run" in status.last_error
    assert status.connections_up == 0


def test_read_status_of_a_dead_process(settings: Settings) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    settings.run.mkdir(parents=True)
    status_file = settings.run / "tunnel.json"
    status_file.write_text(json.dumps({"state": "up", "pid": dead.pid, "rtt_ms": 1.0}))
    status = read_status(settings)
    assert status.state == "down"
    assert status.rtt_ms is None
    assert f"process {dead.pid} has exited" in status.last_error


@pytest.fixture
def cli_tunnel(tunnel_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([*SENDENSE, "tunnel", "run"], stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_run_status_and_sigterm(
    cli_tunnel: subprocess.Popen[bytes], tunnel_settings: Settings
) -> None:
    s = tunnel_settings
    wait_for(lambda: read_status(s).state == "up", what="`sendense tunnel run` to come up")
    wait_for(lambda: read_status(s).rtt_ms is not None, what="a round trip")
    # `tunnel status` in-process (the CLI's import time is not what is under test here).
    out = CliRunner().invoke(tunnel_app, ["status", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["pid"] == cli_tunnel.pid
    text = CliRunner().invoke(tunnel_app, ["status"])
    assert "state:       up" in text.stdout
    assert "connections: 1/1 up" in text.stdout
    assert f"-L {NODE_SIDE}:{s.nbd.port_min}-{s.nbd.port_max}" in text.stdout

    cli_tunnel.send_signal(signal.SIGTERM)
    assert cli_tunnel.wait(10) == 0
    assert read_status(s).state == "stopped"
    assert bindable(NODE_SIDE, s.hub.port)
    assert CliRunner().invoke(tunnel_app, ["status"]).exit_code == 1


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_do_not_outlive_a_killed_tunnel(
    tunnel_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENDENSE_TUNNEL__CONNECTIONS", "2")
    get_settings.cache_clear()
    s = get_settings()
    # A bare Tunnel in its own process: the CLI's import time is not under test here.
    run_tunnel = (
        "import asyncio; from engine.config import get_settings; "
        "from engine.node.tunnel.connection import Tunnel; "
        "asyncio.run(Tunnel(get_settings()).run())"
    )
    proc = subprocess.Popen([sys.executable, "-c", run_tunnel], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: read_status(s).connections_up == 2, what="two connections")
        worker = json.loads((s.run / "tunnel-worker-1.json").read_text())["pid"]
        proc.kill()
        proc.wait()
        wait_for(lambda: not running(worker), what=f"worker {worker} to stop after its parent")
        wait_for(lambda: bindable(NODE_SIDE, s.nbd.port_min), what="the ports to be free")
        assert read_status(s).connections_up == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_missing_key_is_one_line(tunnel_settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    env = {**os.environ, "SENDENSE_TUNNEL__KEY_FILE": str(missing)}
    out = subprocess.run(
        [*SENDENSE, "tunnel", "run"], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: tunnel key file {missing} does not exist"


def test_cli_authorized_key_line(sshd: SshServer, settings: Settings) -> None:
    pub = sshd.key_path.with_suffix(".pub")
    out = CliRunner().invoke(tunnel_app, ["authorized-key", str(pub)])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == f"{authorized_key_options(settings)} {pub.read_text().strip()}"
    assert 'permitopen="127.0.0.1:10100"' in out.stdout
    assert 'permitlisten="127.0.0.1:9081"' in out.stdout
    private = subprocess.run(
        [*SENDENSE, "tunnel", "authorized-key", str(sshd.key_path)], capture_output=True, text=True
    )
    assert private.returncode == 2
    assert "is a private key" in private.stderr
    assert "PRIVATE" not in private.stdout + private.stderr
