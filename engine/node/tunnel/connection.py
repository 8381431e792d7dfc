"""The node's SSH tunnel to the hub (asyncssh): the seed's forwards, held up for good.

The node dials the hub's sshd and keeps three kinds of forward open (``forwards``). The
hub's host key must be in ``tunnel.known_hosts`` (never trusted on first use) and only
key authentication is tried, so the hub can hand the node a restricted key.

A dropped connection is retried with capped exponential backoff; a host key or key that
the hub refuses is not (it needs an operator) and ends :meth:`Tunnel.run` with a
:class:`TunnelError`. Every change of state is written to the status file (``status``).

One connection is one process's worth of crypto; ``tunnel.connections`` > 1 adds worker
processes (:mod:`engine.node.tunnel.worker`), each with its own connection, sharing the
local ports through ``SO_REUSEPORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import sys
import time
from typing import IO, Any, cast

import asyncssh
from asyncssh.forward import SSHLocalPortForwarder

from engine.config import Settings
from engine.contract.hub import TunnelStatus
from engine.contract.status import TunnelState
from engine.errors import SendenseError
from engine.node.tunnel.forwards import Forward, describe_forwards, plan_forwards
from engine.node.tunnel.status import now_iso, status_path, write_status

log = logging.getLogger("sendense.tunnel")

# asyncssh's defaults (chacha20, 2 MiB window, 32 KiB packets) moved about half what
# ``ssh -L`` does (DESIGN.md); AES-GCM (AES-NI) with a large window and packets brings the
# CPU per byte level with ``ssh -L``'s defaults (bench/bench_tunnel.py). The other
# algorithms stay as fallbacks for hubs that lack AES-GCM.
ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
)
WINDOW = 8 * 1024 * 1024
MAX_PACKET = 256 * 1024


class TunnelError(SendenseError):
    """The tunnel cannot work without an operator: bad configuration, untrusted host."""


def _close_servers(servers: list[asyncio.Server]) -> None:
    for server in servers:
        server.close()
    servers.clear()


class _Client(asyncssh.SSHClient):
    """Remembers why the connection ended, for the status's ``last_error``."""

    def __init__(self) -> None:
        self.lost: Exception | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc


class Tunnel:
    """Holds the forwards while :meth:`run` runs; usable in-process or via the CLI."""

    def __init__(self, settings: Settings, *, worker: int = 0) -> None:
        self._settings = settings
        self._worker = worker
        # Worker processes carry local forwards only: the hub allows one remote listener.
        self._forwards = [f for f in plan_forwards(settings) if not (worker and f.remote)]
        self._status_file = status_path(settings, worker)
        self._shared_ports = settings.tunnel.connections > 1
        t = settings.tunnel
        self._target = f"{t.user}@{t.hub_ssh_host}:{t.hub_ssh_port}"
        self._status = TunnelStatus(
            state=TunnelState.DOWN,
            since=now_iso(time.time()),
            hub=self._target,
            forwards=describe_forwards(settings),
            pid=os.getpid(),
        )
        self._stopping = asyncio.Event()
        self._up = asyncio.Event()
        self._ended = asyncio.Event()
        self._error: TunnelError | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._servers: list[asyncio.Server] = []
        self._running = False

    @property
    def status(self) -> TunnelStatus:
        """This connection's state now (``read_status`` adds the other connections')."""
        return self._status.model_copy()

    def _set(self, state: TunnelState, error: str | None = None) -> None:
        if state != self._status.state:
            self._status.state = state
            self._status.since = now_iso(time.time())
            log.info("tunnel to %s: %s", self._target, state)
        if error is not None:
            log.warning("tunnel to %s: %s", self._target, error)
            self._status.last_error = error
        if state is not TunnelState.UP:
            self._status.rtt_ms = None
        self._write()

    def _write(self) -> None:
        write_status(self._status_file, self._status, time.time())

    def _options(self) -> asyncssh.SSHClientConnectionOptions:
        """Connection options; missing files are configuration errors, raised at once."""
        t = self._settings.tunnel
        if t.key_file is None:
            raise TunnelError("tunnel.key_file is not set: the node's private key for the hub")
        if t.known_hosts is None:
            raise TunnelError(
                "tunnel.known_hosts is not set: a file holding the hub's host key "
                "(the tunnel never trusts an unknown host)"
            )
        for what, path in (("key file", t.key_file), ("known_hosts file", t.known_hosts)):
            if not path.expanduser().is_file():
                raise TunnelError(f"tunnel {what} {path} does not exist")
        try:
            key = asyncssh.read_private_key(str(t.key_file.expanduser()))
        except (OSError, asyncssh.KeyImportError) as exc:
            raise TunnelError(f"tunnel key file {t.key_file} cannot be used: {exc}") from None
        return asyncssh.SSHClientConnectionOptions(
            username=t.user,
            client_keys=[key],
            known_hosts=str(t.known_hosts.expanduser()),
            config=None,
            agent_path=None,
            password_auth=False,
            kbdint_auth=False,
            gss_auth=False,
            host_based_auth=False,
            encryption_algs=list(ENCRYPTION_ALGS),
            compression_algs=None,
            window=WINDOW,
            max_pktsize=MAX_PACKET,
            keepalive_interval=t.keepalive_seconds,
            keepalive_count_max=t.keepalive_count_max,
            connect_timeout=t.connect_timeout,
        )

    async def run(self) -> None:
        """Connect, forward, reconnect on loss; returns after :meth:`stop`.

        Raises :class:`TunnelError` for what retrying cannot fix (configuration, a host
        key not in known_hosts, a refused key).
        """
        try:  # before anything is written: the status file is the other tunnel's
            lock = None if self._worker else self._lock()
        except TunnelError as exc:
            self._error = exc
            self._ended.set()
            raise
        self._running = True
        workers: list[asyncio.Task[None]] = []
        try:
            options = self._options()
            failures = 0
            while not self._stopping.is_set():
                if self._status.state is not TunnelState.DOWN:  # retries keep "down since"
                    self._set(TunnelState.CONNECTING)
                try:
                    conn, client = await self._connect(options)
                except (OSError, asyncssh.Error, asyncssh.ChannelListenError) as exc:
                    failures += 1
                    self._set(TunnelState.DOWN, self._explain(exc))
                    await self._backoff(failures)
                    continue
                failures = 0
                if self._stopping.is_set():  # stop() came while connecting
                    conn.close()
                    await conn.wait_closed()
                    break
                self._status.connects += 1
                self._set(TunnelState.UP)
                self._up.set()
                if not self._worker and not workers:  # once the hub has let us in
                    workers = [
                        asyncio.create_task(self._supervise(i))
                        for i in range(1, self._settings.tunnel.connections)
                    ]
                await self._hold(conn)
                self._up.clear()
                if not self._stopping.is_set():
                    self._set(TunnelState.DOWN, self._explain(client.lost))
                    await self._backoff(1)
        except TunnelError as exc:
            self._error = exc
            self._status.last_error = str(exc)  # not logged: the caller reports it once
            self._set(TunnelState.DOWN)
            raise
        finally:
            self._stopping.set()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._up.clear()
            if self._error is None:
                self._set(TunnelState.STOPPED)
            if lock is not None:
                lock.close()
            self._running = False
            self._ended.set()

    def _lock(self) -> IO[str]:
        """Hold ``tunnel.lock``: a second tunnel would share the ports silently otherwise."""
        path = self._status_file.with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = path.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise TunnelError(
                f"another tunnel (pid {holder}) is running with this data folder ({path})"
            ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        return lock

    async def _supervise(self, worker: int) -> None:
        """Keep worker process ``worker`` running (restarted with backoff) until stop."""
        failures = 0
        while not self._stopping.is_set():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "engine.node.tunnel.worker", str(worker)
            )
            try:
                code = await proc.wait()
            except asyncio.CancelledError:
                proc.terminate()
                await proc.wait()
                raise
            failures += 1
            log.warning("tunnel worker %d exited with code %s", worker, code)
            await self._backoff(failures)

    async def _connect(
        self, options: asyncssh.SSHClientConnectionOptions
    ) -> tuple[asyncssh.SSHClientConnection, _Client]:
        t = self._settings.tunnel
        conn, client = await asyncssh.create_connection(
            _Client, t.hub_ssh_host, t.hub_ssh_port, options=options
        )
        servers: list[asyncio.Server] = []
        try:
            for fwd in self._forwards:
                if fwd.remote:
                    await conn.forward_remote_port(
                        fwd.listen_host, fwd.listen_port, fwd.dest_host, fwd.dest_port
                    )
                else:
                    servers.append(await self._listen(conn, fwd))
        except BaseException:
            _close_servers(servers)
            conn.close()
            await conn.wait_closed()
            raise
        self._conn = conn
        self._servers = servers
        return conn, cast(_Client, client)

    async def _listen(self, conn: asyncssh.SSHClientConnection, fwd: Forward) -> asyncio.Server:
        """A local listener forwarding each connection through ``conn``.

        What ``conn.forward_local_port`` does (with asyncssh's own forwarder protocol),
        but able to share the port with the worker processes (``SO_REUSEPORT``: the
        kernel spreads new connections over them) when ``tunnel.connections`` > 1.
        """

        async def open_channel(session_factory: Any, orig_host: str, orig_port: int) -> Any:
            return await conn.create_connection(
                session_factory, fwd.dest_host, fwd.dest_port, orig_host, orig_port
            )

        return await asyncio.get_running_loop().create_server(
            lambda: SSHLocalPortForwarder(conn, open_channel),
            fwd.listen_host,
            fwd.listen_port,
            reuse_port=self._shared_ports,
        )

    async def _hold(self, conn: asyncssh.SSHClientConnection) -> None:
        """Until the connection ends: measure the round-trip time every keepalive period."""
        probe = asyncio.create_task(self._probe(conn))
        try:
            await conn.wait_closed()
        finally:
            _close_servers(self._servers)
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
            self._conn = None

    async def _probe(self, conn: asyncssh.SSHClientConnection) -> None:
        # A global request the server must answer (OpenSSH answers "failure" to this
        # name, which is all a round trip needs): works with a key that may run nothing.
        # asyncssh's own keepalive uses the same private call; it has no public one.
        while True:
            started = time.monotonic()
            await conn._make_global_request(b"keepalive@openssh.com")
            self._status.rtt_ms = round((time.monotonic() - started) * 1000, 3)
            self._write()
            await asyncio.sleep(self._settings.tunnel.keepalive_seconds)

    async def _backoff(self, failures: int) -> None:
        t = self._settings.tunnel
        delay = min(t.reconnect_max_seconds, t.reconnect_min_seconds * 2 ** (failures - 1))
        delay *= random.uniform(0.75, 1.0)  # a fleet of nodes should not retry in step
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    def _explain(self, exc: BaseException | None) -> str:
        """One line for ``last_error``; raises :class:`TunnelError` for the fatal kinds."""
        t = self._settings.tunnel
        where = f"{t.hub_ssh_host}:{t.hub_ssh_port}"
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            raise TunnelError(
                f"the host key of {where} is not trusted by {t.known_hosts}: {exc.reason} "
                "(pin the hub's key there; the tunnel never trusts an unknown host)"
            )
        if isinstance(exc, asyncssh.PermissionDenied):
            raise TunnelError(f"{self._target} refused the key {t.key_file}: {exc.reason}")
        if exc is None:
            return f"{where} closed the connection"
        if isinstance(exc, asyncssh.DisconnectError):
            return f"{where}: {exc.reason}"
        if isinstance(exc, asyncssh.ChannelListenError):
            return f"{where} refused the remote forward of port {t.remote_node_port}: {exc}"
        if isinstance(exc, TimeoutError):
            return f"{where} did not answer within {t.connect_timeout}s"
        if isinstance(exc, ConnectionError) and exc.errno:
            return f"{where}: {os.strerror(exc.errno)}"
        return f"{where}: {exc}"

    async def wait_up(self, timeout: float) -> None:
        """Return once the forwards are up; raise :class:`TunnelError` otherwise."""
        up = asyncio.ensure_future(self._up.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({up, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            ended.cancel()
        if self._up.is_set():
            return
        if self._error is not None:
            raise self._error
        reason = self._status.last_error or "no answer yet"
        raise TunnelError(f"tunnel to {self._target} not up after {timeout}s: {reason}")

    async def stop(self) -> None:
        """Close the connection and every listener; returns when :meth:`run` has ended."""
        self._stopping.set()
        if self._conn is not None:
            self._conn.close()
        if self._running:
            await self._ended.wait()
