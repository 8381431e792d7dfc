"""Real NBD servers for tests: qemu-nbd on a qcow2, nbdkit with any plugin and filters.

Each is a context manager that waits for an NBD handshake before yielding the URI and
stops its server on the way out, so a failing test leaves nothing running.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbd

from tests.conftest import free_port, wait_for


def _answers(uri: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"{proc.args[0]} exited with {proc.returncode}")
    h = nbd.NBD()
    try:
        h.connect_uri(uri)
        h.shutdown()
        return True
    except nbd.Error:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def qemu_nbd(qcow2: Path, size: int | None = None, shared: int = 8) -> Iterator[str]:
    """qemu-nbd exporting ``qcow2`` (created fresh when ``size`` is given) on 127.0.0.1."""
    if size is not None:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), str(size)], check=True
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            "qemu-nbd", "-f", "qcow2", "--persistent", f"--shared={shared}", "-x", "disk",
            "-b", "127.0.0.1", "-p", str(port), "--cache=none", "--aio=native",
            "--discard=unmap", str(qcow2),
        ],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"nbd://127.0.0.1:{port}/disk"
    try:
        wait_for(lambda: _answers(uri, proc), what="qemu-nbd to answer")
        yield uri
    finally:
        _stop(proc)


@contextmanager
def nbdkit(*args: str) -> Iterator[str]:
    """nbdkit on a private unix socket with the given plugin, filters and parameters."""
    with tempfile.TemporaryDirectory(prefix="nbdkit-test-") as tmp:
        sock = Path(tmp) / "s"
        proc = subprocess.Popen(
            ["nbdkit", "--exit-with-parent", "-f", "-U", str(sock), *args],
            stdin=subprocess.DEVNULL,
        )
        uri = f"nbd+unix:///?socket={sock}"
        try:
            wait_for(lambda: sock.exists() and _answers(uri, proc), what="nbdkit to answer")
            yield uri
        finally:
            _stop(proc)
