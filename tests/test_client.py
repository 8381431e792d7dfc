"""sendense-backup-client: argument refusals, and whole runs against the vcsim lab."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.hub.exports.manager import ExportManager
from engine.vcenter import find_vm
from engine.vcenter.snapshots import list_snapshots
from tests.conftest import wait_for
from tests.fixtures.images import qcow2_data
from tests.fixtures.lab import Lab

CLIENT = str(Path(sys.executable).parent / "sendense-backup-client")
THUMB = "ab" * 32


def run_client(*args: str, stdin: str = "pw\n") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLIENT, "migrate", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


BASE = [
    "--vmware-endpoint", "127.0.0.1:1", "--vmware-username", "u", "--vmware-path", "/DC/vm/x",
    "--job-id", "j1", "--vmware-password-file", "-", "--vmware-thumbprint", THUMB,
]  # fmt: skip


def test_help_documents_exit_codes():
    out = subprocess.run([CLIENT, "migrate", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for code in ("130", "vCenter error", "snapshot error", "copy error", "disk source error"):
        assert code in out.stdout


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (
            "2000:nbd://127.0.0.1:10110/pgtest1-disk0,2000:nbd://127.0.0.1:10111/pgtest1-disk0",
            "disk key 2000 is given twice",
        ),
        ("2000:nbd://127.0.0.1:99999/a", "port 99999 is out of range"),
        ("2000:127.0.0.1:1/a", "is malformed"),
    ],
)
def test_bad_targets_exit_2_before_connecting(targets: str, message: str):
    out = run_client(*BASE, "--nbd-targets", targets)
    assert out.returncode == 2
    assert out.stderr.startswith("error: nbd target ")
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_no_password_source_is_refused():
    args = [a for a in BASE if a not in ("--vmware-password-file", "-")]
    out = run_client(*args, "--nbd-targets", "2000:nbd://h:1/a")
    assert out.returncode == 2
    assert "--vmware-password-file" in out.stderr


def test_bad_thumbprint_is_refused():
    args = [*BASE[:-1], "zz:11", "--nbd-targets", "2000:nbd://h:1/a"]
    out = run_client(*args)
    assert out.returncode == 2
    assert "not a SHA-256 fingerprint" in out.stderr


def test_unreachable_vcenter_is_exit_3_and_a_json_error(tmp_path: Path):
    log = tmp_path / "job.log"
    out = run_client(
        *BASE, "--nbd-targets", "2000:nbd://h:1/a", "--progress", "json", "--log-file", str(log)
    )
    assert out.returncode == 3
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["type"] for line in lines] == ["error", "done"]
    assert lines[-1]["status"] == "failed"
    assert "j1" in log.read_text()


def test_inline_password_warns_and_file_password_does_not(tmp_path: Path):
    no_file = [a for a in BASE if a not in ("--vmware-password-file", "-")]
    inline = run_client(*no_file, "--vmware-password", "pw", "--nbd-targets", "2000:nbd://h:1/a")
    assert "warning: --vmware-password is visible to every user" in inline.stderr
    assert inline.returncode == 3  # got as far as connecting
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    from_file = run_client(
        *no_file, "--vmware-password-file", str(secret), "--nbd-targets", "2000:nbd://h:1/a"
    )
    assert "warning" not in from_file.stderr
    assert from_file.returncode == 3


def test_unreadable_password_file_is_bad_input(tmp_path: Path):
    no_file = [a for a in BASE if a not in ("--vmware-password-file", "-")]
    out = run_client(
        *no_file,
        "--vmware-password-file",
        str(tmp_path / "none"),
        "--nbd-targets",
        "2000:nbd://h:1/a",
    )
    assert out.returncode == 2
    assert "cannot read password file" in out.stderr


# -- against the lab -------------------------------------------------------------------


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = [root]
    for pid in found:
        found.extend(p for p, ppid in parents.items() if ppid == pid)
    return found


def process_text(pid: int) -> tuple[bytes, bytes]:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes(),
            Path(f"/proc/{pid}/environ").read_bytes(),
        )
    except OSError:
        return b"", b""


def nbdkit_pids(marker: str = "sendense-src-") -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd, _ = process_text(int(entry.name))
            if cmd.startswith(b"nbdkit") and marker.encode() in cmd:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if stat != "Z":
                    pids.append(int(entry.name))
    return pids


class Watched:
    """A client run, its stdout lines as they come, and what its children showed /proc."""

    def __init__(self, args: list[str], password: str) -> None:
        self.password = password.encode()
        self.proc = subprocess.Popen(
            [CLIENT, "migrate", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(password + "\n")
        self.proc.stdin.close()
        self.lines: list[dict[str, Any]] = []
        self.leaks: list[str] = []
        self.children_seen: set[bytes] = set()

    def scan(self) -> None:
        for pid in descendants(self.proc.pid):
            cmd, env = process_text(pid)
            if cmd:
                self.children_seen.add(Path(cmd.split(b"\0")[0].decode()).name.encode())
            if self.password in cmd or self.password in env:
                self.leaks.append(cmd.decode(errors="replace"))

    def read_until(self, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = json.loads(raw)
            self.lines.append(line)
            self.scan()
            if done(line):
                return line
        raise AssertionError(f"client ended without that line: {self.lines[-3:]}")

    def finish(self) -> int:
        self.read_until(lambda line: line["type"] == "done")
        return self.proc.wait(30)


@pytest.fixture
def exports(export_manager: ExportManager, tmp_path: Path, lab: Lab):
    """One fresh qcow2 export per pgtest1 disk, and the --nbd-targets string for them."""
    made = {}
    for disk in lab.pgtest1.disks:
        image = tmp_path / f"pgtest1-{disk.key}.qcow2"
        export_manager.create_image(image, disk.capacity_bytes)
        made[disk.key] = (
            f"pgtest1-{disk.key}",
            image,
            export_manager.start(f"pgtest1-{disk.key}", image),
        )
    targets = ",".join(f"{key}:{export.uri}" for key, (_, _, export) in made.items())
    return targets, made


def lab_args(lab: Lab, targets: str, job: str, log: Path, *extra: str) -> list[str]:
    return [
        "--vmware-endpoint", lab.host, "--vmware-username", lab.user,
        "--vmware-password-file", "-", "--vmware-thumbprint", lab.thumbprint,
        "--vmware-path", lab.pgtest1.path, "--nbd-targets", targets, "--job-id", job,
        "--source", "datastore", "--progress", "json", "--log-file", str(log), *extra,
    ]  # fmt: skip


def snapshots_of_pgtest1(lab: Lab) -> list[str]:
    with lab.connect() as vc:
        return [s.name for s in list_snapshots(vc, find_vm(vc, lab.pgtest1.path))]


def test_backup_pgtest1_end_to_end(lab: Lab, exports, export_manager: ExportManager, tmp_path):
    targets, made = exports
    log = tmp_path / "backup.log"
    # 8 MiB/s: slow enough that the /proc scans see the nbdkit sources at work.
    run = Watched(lab_args(lab, targets, "e2e-1", log, "--max-rate", "8"), lab.password)
    assert run.finish() == 0, run.proc.stderr.read() if run.proc.stderr else ""
    types = [line["type"] for line in run.lines]
    assert types[0] == "snapshot" and run.lines[0]["kind"] == "quiesced"
    assert run.lines[-1] == {**run.lines[-1], "type": "done", "status": "completed"}
    done = {line["disk_key"]: line for line in run.lines if line["type"] == "disk_done"}
    assert set(done) == {2000, 2001}
    assert all(d["change_id"] for d in done.values())
    assert "progress" in types
    assert not run.leaks, f"password seen in a process: {run.leaks}"
    assert b"nbdkit" in run.children_seen  # the scan did look at the sources
    for key, (name, image, _) in made.items():
        export_manager.stop(name)
        flat = lab.pgtest1.flat[key]
        cmp = subprocess.run(
            ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(flat), str(image)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        data = flat.read_bytes()
        for start, length in qcow2_data(image):
            for off in range(start, start + length, 65536):
                assert data[off : off + 65536].strip(b"\0"), f"zero cluster {off} allocated"
        assert done[key]["bytes_zero"] > 0
    assert not any(s.startswith("sendense-") for s in snapshots_of_pgtest1(lab))
    assert not nbdkit_pids()
    text = log.read_text()
    assert lab.password not in text
    for needle in ("snapshot sendense-e2e-1 (quiesced) taken", "disk 2000: done", "removed"):
        assert needle in text


def test_sigterm_halfway_removes_snapshot_and_nbdkit(lab: Lab, exports, tmp_path: Path):
    targets, _ = exports
    log = tmp_path / "backup.log"
    # 1 MiB/s per disk: the copy takes several seconds, so SIGTERM lands mid-copy.
    run = Watched(lab_args(lab, targets, "e2e-term", log, "--max-rate", "1"), lab.password)
    run.read_until(lambda line: line["type"] == "progress" and line["bytes_done"] > 0)
    assert nbdkit_pids()
    assert "sendense-e2e-term" in snapshots_of_pgtest1(lab)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 130
    assert run.lines[-1]["status"] == "cancelled"
    assert "sendense-e2e-term" not in snapshots_of_pgtest1(lab)
    wait_for(lambda: not nbdkit_pids(), what="nbdkit to be gone")
    assert "cancelling" in log.read_text()


def test_leftover_snapshot_of_a_dead_job_is_removed_first(lab: Lab, exports, tmp_path: Path):
    from engine.vcenter import create_snapshot

    targets, _ = exports
    with lab.connect() as vc:
        create_snapshot(vc, find_vm(vc, lab.pgtest1.path), "dead-job", allow_crash_consistent=True)
    assert "sendense-dead-job" in snapshots_of_pgtest1(lab)
    run = Watched(lab_args(lab, targets, "e2e-2", tmp_path / "l.log"), lab.password)
    assert run.finish() == 0
    assert not any(s.startswith("sendense-") for s in snapshots_of_pgtest1(lab))
    assert "removed leftover snapshot sendense-dead-job" in (tmp_path / "l.log").read_text()


def test_unknown_vm_disk_key_is_refused_and_no_snapshot(lab: Lab, tmp_path: Path):
    started = time.monotonic()
    out = run_client(
        *lab_args(
            lab, "2000:nbd://127.0.0.1:1/a,2009:nbd://127.0.0.1:1/b", "e2e-3", tmp_path / "l"
        ),
        stdin=lab.password + "\n",
    )
    assert out.returncode == 2, out.stderr
    assert "the VM has no disk with key 2009" in out.stderr
    assert "sendense-e2e-3" not in snapshots_of_pgtest1(lab)
    assert time.monotonic() - started < 30


def test_quiesce_failure_needs_the_crash_consistent_flag(lab: Lab, exports, tmp_path: Path):
    targets, _ = exports
    lab.quiesce_fault("pgtest1", True)
    try:
        refused = Watched(lab_args(lab, targets, "e2e-q1", tmp_path / "a.log"), lab.password)
        assert refused.finish() == 4
        assert "crash-consistent snapshot is not allowed" in refused.lines[-1]["message"]
        assert "sendense-e2e-q1" not in snapshots_of_pgtest1(lab)
        args = lab_args(lab, targets, "e2e-q2", tmp_path / "b.log", "--allow-crash-consistent")
        allowed = Watched(args, lab.password)
        assert allowed.finish() == 0
        assert allowed.lines[0] == {**allowed.lines[0], "kind": "crash-consistent"}
        assert "(crash-consistent) taken" in (tmp_path / "b.log").read_text()
    finally:
        lab.quiesce_fault("pgtest1", False)
