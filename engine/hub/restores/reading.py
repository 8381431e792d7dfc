"""Private read-only NBD exports of a restore point's disk, for the hub's own reading
(single files, verification): qemu-nbd on a Unix socket in a private folder, never on a
port, through the point's qcow2 chain (each file names its parent as backing file).

qemu-nbd dies with the hub: it is started with the parent-death signal set, from one
long-lived thread (the signal follows the thread that started the process, and the
server's request threads come and go).
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import nbd

from engine.errors import SendenseError
from engine.hub.exports.process import describe_exit

READY_TIMEOUT = 10.0
CLIENTS = 16  # connections one export serves at once (readers open several)


class _Spawner:
    """The one thread that starts private qemu-nbd processes (see the module's note)."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[list[str], Future[subprocess.Popen[bytes]]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nbd-spawner", daemon=True)
                self._thread.start()
        done: Future[subprocess.Popen[bytes]] = Future()
        self._work.put((argv, done))
        return done.result()

    def _run(self) -> None:
        while True:
            argv, done = self._work.get()
            try:
                done.set_result(
                    subprocess.Popen(
                        ["setpriv", "--pdeathsig", "TERM", "--", *argv],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        process_group=0,
                    )
                )
            except BaseException as exc:
                done.set_exception(exc)


_SPAWNER = _Spawner()


class PrivateExport:
    """One read-only qemu-nbd of one qcow2 (and its chain), served on a Unix socket.

    ``uri`` is what libnbd's ``connect_uri`` takes; ``close`` stops qemu-nbd and removes
    its folder, and is safe to call twice.
    """

    def __init__(self, qemu_nbd: str, qcow2: Path, runtime: Path) -> None:
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.qcow2 = qcow2
        self.folder = Path(tempfile.mkdtemp(prefix="reader-", dir=runtime))
        self.socket = self.folder / "nbd.sock"
        self.uri = f"nbd+unix:///?socket={self.socket}"
        argv = [
            qemu_nbd,
            "--read-only",
            "--persistent",
            f"--shared={CLIENTS}",
            "--format=qcow2",
            "--aio=threads",
            f"--socket={self.socket}",
            str(qcow2),
        ]
        try:
            self.process = _SPAWNER.spawn(argv)
        except OSError as exc:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise SendenseError(f"cannot start {qemu_nbd} for {qcow2}: {exc.strerror}") from None
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read() if self.process.stderr else b""
                text = "; ".join(err.decode(errors="replace").split("\n")).strip("; ")
                raise SendenseError(
                    f"qemu-nbd could not serve {self.qcow2} "
                    f"({describe_exit(self.process.returncode)}): {text or 'no message'}"
                )
            if self.socket.exists():
                h = nbd.NBD()
                try:
                    h.connect_uri(self.uri)
                    h.shutdown()
                    return
                except nbd.Error:
                    pass
            if time.monotonic() > deadline:
                raise SendenseError(
                    f"qemu-nbd did not serve {self.qcow2} within {READY_TIMEOUT:g}s"
                )
            time.sleep(0.01)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PrivateExport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
