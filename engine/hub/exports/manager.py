"""The qemu-nbd export manager: one long-lived, loopback-only NBD export per disk.

The hub owns one :class:`ExportManager`. An export belongs to the manager, never to the
request that asked for it: qemu-nbd runs in its own session (so it survives its caller,
and a restarted hub adopts it), with ``--persistent`` (a probe's disconnect does not end
it) and ``--shared`` large enough for every connection a copier opens. "Started" means an
NBD handshake to the export name succeeded; when qemu-nbd dies instead, the error quotes
qemu-nbd's own log (a locked image, a missing file, a taken port), never a timeout.

Thread-safe: a mutex plus an ``flock`` guard the state files (and so the ports); a
per-name lock orders ``start``/``stop`` of the same export. Nothing slow (spawning,
waiting for a handshake) happens under the shared locks, so concurrent starts overlap.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from engine.config import NbdSettings, Settings
from engine.hub.exports.errors import ExportError, PortRangeExhausted, validate_name
from engine.hub.exports.images import check_image, create_image
from engine.hub.exports.process import (
    HANDSHAKE_TIMEOUT,
    describe_exit,
    handshake,
    is_qemu_nbd,
    log_text,
    o_direct_works,
    port_is_free,
    read_pid_file,
    signal_group,
    wait_gone,
)
from engine.hub.exports.state import Export, ExportRecord, ExportStatus, StateStore, to_export
from engine.processes import pid_alive

PORT_TAKEN = "Address already in use"


class ExportManager:
    def __init__(self, nbd: NbdSettings, run_dir: Path, log_dir: Path) -> None:
        self.nbd = nbd
        self.store = StateStore(run_dir / "exports")
        self.log_folder = log_dir / "qemu-nbd"
        self.log_folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._mutex = threading.Lock()
        self._names_guard = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        # Processes this manager spawned: polled for their exit status, and reaped.
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def from_settings(cls, s: Settings) -> ExportManager:
        return cls(s.nbd, s.run, s.logs)

    # -- locks ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _state_lock(self) -> Iterator[None]:
        with self._mutex, self.store.locked():
            yield

    def _name_lock(self, name: str) -> threading.Lock:
        with self._names_guard:
            return self._name_locks.setdefault(name, threading.Lock())

    # -- images --------------------------------------------------------------------------

    def create_image(self, path: Path, size_bytes: int, backing: Path | None = None) -> None:
        """A new qcow2 (on ``backing`` when given); an existing file is never overwritten."""
        create_image(self.nbd.qemu_img, path, size_bytes, backing)

    # -- start ---------------------------------------------------------------------------

    def start(self, name: str, qcow2_path: Path, *, read_only: bool = False) -> Export:
        """Export ``qcow2_path`` as ``name``; returns once an NBD handshake succeeded.

        ``read_only`` serves a restore point (through its backing chain) so that no
        client can write into it: qemu-nbd refuses every write and opens the files so."""
        validate_name(name)
        path = Path(qcow2_path).absolute()
        check_image(name, path)
        with self._name_lock(name):
            self._clear_previous(name)
            avoid: set[int] = set()
            while True:
                record = self._reserve(name, path, avoid)
                try:
                    return self._launch(record, path, read_only)
                except ExportError as exc:
                    if PORT_TAKEN not in str(exc):
                        raise
                    # Someone bound the port between our probe and qemu-nbd's bind.
                    avoid.add(record.port)

    def _clear_previous(self, name: str) -> None:
        """Refuse a live export of the same name; sweep away a dead one's leftovers."""
        with self._state_lock():
            old = self.store.read(name)
        if old is None:
            return
        if (
            old.status == ExportStatus.STARTING
            and old.owner != os.getpid()
            and pid_alive(old.owner)
        ):
            raise ExportError(f"export {name} is being started by process {old.owner}")
        if old.pid is not None and is_qemu_nbd(old.pid, Path(old.pid_file)):
            raise ExportError(f"export {name} is already running on port {old.port}")
        self._terminate(old)
        with self._state_lock():
            self.store.remove(name)

    def _reserve(self, name: str, path: Path, avoid: set[int]) -> ExportRecord:
        """Pick a port and write it into the state before qemu-nbd binds it.

        The record holds the port while qemu-nbd starts, so a concurrent start (in this
        process or another sharing the run folder) cannot be handed the same port.
        """
        log_path = self.log_folder / f"{name}.log"
        with self._state_lock():
            port = self._free_port(avoid)
            record = ExportRecord(
                name=name,
                port=port,
                host=self.nbd.bind,
                qcow2_path=str(path),
                log_path=str(log_path),
                pid_file=str(self.store.pid_file(name)),
                status=ExportStatus.STARTING,
                owner=os.getpid(),
            )
            self.store.write(record)
        return record

    def _free_port(self, avoid: set[int]) -> int:
        lo, hi = self.nbd.port_min, self.nbd.port_max
        held = {r.port for r in self.store.all()} | avoid
        for port in range(lo, hi + 1):
            if port not in held and port_is_free(self.nbd.bind, port):
                return port
        raise PortRangeExhausted(f"no free NBD port in {lo}-{hi}")

    def _argv(self, record: ExportRecord, path: Path, read_only: bool) -> list[str]:
        # O_DIRECT keeps a backup's writes out of the page cache, and native AIO needs it;
        # where the file system refuses O_DIRECT (tmpfs) qemu-nbd would exit at once.
        cache = (
            ["--cache=none", "--aio=native"]
            if o_direct_works(path)
            else ["--cache=writeback", "--aio=threads"]
        )
        # No --detect-zeroes: the copier already sends zero runs as zero commands, and
        # scanning every write again would cost CPU for nothing. --discard=unmap lets
        # those zero/trim commands leave holes in the qcow2.
        return [
            self.nbd.qemu_nbd,
            "--format=qcow2",
            "--persistent",
            f"--shared={self.nbd.shared}",
            f"--export-name={record.name}",
            f"--bind={record.host}",
            f"--port={record.port}",
            *cache,
            *(["--read-only"] if read_only else ["--discard=unmap"]),
            f"--pid-file={record.pid_file}",
            str(path),
        ]

    def _launch(self, record: ExportRecord, path: Path, read_only: bool) -> Export:
        argv = self._argv(record, path, read_only)
        log_path = Path(record.log_path)
        try:
            with open(log_path, "ab") as log:
                offset = log.tell()
                stamp = datetime.now(UTC).isoformat(timespec="seconds")
                log.write(f"--- {stamp} {' '.join(argv)}\n".encode())
                log.flush()
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # own process group: survives its caller
                )
        except OSError as exc:
            with self._state_lock():
                self.store.remove(record.name)
            raise ExportError(f"cannot run {self.nbd.qemu_nbd}: {exc.strerror}") from None
        record = record.with_(pid=proc.pid, log_offset=offset)
        self._children[record.name] = proc
        try:
            with self._state_lock():
                self.store.write(record)
            problem = self._await_handshake(record, proc)
            if problem is not None:
                raise ExportError(f"export {record.name} on port {record.port}: {problem}")
            record = record.with_(status=ExportStatus.RUNNING)
            with self._state_lock():
                self.store.write(record)
        except BaseException:  # a failed start, or an interrupt: leave nothing behind
            self._terminate(record)
            with self._state_lock():
                self.store.remove(record.name)
            raise
        return to_export(record)

    def _await_handshake(self, record: ExportRecord, proc: subprocess.Popen[bytes]) -> str | None:
        """None once the export answers; else why not, in qemu-nbd's words when it died."""
        timeout = self.nbd.start_timeout
        deadline = time.monotonic() + timeout
        delay = 0.005
        last = ""
        while True:
            returncode = proc.poll()
            if returncode is not None:
                said = log_text(Path(record.log_path), record.log_offset)
                return f"qemu-nbd {describe_exit(returncode)}" + (f": {said}" if said else "")
            left = deadline - time.monotonic()
            if left <= 0:
                said = log_text(Path(record.log_path), record.log_offset)
                return f"qemu-nbd did not answer an NBD handshake within {timeout:g}s ({last})" + (
                    f"; its log: {said}" if said else ""
                )
            last = (
                handshake(
                    record.host, record.port, record.name, left, alive=lambda: proc.poll() is None
                )
                or ""
            )
            if not last and proc.poll() is None:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    # -- stop ----------------------------------------------------------------------------

    def _terminate(self, record: ExportRecord) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period; reap our child."""
        pid_file = Path(record.pid_file)
        pid = record.pid or read_pid_file(pid_file)
        proc = self._children.pop(record.name, None)
        # Our own child is known for sure; anything else must prove it is that qemu-nbd.
        alive = proc.poll() is None if proc is not None else is_qemu_nbd(pid, pid_file)
        if pid is not None and alive:
            signal_group(pid, signal.SIGTERM)
            if proc is not None:
                try:
                    proc.wait(self.nbd.stop_grace)
                except subprocess.TimeoutExpired:
                    signal_group(pid, signal.SIGKILL)
                    proc.wait()
            elif not wait_gone(pid, pid_file, self.nbd.stop_grace):
                signal_group(pid, signal.SIGKILL)
                wait_gone(pid, pid_file, 5.0)
        if proc is not None:
            proc.poll()  # reap a child that had already died

    def stop(self, name: str) -> None:
        """Stop the export and forget it: no process, no pid or state file. Idempotent."""
        validate_name(name)
        with self._name_lock(name):
            with self._state_lock():
                record = self.store.read(name)
            if record is not None:
                self._terminate(record)
            else:
                proc = self._children.pop(name, None)
                if proc is not None:
                    proc.poll()
            with self._state_lock():
                self.store.remove(name)

    # -- look ----------------------------------------------------------------------------

    def get(self, name: str) -> Export | None:
        validate_name(name)
        record = self.store.read(name)
        if record is None or record.status != ExportStatus.RUNNING or record.pid is None:
            return None
        return to_export(record)

    def list(self) -> list[Export]:
        return [
            to_export(r)
            for r in self.store.all()
            if r.status == ExportStatus.RUNNING and r.pid is not None
        ]

    def check(self, name: str) -> None:
        """Raise :class:`ExportError` with qemu-nbd's reason when the export's process died.

        No handshake here: while a copier holds every ``--shared`` slot a probe would
        only queue, so liveness is read from the kernel instead.
        """
        validate_name(name)
        record = self.store.read(name)
        if record is None:
            raise ExportError(f"there is no export named {name}")
        if record.pid is None:
            return  # still starting: start() reports its own failure
        proc = self._children.get(name)
        returncode = proc.poll() if proc is not None else None
        if proc is not None and returncode is None:
            return
        if proc is None and is_qemu_nbd(record.pid, Path(record.pid_file)):
            return
        said = log_text(Path(record.log_path), record.log_offset)
        raise ExportError(
            f"export {name} on port {record.port}: qemu-nbd (pid {record.pid}) "
            f"{describe_exit(returncode)}" + (f": {said}" if said else "")
        )

    # -- restart -------------------------------------------------------------------------

    def adopt(self) -> tuple[builtins.list[Export], builtins.list[str]]:
        """Take over the exports a previous manager left running; clean up the rest.

        Kept: state says running, its qemu-nbd is alive (pid and pid-file argument match,
        so a recycled pid is not mistaken for it) and it answers a handshake. Everything
        else is killed and its files removed, which frees its port.
        """
        adopted: list[Export] = []
        cleaned: list[str] = []
        with self._state_lock():
            records = {r.name: r for r in self.store.all()}
            names = self.store.names_on_disk()
        for name in sorted(names):
            record = records.get(name)
            with self._name_lock(name):
                if record is None:  # a pid file without a (readable) state file
                    self._clean_orphan(name)
                    cleaned.append(name)
                    continue
                if record.status == ExportStatus.STARTING and pid_alive(record.owner):
                    continue  # another live manager is starting it right now
                if self._answers(record):
                    pid = record.pid or read_pid_file(Path(record.pid_file))
                    record = record.with_(owner=os.getpid(), pid=pid)
                    with self._state_lock():
                        self.store.write(record)
                    adopted.append(to_export(record))
                    continue
                self._terminate(record)
                with self._state_lock():
                    self.store.remove(name)
                cleaned.append(name)
        return adopted, cleaned

    def _answers(self, record: ExportRecord) -> bool:
        pid = record.pid or read_pid_file(Path(record.pid_file))
        if record.status != ExportStatus.RUNNING or not is_qemu_nbd(pid, Path(record.pid_file)):
            return False
        problem = handshake(record.host, record.port, record.name, self.nbd.start_timeout)
        # With every --shared slot taken (a copier at full width) qemu-nbd leaves a new
        # client waiting instead of refusing it: from a live qemu-nbd that is busy, not
        # dead, and killing it would fail the backup it serves.
        return problem is None or problem.startswith(HANDSHAKE_TIMEOUT)

    def _clean_orphan(self, name: str) -> None:
        pid_file = self.store.pid_file(name)
        pid = read_pid_file(pid_file)
        if pid is not None and is_qemu_nbd(pid, pid_file):
            self._terminate(
                ExportRecord(
                    name=name,
                    port=0,
                    host=self.nbd.bind,
                    qcow2_path="",
                    log_path="",
                    pid_file=str(pid_file),
                    status=ExportStatus.RUNNING,
                    owner=os.getpid(),
                    pid=pid,
                )
            )
        with self._state_lock():
            self.store.remove(name)
