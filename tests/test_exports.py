"""The qemu-nbd export manager against real qemu-img, qemu-nbd and libnbd."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import nbd
import pytest

from engine.config import NbdSettings
from engine.hub.exports import manager as exports_module
from engine.hub.exports.errors import ExportError, ExportNameError, PortRangeExhausted
from engine.hub.exports.manager import ExportManager
from engine.hub.exports.process import port_is_free
from engine.hub.exports.state import Export
from tests.conftest import wait_for
from tests.fixtures.cli import sendense
from tests.fixtures.exports import MiB, qemu_nbd_pids

SIZE = 64 * MiB


def image(manager: ExportManager, folder: Path, name: str) -> Path:
    path = folder / f"{name}.qcow2"
    manager.create_image(path, SIZE)
    return path


def connect(export: Export) -> nbd.NBD:
    h = nbd.NBD()
    h.connect_uri(export.uri)
    return h


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def listen(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_concurrent_starts_get_distinct_ports_and_take_writes(
    export_manager: ExportManager, tmp_path: Path
) -> None:
    paths = [image(export_manager, tmp_path, f"disk{i}") for i in range(2)]
    barrier = threading.Barrier(2)
    started: dict[int, Export] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            started[i] = export_manager.start(f"disk{i}", paths[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert started[0].port != started[1].port
    for i, export in started.items():
        writer, reader = connect(export), connect(export)  # two clients: --shared works
        pattern = bytes([0x41 + i]) * 65536
        writer.pwrite(pattern, 1 * MiB)
        writer.flush()
        assert reader.pread(65536, 1 * MiB) == pattern
        assert reader.pread(4096, 0) == bytes(4096)
        writer.shutdown()
        reader.shutdown()
    assert sorted(e.name for e in export_manager.list()) == ["disk0", "disk1"]


def test_export_is_loopback_persistent_and_shared(
    export_manager: ExportManager, tmp_path: Path
) -> None:
    export = export_manager.start("d", image(export_manager, tmp_path, "d"))
    argv = cmdline(export.pid)
    assert "--bind=127.0.0.1" in argv
    assert "--persistent" in argv
    assert f"--shared={export_manager.nbd.shared}" in argv
    assert export.uri == f"nbd://127.0.0.1:{export.port}/d"
    assert os.getpgid(export.pid) == export.pid  # its own process group
    # The readiness probe disconnected and a client came and went: still serving.
    connect(export).shutdown()
    export_manager.check("d")
    connect(export).shutdown()


def test_port_held_by_another_listener_is_skipped(
    export_manager: ExportManager, tmp_path: Path, nbd_port_range: tuple[int, int]
) -> None:
    lo, _ = nbd_port_range
    with listen(lo):
        export = export_manager.start("d", image(export_manager, tmp_path, "d"))
    assert export.port != lo


def test_port_taken_between_probe_and_bind_moves_to_the_next_port(
    export_manager: ExportManager,
    tmp_path: Path,
    nbd_port_range: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Mock: the race (another program binds after our probe, before qemu-nbd does) cannot
    # be timed with real parts, so the probe is made to miss the listener; qemu-nbd's
    # own "Address already in use" failure is real.
    monkeypatch.setattr(exports_module, "port_is_free", lambda host, port: True)
    lo, _ = nbd_port_range
    with listen(lo):
        export = export_manager.start("d", image(export_manager, tmp_path, "d"))
    assert export.port == lo + 1
    assert "Address already in use" in export.log_path.read_text()
    connect(export).shutdown()


def test_exhausted_range_names_the_range(
    make_export_manager: Callable[..., ExportManager],
    tmp_path: Path,
    nbd_port_range: tuple[int, int],
) -> None:
    lo, _ = nbd_port_range
    manager = make_export_manager(NbdSettings(port_min=lo, port_max=lo + 1))
    manager.start("a", image(manager, tmp_path, "a"))
    with listen(lo + 1), pytest.raises(PortRangeExhausted) as caught:
        manager.start("b", image(manager, tmp_path, "b"))
    assert str(caught.value) == f"no free NBD port in {lo}-{lo + 1}"
    assert manager.get("b") is None
    assert not manager.store.path("b").exists()


def test_locked_image_gives_qemus_lock_message(
    export_manager: ExportManager, tmp_path: Path
) -> None:
    path = image(export_manager, tmp_path, "d")
    first = export_manager.start("first", path)
    with pytest.raises(ExportError) as caught:
        export_manager.start("second", path)
    assert 'Failed to get "write" lock' in str(caught.value)
    assert "timed out" not in str(caught.value)
    assert export_manager.get("second") is None
    assert not export_manager.store.path("second").exists()
    assert qemu_nbd_pids(str(export_manager.store.folder)) == [first.pid]


def test_missing_or_foreign_image_gives_a_clear_error(
    export_manager: ExportManager, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match=r"image .*nope\.qcow2 does not exist"):
        export_manager.start("d", tmp_path / "nope.qcow2")
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(4096))
    with pytest.raises(ExportError, match="is not a qcow2 image"):
        export_manager.start("d", raw)
    assert export_manager.list() == []


def test_image_removed_after_check_gives_qemus_own_message(
    export_manager: ExportManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mock: the image check is skipped so that qemu-nbd meets the missing file itself,
    # as it would if the file vanished between the check and the start.
    monkeypatch.setattr(exports_module, "check_image", lambda name, path: None)
    with pytest.raises(ExportError, match=r"Could not open .*: No such file or directory"):
        export_manager.start("d", tmp_path / "gone.qcow2")


@pytest.mark.parametrize("name", ["", "a/b", "tab\there", "nl\n", "x" * 201, "é" * 101])
def test_bad_export_names_are_refused(export_manager: ExportManager, name: str) -> None:
    with pytest.raises(ExportNameError) as caught:
        export_manager.start(name, Path("/nonexistent.qcow2"))
    assert caught.value.exit_code == 2


def test_kill_9_is_noticed_with_its_reason(export_manager: ExportManager, tmp_path: Path) -> None:
    export = export_manager.start("d", image(export_manager, tmp_path, "d"))
    export_manager.check("d")
    os.kill(export.pid, signal.SIGKILL)

    def reason() -> str | None:
        try:
            export_manager.check("d")
        except ExportError as exc:
            return str(exc)
        return None

    message = wait_for(reason, what="check() to notice the killed qemu-nbd")
    assert "SIGKILL" in message and f"port {export.port}" in message
    export_manager.stop("d")
    assert export_manager.get("d") is None


def test_stop_leaves_no_process_and_frees_the_port(
    export_manager: ExportManager, tmp_path: Path
) -> None:
    path = image(export_manager, tmp_path, "d")
    export = export_manager.start("d", path)
    pid_file = export_manager.store.pid_file("d")
    assert pid_file.exists()
    export_manager.stop("d")
    assert not Path(f"/proc/{export.pid}").exists()
    assert not pid_file.exists() and not export_manager.store.path("d").exists()
    assert port_is_free("127.0.0.1", export.port)
    assert export_manager.get("d") is None
    export_manager.stop("d")  # idempotent
    again = export_manager.start("d", path)
    assert again.port == export.port


def test_stop_kills_a_process_that_ignores_sigterm(
    make_export_manager: Callable[..., ExportManager], tmp_path: Path, nbd_settings: NbdSettings
) -> None:
    manager = make_export_manager(nbd_settings.model_copy(update={"stop_grace": 0.2}))
    export = manager.start("d", image(manager, tmp_path, "d"))
    os.kill(export.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    manager.stop("d")
    assert not Path(f"/proc/{export.pid}").exists()


def test_restarted_manager_adopts_live_exports_and_cleans_dead_ones(
    make_export_manager: Callable[..., ExportManager], tmp_path: Path
) -> None:
    first = make_export_manager()
    live = first.start("live", image(first, tmp_path, "live"))
    dead = first.start("dead", image(first, tmp_path, "dead"))
    h = connect(live)
    h.pwrite(b"\x5a" * 4096, 0)
    h.shutdown()
    os.kill(dead.pid, signal.SIGKILL)
    wait_for(lambda: not qemu_nbd_pids(str(first.store.pid_file("dead"))), what="kill -9")

    second = make_export_manager()
    adopted, cleaned = second.adopt()
    assert [e.name for e in adopted] == ["live"] and adopted[0].port == live.port
    assert cleaned == ["dead"]
    assert not second.store.path("dead").exists()
    assert connect(live).pread(4096, 0) == b"\x5a" * 4096
    # The live export's port stays allocated across the restart; the dead one's is free.
    newcomer = second.start("new", image(second, tmp_path, "new"))
    assert newcomer.port != live.port
    second.stop("live")
    assert not qemu_nbd_pids(str(second.store.pid_file("live")))


def start_elsewhere(
    manager: ExportManager, nbd_settings: NbdSettings, exports: dict[str, Path]
) -> subprocess.Popen[str]:
    """Another process with its own manager on the same folders starts ``exports``.

    It prints ``ready`` once imported, then ``name port pid`` per export, and exits,
    leaving its exports running.
    """
    script = (
        "import sys; from pathlib import Path\n"
        "from engine.config import NbdSettings\n"
        "from engine.hub.exports.manager import ExportManager\n"
        f"m = ExportManager(NbdSettings.model_validate_json({nbd_settings.model_dump_json()!r}),"
        f" Path({str(manager.store.folder.parent)!r}), Path({str(manager.log_folder.parent)!r}))\n"
        "print('ready', flush=True)\n"
        f"for name, path in {[(n, str(p)) for n, p in exports.items()]!r}:\n"
        "    e = m.start(name, Path(path))\n"
        "    print(e.name, e.port, e.pid, flush=True)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )


def finished(proc: subprocess.Popen[str]) -> list[tuple[str, int, int]]:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return [
        (n, int(port), int(pid))
        for n, port, pid in (line.split() for line in out.split("\n") if line and line != "ready")
    ]


def test_export_outlives_the_process_that_started_it(
    make_export_manager: Callable[..., ExportManager],
    tmp_path: Path,
    nbd_settings: NbdSettings,
) -> None:
    manager = make_export_manager()
    [(_, _, pid)] = finished(
        start_elsewhere(manager, nbd_settings, {"d": image(manager, tmp_path, "d")})
    )
    adopted, cleaned = manager.adopt()
    assert [(e.name, e.pid) for e in adopted] == [("d", pid)] and cleaned == []
    connect(adopted[0]).shutdown()


def test_another_process_waits_for_the_run_folder_lock(
    make_export_manager: Callable[..., ExportManager],
    tmp_path: Path,
    nbd_settings: NbdSettings,
) -> None:
    manager = make_export_manager()
    path = image(manager, tmp_path, "x")
    with manager.store.locked():
        proc = start_elsewhere(manager, nbd_settings, {"x": path})
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        # While the lock is held the other process cannot even reserve a port.
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        assert not manager.store.path("x").exists()
    [(name, port, _)] = finished(proc)
    assert name == "x" and manager.adopt()[0][0].port == port


def test_create_image_never_overwrites_and_chains_on_a_backing_file(
    export_manager: ExportManager, tmp_path: Path
) -> None:
    base = image(export_manager, tmp_path, "base")
    with pytest.raises(ExportError, match="already exists"):
        export_manager.create_image(base, SIZE)
    export = export_manager.start("base", base)
    h = connect(export)
    h.pwrite(b"\x77" * 65536, 0)
    h.flush()
    h.shutdown()
    export_manager.stop("base")

    overlay = tmp_path / "chain" / "overlay.qcow2"
    export_manager.create_image(overlay, SIZE, backing=base)
    top = export_manager.start("top", overlay)
    h = connect(top)
    assert h.pread(65536, 0) == b"\x77" * 65536
    h.pwrite(b"\x11" * 4096, 0)
    h.flush()
    h.shutdown()
    export_manager.stop("top")
    h = connect(export_manager.start("base", base))
    assert h.pread(4096, 0) == b"\x77" * 4096  # writes to the overlay left the base alone
    h.shutdown()
    with pytest.raises(ExportError, match="qemu-img could not create"):
        export_manager.create_image(tmp_path / "bad.qcow2", SIZE, backing=tmp_path / "nope.qcow2")
    assert not (tmp_path / "bad.qcow2").exists()


def test_without_o_direct_the_export_uses_writeback_cache(
    export_manager: ExportManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mock: this machine's tmpfs accepts O_DIRECT (Linux >= 6.6), so a file system that
    # refuses it is simulated; qemu-nbd must then run without --cache=none/--aio=native.
    monkeypatch.setattr(exports_module, "o_direct_works", lambda path: False)
    export = export_manager.start("d", image(export_manager, tmp_path, "d"))
    argv = cmdline(export.pid)
    assert "--cache=writeback" in argv and "--aio=threads" in argv
    h = connect(export)
    h.pwrite(b"\x01" * 4096, 0)
    assert h.pread(4096, 0) == b"\x01" * 4096
    h.shutdown()


def test_cli_lists_and_stops_exports(export_manager: ExportManager, tmp_path: Path) -> None:
    export = export_manager.start("cli-disk", image(export_manager, tmp_path, "d"))
    listed = sendense("exports", "list")
    assert listed.returncode == 0, listed.stderr
    assert export.uri in listed.stdout and "running" in listed.stdout
    stopped = sendense("exports", "stop", "cli-disk")
    assert stopped.returncode == 0, stopped.stderr
    assert not qemu_nbd_pids(str(export_manager.store.pid_file("cli-disk")))
    assert export_manager.get("cli-disk") is None


def test_a_server_that_never_answers_times_out_and_is_killed(
    make_export_manager: Callable[..., ExportManager], tmp_path: Path, nbd_settings: NbdSettings
) -> None:
    # Stand-in: real qemu-nbd either answers or exits, so a hung one is played by a
    # program that neither listens nor exits.
    hung, pid_file = tmp_path / "hung-qemu-nbd", tmp_path / "hung.pid"
    hung.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    hung.chmod(0o755)
    manager = make_export_manager(
        nbd_settings.model_copy(update={"qemu_nbd": str(hung), "start_timeout": 0.3})
    )
    path = image(manager, tmp_path, "d")
    with pytest.raises(ExportError, match=r"did not answer an NBD handshake within 0\.3s"):
        manager.start("d", path)
    assert manager.store.names_on_disk() == set()
    assert not Path(f"/proc/{int(pid_file.read_text())}").exists()


def test_unusual_but_valid_names_work_end_to_end(
    export_manager: ExportManager, tmp_path: Path
) -> None:
    names = [".hidden", "..", "web 01 disk", "vm-ünï-2000", "a:b@c?d#e%f"]
    for i, name in enumerate(names):
        export = export_manager.start(name, image(export_manager, tmp_path, f"n{i}"))
        h = connect(export)  # through the URI: the name is percent-encoded in it
        h.pwrite(b"\x42" * 512, 0)
        assert h.pread(512, 0) == b"\x42" * 512
        h.shutdown()
    assert sorted(e.name for e in export_manager.list()) == sorted(names)
    for name in names:
        export_manager.stop(name)
    assert export_manager.store.names_on_disk() == set()


def test_a_busy_export_is_adopted_not_killed(
    make_export_manager: Callable[..., ExportManager], tmp_path: Path, nbd_settings: NbdSettings
) -> None:
    busy = nbd_settings.model_copy(update={"shared": 2, "start_timeout": 0.5})
    first = make_export_manager(busy)
    export = first.start("d", image(first, tmp_path, "d"))
    clients = [connect(export), connect(export)]  # every --shared slot taken
    adopted, cleaned = make_export_manager(busy).adopt()
    assert [e.name for e in adopted] == ["d"] and cleaned == []
    clients[0].pwrite(b"\x33" * 512, 0)
    assert clients[1].pread(512, 0) == b"\x33" * 512
    for h in clients:
        h.shutdown()
