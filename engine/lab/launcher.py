"""Build and run the lab: vcsim extended in Go (``go/``), in the background.

Layout under the lab folder (``<SENDENSE_HOME>/lab`` for the CLI):
  bin/sendense-lab-<hash>   the build, keyed by a hash of the Go source (rebuilt on change)
  bin/fsimages-<hash>/      fstest1's disk images (fsimages.py), keyed by its source: the
                            Go lab copies them into fstest1's flat files at each start
  identity/                 password (0600), certificate and key: kept across restarts so
                            the registered credential and its pinned thumbprint stay valid
  run/                      pid, log, lab.json and the datastores: removed by ``stop``
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.credentials import write_private
from engine.errors import SendenseError
from engine.processes import pid_alive
from engine.vcenter.connection import fetch_thumbprint

GO_SOURCE = Path(__file__).parent / "go"
GOVMOMI_GOPATH = "/usr/share/gocode"
LAB_USER = "administrator@vsphere.local"
STALE_BUILD_SECONDS = 24 * 3600


class LabError(SendenseError):
    pass


@dataclass
class LabInfo:
    host: str  # "127.0.0.1:PORT", as a credential stores it
    port: int
    user: str
    password_file: str
    thumbprint: str
    pid: int
    lab_dir: str

    @property
    def url(self) -> str:
        return f"https://{self.host}/sdk"

    @property
    def password(self) -> str:
        return Path(self.password_file).read_text().strip()

    @property
    def api(self) -> str:
        return f"https://{self.host}/sendense"


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(GO_SOURCE.glob("*.go")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def fs_images(cache: Path) -> Path:
    """The folder holding fstest1's disk images (``gpt.raw``, ``fat.raw``), built once
    per version of ``fsimages.py`` into ``cache`` (a second to build, cached all the same:
    the lab's start stays quick)."""
    from engine.lab import fsimages

    digest = hashlib.sha256(Path(fsimages.__file__).read_bytes()).hexdigest()[:16]
    folder = cache / f"fsimages-{digest}"
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{folder.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fsimages.build_gpt_disk(tmp / "gpt.raw")
        fsimages.build_fat_disk(tmp / "fat.raw")
        os.rename(tmp, folder)
    except Exception as exc:
        if not folder.is_dir():  # else another start made them first: as good
            raise LabError(f"building fstest1's disk images failed: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in cache.glob("fsimages-*"):  # older versions, if not in recent use
        with contextlib.suppress(OSError):
            if stale != folder and time.time() - stale.stat().st_mtime > STALE_BUILD_SECONDS:
                shutil.rmtree(stale)
    return folder


def build(lab_dir: Path, bin_dir: Path | None = None) -> Path:
    """The lab binary for the current Go source, built once and cached (in ``bin_dir``,
    by default the lab folder's ``bin``)."""
    binary = (bin_dir or lab_dir / "bin") / f"sendense-lab-{source_hash()}"
    if binary.exists():
        return binary
    if not shutil.which("go"):
        raise LabError(
            "the lab needs Go: apt-get install golang-go golang-github-vmware-govmomi-dev"
        )
    if not Path(GOVMOMI_GOPATH, "src/github.com/vmware/govmomi/simulator").is_dir():
        raise LabError("the lab needs govmomi: apt-get install golang-github-vmware-govmomi-dev")
    binary.parent.mkdir(parents=True, exist_ok=True)
    for stale in binary.parent.glob("sendense-lab-*"):  # older builds, if not in recent use
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_atime > STALE_BUILD_SECONDS:
                stale.unlink()
    tmp = binary.with_name(binary.name + f".tmp{os.getpid()}")
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{GOVMOMI_GOPATH}:{lab_dir / 'gopath'}",
        "GOFLAGS": "",
    }
    done = subprocess.run(
        ["go", "build", "-o", str(tmp), "."],
        cwd=GO_SOURCE,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise LabError(f"building the lab failed: {done.stderr.strip()[-2000:]}")
    os.replace(tmp, binary)
    return binary


def _paths(lab_dir: Path) -> dict[str, Path]:
    run = lab_dir / "run"
    ident = lab_dir / "identity"
    return {
        "run": run,
        "identity": ident,
        "pid": run / "lab.pid",
        "log": run / "lab.log",
        "info": run / "lab.json",
        "password": ident / "password",
        "cert": ident / "cert.pem",
        "key": ident / "key.pem",
    }


def lab_status(lab_dir: Path) -> LabInfo | None:
    """The running lab's details, or None when it is not running."""
    p = _paths(lab_dir)
    try:
        info = LabInfo(**json.loads(p["info"].read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return info if pid_alive(info.pid) else None


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def start(
    lab_dir: Path,
    *,
    port: int = 8989,
    vms: int = 4,
    hosts: int = 3,
    clusters: int = 1,
    disk_mib: int = 24,
    second_disk_mib: int = 0,
    timeout: float | None = None,
    bin_dir: Path | None = None,
) -> LabInfo:
    """Start the lab (or return the one already running from this folder).
    ``second_disk_mib``: pgtest1's second disk, 0 for 5/3 of the first."""
    running = lab_status(lab_dir)
    if running:
        return running
    if _answers(port):
        raise LabError(f"port {port} on 127.0.0.1 is already in use; choose another with --port")
    binary = build(lab_dir, bin_dir)
    images = fs_images(bin_dir or lab_dir / "bin")
    p = _paths(lab_dir)
    shutil.rmtree(p["run"], ignore_errors=True)
    p["run"].mkdir(parents=True, mode=0o700)
    p["identity"].mkdir(parents=True, exist_ok=True, mode=0o700)
    if not p["password"].exists():
        write_private(p["password"], secrets.token_urlsafe(18).encode())
    cmd = [
        str(binary),
        f"-listen=127.0.0.1:{port}",
        f"-user={LAB_USER}",
        f"-password-file={p['password']}",
        f"-cert={p['cert']}",
        f"-key={p['key']}",
        f"-home={p['run']}",
        f"-vms={vms}",
        f"-hosts={hosts}",
        f"-clusters={clusters}",
        f"-disk-mib={disk_mib}",
        f"-second-disk-mib={second_disk_mib}",
        f"-fs-images={images}",
    ]
    with open(p["log"], "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    p["pid"].write_text(str(proc.pid))
    deadline = time.monotonic() + (timeout or 30 + vms / 100)
    delay = 0.02
    while not _answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill(proc.pid)
            tail = p["log"].read_text(errors="replace").strip().splitlines()[-3:]
            shutil.rmtree(p["run"], ignore_errors=True)
            raise LabError(f"the lab did not start: {' | '.join(tail) or 'no output'}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    info = LabInfo(
        host=f"127.0.0.1:{port}",
        port=port,
        user=LAB_USER,
        password_file=str(p["password"]),
        thumbprint=fetch_thumbprint("127.0.0.1", port),
        pid=proc.pid,
        lab_dir=str(lab_dir),
    )
    p["info"].write_text(json.dumps(asdict(info)))
    return info


def _kill(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the lab's process group, SIGKILL it if it lingers; reap it if it is ours."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        time.sleep(0.02)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop(lab_dir: Path) -> bool:
    """Stop the lab and remove its run folder (datastores, log); True if it was running."""
    p = _paths(lab_dir)
    was_running = False
    try:
        pid = int(p["pid"].read_text())
    except (OSError, ValueError):
        pid = 0
    if pid and pid_alive(pid):
        was_running = True
        _kill(pid)
    shutil.rmtree(p["run"], ignore_errors=True)
    return was_running
