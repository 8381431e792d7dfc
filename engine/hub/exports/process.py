"""Facts about qemu-nbd processes and ports, read from the kernel rather than assumed.

Kept apart from the manager so its locking logic reads without the /proc details.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import nbd


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on (or holds) ``host:port``.

    ``SO_REUSEADDR`` as qemu-nbd sets it, so a port in TIME_WAIT counts as free (qemu-nbd
    can bind it) while a listener, on this address or on the wildcard, does not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def is_qemu_nbd(pid: int | None, pid_file: Path) -> bool:
    """True when ``pid`` is a live (not zombie) process started with this pid file.

    Matching the ``--pid-file`` argument (unique to one export of one run folder) guards
    against a recycled pid after a reboot or a long outage: a pid alone could now belong
    to anything. The program name is not checked, so a wrapper around qemu-nbd works.
    """
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return False
    return os.fsencode(f"--pid-file={pid_file}") in argv


def read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def signal_group(pid: int, sig: int) -> None:
    """Signal qemu-nbd's process group (it leads its own session, so pgid == pid)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def wait_gone(pid: int, pid_file: Path, timeout: float) -> bool:
    """Wait until the process is gone (or a zombie); True when it went in time."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while is_qemu_nbd(pid, pid_file):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def describe_exit(returncode: int | None) -> str:
    """How a process ended, in words: the exit status or the signal's name."""
    if returncode is None:
        return "is no longer running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} (signal {-returncode})"
    return f"exited with status {returncode}"


def log_text(path: Path, offset: int, limit: int = 2000) -> str:
    """qemu-nbd's own words since ``offset``, on one line (the last ``limit`` characters)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            raw = fh.read()
    except OSError:
        return ""
    lines = [line.strip() for line in raw.decode(errors="replace").splitlines()]
    text = "; ".join(line for line in lines if line and not line.startswith("--- "))
    return text[-limit:]


HANDSHAKE_TIMEOUT = "no NBD handshake within"


def handshake(
    host: str, port: int, name: str, timeout: float, alive: Callable[[], bool] | None = None
) -> str | None:
    """Connect and negotiate export ``name``; None on success, else libnbd's reason.

    Asynchronous connect polled in short slices, so a server that accepts but never
    answers (every ``--shared`` slot taken, or another program on the port) costs at
    most ``timeout``, and a server that dies meanwhile (``alive`` turns false) is
    noticed at once. The connection is shut down politely so qemu-nbd logs no reset.
    """
    h = nbd.NBD()
    try:
        h.set_export_name(name)
        h.aio_connect_tcp(host, str(port))
        deadline = time.monotonic() + timeout
        while not h.aio_is_ready():
            left = deadline - time.monotonic()
            if left <= 0:
                return f"{HANDSHAKE_TIMEOUT} {timeout:g}s"
            if alive is not None and not alive():
                return "the server exited during the handshake"
            h.poll(max(1, min(50, int(left * 1000))))
        h.shutdown()
        return None
    except nbd.Error as exc:
        return exc.string or str(exc)


def o_direct_works(path: Path) -> bool:
    """True when ``path``'s file system accepts O_DIRECT (tmpfs, for one, may not)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True
