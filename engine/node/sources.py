"""Where a VMware disk is read from: nbdkit serving it on a private unix socket.

Two kinds. ``datastore``: the node can read the datastore as files (NFS mounted here;
the lab), so nbdkit's ``file`` plugin serves the flat extent named in the VMDK
descriptor, read-only. ``vddk``: the production path, nbdkit's ``vddk`` plugin talking to
ESXi; VMware's VDDK is installed by the operator, and its password reaches nbdkit
through a 0600 file, never the command line. ``auto`` takes the datastore when the flat
file is readable here.

nbdkit runs with ``--exit-with-parent`` (it dies with the thread that started it: start
sources from a thread that outlives the copy) and is stopped on every exit path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbd

from engine.config import VddkSettings
from engine.errors import BadInput, SendenseError, SourceError

SOURCE_KINDS = ("auto", "datastore", "vddk")
SPARSE_TYPES = {
    "monolithicsparse",
    "twogbmaxextentsparse",
    "streamoptimized",
    "vmfssparse",
    "sesparse",
    "vsansparse",
}
FLAT_EXTENT_TYPES = {"FLAT", "VMFS"}


@dataclass(frozen=True)
class VmdkExtent:
    access: str
    sectors: int
    kind: str
    file: str
    offset: int


@dataclass(frozen=True)
class VmdkDescriptor:
    create_type: str
    extents: tuple[VmdkExtent, ...]


def parse_descriptor(text: str, name: str = "descriptor") -> VmdkDescriptor:
    """The create type and extent lines of a text VMDK descriptor."""
    create_type = ""
    extents: list[VmdkExtent] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("createtype"):
            create_type = line.partition("=")[2].strip().strip('"')
            continue
        head = line.split(None, 1)[0]
        if head in ("RW", "RDONLY", "NOACCESS"):
            try:
                before, quoted, after = line.split('"', 2)
                access, sectors, kind = before.split()
                offset = int(after.split()[0]) if after.split() else 0
                extents.append(VmdkExtent(access, int(sectors), kind.upper(), quoted, offset))
            except ValueError:
                raise SourceError(f"{name}: cannot read extent line {line!r}") from None
    if not extents:
        raise SourceError(f"{name}: no extent lines: not a VMDK descriptor")
    return VmdkDescriptor(create_type, tuple(extents))


def flat_extent(descriptor_path: Path) -> Path:
    """The one flat file holding the disk's data; sparse and split disks are refused."""
    try:
        with descriptor_path.open("rb") as f:
            head = f.read(64 * 1024)
    except OSError as exc:
        raise SourceError(f"cannot read VMDK {descriptor_path}: {exc.strerror}") from None
    if head[:4] in (b"KDMV", b"COWD"):
        raise SourceError(
            f"{descriptor_path} is a sparse VMDK (binary header): only flat disks can be read "
            "from the datastore; use --source vddk"
        )
    desc = parse_descriptor(head.decode("utf-8", "replace"), str(descriptor_path))
    if desc.create_type.lower() in SPARSE_TYPES:
        raise SourceError(
            f"{descriptor_path}: createType {desc.create_type} is sparse: only flat disks "
            "can be read from the datastore; use --source vddk"
        )
    if len(desc.extents) != 1:
        raise SourceError(
            f"{descriptor_path}: {len(desc.extents)} extents; only single-extent flat disks "
            "can be read from the datastore"
        )
    ext = desc.extents[0]
    if ext.kind not in FLAT_EXTENT_TYPES or ext.offset != 0:
        raise SourceError(
            f"{descriptor_path}: extent type {ext.kind} at offset {ext.offset} is not a plain "
            "flat extent; use --source vddk"
        )
    return descriptor_path.parent / ext.file


class NbdkitSource:
    """One nbdkit serving one disk on a unix socket in a private (0700) folder."""

    def __init__(
        self, plugin_args: list[str], *, plugin: str, nbdkit: str = "nbdkit", what: str
    ) -> None:
        self.what = what
        self.plugin = plugin
        self.dir = Path(tempfile.mkdtemp(prefix="sendense-src-"))
        self.socket = self.dir / "nbd.sock"
        self.argv = [nbdkit, "--exit-with-parent", "-f", "-U", str(self.socket), *plugin_args]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"nbd+unix:///?socket={self.socket}"

    def secret_file(self, name: str, value: str) -> Path:
        """A 0600 file in the private folder: how nbdkit gets a password without argv."""
        path = self.dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return path

    def start(self, timeout: float = 10.0) -> NbdkitSource:
        log = (self.dir / "nbdkit.log").open("wb")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        except OSError as exc:
            self.close()
            raise SourceError(f"{self.what}: cannot run {self.argv[0]}: {exc.strerror}") from None
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                message = self.stderr() or f"exit status {self.proc.returncode}"
                self.close()
                raise SourceError(f"{self.what}: nbdkit failed: {message}")
            if time.monotonic() > deadline:
                self.close()
                raise SourceError(f"{self.what}: nbdkit did not answer within {timeout:.0f}s")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        h = nbd.NBD()
        try:
            h.connect_uri(self.uri)
            h.shutdown()
            return True
        except nbd.Error:
            return False

    def stderr(self) -> str:
        """nbdkit's own last words, for the operator (secrets are never in its argv)."""
        try:
            text = (self.dir / "nbdkit.log").read_text(errors="replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return " / ".join(lines[-3:])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NbdkitSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def datastore_source(descriptor: Path, *, nbdkit: str = "nbdkit") -> NbdkitSource:
    """nbdkit's file plugin, read-only, on the disk's flat extent."""
    flat = flat_extent(descriptor)
    if not os.access(flat, os.R_OK):
        raise SourceError(f"flat extent {flat} of {descriptor} is not readable here")
    return NbdkitSource(
        ["-r", "file", f"file={flat}"], plugin="file", nbdkit=nbdkit, what=str(descriptor)
    )


@dataclass(frozen=True)
class VddkLogin:
    host: str
    port: int | None
    username: str
    password: str
    thumbprint: str | None

    def __repr__(self) -> str:  # never print the password, whatever logs the object
        return f"VddkLogin(host={self.host!r}, username={self.username!r})"


def vddk_thumbprint(hexed: str) -> str:
    """The ``AA:BB:…`` form nbdkit-vddk expects."""
    plain = hexed.replace(":", "").upper()
    return ":".join(plain[i : i + 2] for i in range(0, len(plain), 2))


def check_vddk(settings: VddkSettings) -> None:
    """Refuse early, in one line, when nbdkit, its vddk plugin or VDDK itself is missing."""
    binary = shutil.which(settings.nbdkit)
    if binary is None:
        raise SourceError(f"nbdkit ({settings.nbdkit}) is not installed")
    out = subprocess.run([binary, "--dump-config"], capture_output=True, text=True, check=False)
    config = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    plugindir = Path(config.get("plugindir", ""))
    if not (plugindir / "nbdkit-vddk-plugin.so").exists():
        raise SourceError(
            f"nbdkit has no vddk plugin (no nbdkit-vddk-plugin.so in {plugindir}): install "
            "nbdkit with its vddk plugin, or use --source datastore"
        )
    libdir = Path(settings.libdir)
    if not (libdir / "lib64").is_dir():
        raise SourceError(
            f"VMware VDDK is not installed at {libdir} (no lib64 folder): set vddk.libdir"
        )


def vddk_source(
    login: VddkLogin,
    *,
    vm_moref: str,
    snapshot_moref: str | None,
    file_name: str,
    settings: VddkSettings,
    writable: bool = False,
) -> NbdkitSource:
    """nbdkit's vddk plugin on one disk, read-only from a snapshot (a backup) or
    ``writable`` on the VM's disk itself (a restore); the password goes in a 0600 file."""
    src = NbdkitSource([], plugin="vddk", nbdkit=settings.nbdkit, what=f"vddk {file_name}")
    password = src.secret_file("password", login.password)
    args = [*([] if writable else ["-r"]), "vddk", f"libdir={settings.libdir}"]
    args.append(f"server={login.host}")
    if login.port:
        args.append(f"port={login.port}")
    args += [f"user={login.username}", f"password=+{password}"]
    if login.thumbprint:
        args.append(f"thumbprint={vddk_thumbprint(login.thumbprint)}")
    args.append(f"vm=moref={vm_moref}")
    if snapshot_moref:
        args.append(f"snapshot={snapshot_moref}")
    args += [f"transports={settings.transports}", f"file={file_name}"]
    src.argv += args
    return src


def start_vddk(src: NbdkitSource) -> NbdkitSource:
    """Start a vddk nbdkit and remove its password file: nbdkit read it at start-up."""
    try:
        return src.start()
    finally:
        with contextlib.suppress(OSError):
            (src.dir / "password").unlink()


def open_source(
    kind: str,
    file_name: str,
    *,
    locate: Callable[[str], Path],
    vddk: Callable[[], NbdkitSource],
) -> NbdkitSource:
    """A started source for one disk. ``locate`` maps ``[ds] dir/x.vmdk`` to a local path."""
    if kind not in SOURCE_KINDS:
        raise BadInput(f"--source must be one of {', '.join(SOURCE_KINDS)}, not {kind!r}")
    if kind in ("auto", "datastore"):
        try:
            src = datastore_source(locate(file_name))
        except (SendenseError, OSError) as exc:
            if kind == "datastore":
                raise SourceError(f"disk {file_name}: {exc}") from None
        else:
            return src.start()
    return start_vddk(vddk())
