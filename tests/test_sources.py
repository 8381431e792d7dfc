"""Disk sources: VMDK descriptors, nbdkit on the flat file, and the vddk command."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import nbd
import pytest

from engine.config import VddkSettings
from engine.node.sources import (
    SourceError,
    VddkLogin,
    check_vddk,
    datastore_source,
    flat_extent,
    open_source,
    parse_descriptor,
    vddk_source,
)
from tests.conftest import wait_for

DESCRIPTOR = """\
# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=ffffffff
createType="{create_type}"

# Extent description
RW {sectors} {kind} "{flat}" {offset}

# The Disk Data Base
ddb.adapterType = "lsilogic"
"""
PASSWORD = "s3cret-Pa55 with spaces"


def write_disk(folder: Path, data: bytes, create_type: str = "vmfs", kind: str = "VMFS") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "disk-flat.vmdk").write_bytes(data)
    desc = folder / "disk.vmdk"
    desc.write_text(
        DESCRIPTOR.format(
            create_type=create_type, sectors=len(data) // 512, kind=kind, flat="disk-flat.vmdk",
            offset="0" if kind != "VMFS" else "",
        )
    )  # fmt: skip
    return desc


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat_line = Path(f"/proc/{pid}/stat").read_text()
    return stat_line.split(") ", 1)[1][0] != "Z"


def test_parse_monolithic_flat():
    d = parse_descriptor(
        DESCRIPTOR.format(
            create_type="monolithicFlat", sectors=2048, kind="FLAT", flat="a b-flat.vmdk", offset=0
        )
    )
    assert d.create_type == "monolithicFlat"
    assert d.extents[0].sectors == 2048
    assert d.extents[0].file == "a b-flat.vmdk"
    assert d.extents[0].kind == "FLAT"


def test_not_a_descriptor():
    with pytest.raises(SourceError, match="no extent lines"):
        parse_descriptor("hello\n")


@pytest.mark.parametrize("create_type", ["monolithicSparse", "streamOptimized", "seSparse"])
def test_sparse_types_are_refused(tmp_path: Path, create_type: str):
    desc = write_disk(tmp_path, b"\0" * 4096, create_type=create_type, kind="SPARSE")
    with pytest.raises(SourceError, match=f"createType {create_type} is sparse.*--source vddk"):
        flat_extent(desc)


def test_binary_sparse_file_is_refused(tmp_path: Path):
    path = tmp_path / "x.vmdk"
    path.write_bytes(b"KDMV" + b"\0" * 508)
    with pytest.raises(SourceError, match="sparse VMDK"):
        flat_extent(path)


def test_datastore_source_serves_the_flat_file_read_only(tmp_path: Path):
    data = os.urandom(1 << 20)
    desc = write_disk(tmp_path / "ds" / "vm", data)
    src = datastore_source(desc)
    assert src.argv[:2] == ["nbdkit", "--exit-with-parent"]
    assert "-r" in src.argv
    with src.start() as s:
        assert s.proc is not None
        pid = s.proc.pid
        h = nbd.NBD()
        h.connect_uri(s.uri)
        assert h.is_read_only()
        assert h.pread(len(data), 0) == data
        h.shutdown()
        assert stat.S_IMODE(s.dir.stat().st_mode) == 0o700
    assert not alive(pid)
    assert not s.dir.exists()


def test_nbdkit_dies_with_its_parent(tmp_path: Path):
    desc = write_disk(tmp_path / "vm", b"\1" * 4096)
    script = textwrap.dedent(
        f"""
        import sys, time
        from engine.node.sources import datastore_source
        s = datastore_source(__import__("pathlib").Path({str(desc)!r})).start()
        print(s.proc.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert alive(pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    wait_for(lambda: not alive(pid), what="nbdkit to exit with its parent")


def test_unreadable_flat_file(tmp_path: Path):
    desc = write_disk(tmp_path, b"\0" * 4096)
    (tmp_path / "disk-flat.vmdk").unlink()
    with pytest.raises(SourceError, match="not readable"):
        datastore_source(desc)


def login() -> VddkLogin:
    return VddkLogin("vc.example", 443, "backup@vsphere.local", PASSWORD, "ab" * 32)


def test_vddk_command_keeps_the_password_off_argv():
    settings = VddkSettings(libdir="/opt/vddk", transports="nbdssl:nbd")
    src = vddk_source(
        login(), vm_moref="vm-42", snapshot_moref="snapshot-7", file_name="[ds1] vm/disk.vmdk",
        settings=settings,
    )  # fmt: skip
    try:
        argv = src.argv
        assert not any(PASSWORD in a for a in argv)
        assert argv[argv.index("-r") + 1] == "vddk"
        pw = next(a for a in argv if a.startswith("password="))
        path = Path(pw.removeprefix("password=+"))
        assert pw.startswith("password=+") and path.read_text() == PASSWORD
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for expected in [
            "libdir=/opt/vddk", "server=vc.example", "port=443", "user=backup@vsphere.local",
            "thumbprint=" + ":".join(["AB"] * 32), "vm=moref=vm-42", "snapshot=snapshot-7",
            "transports=nbdssl:nbd", "file=[ds1] vm/disk.vmdk",
        ]:  # fmt: skip
            assert expected in argv
        assert PASSWORD not in repr(login())
    finally:
        src.close()
    assert not path.exists()


def test_missing_vddk_plugin_is_one_clear_line():
    # This machine's nbdkit has no vddk plugin (VDDK cannot be redistributed): a real fault.
    with pytest.raises(SourceError, match=r"nbdkit has no vddk plugin .*--source datastore"):
        check_vddk(VddkSettings())


def test_missing_nbdkit_binary():
    with pytest.raises(SourceError, match="is not installed"):
        check_vddk(VddkSettings(nbdkit="/nonexistent/nbdkit"))


def test_missing_vddk_libdir(tmp_path: Path):
    # A stand-in nbdkit whose plugin folder holds a vddk plugin: the real nbdkit here has
    # none, so this is the only way to reach the libdir check.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "nbdkit-vddk-plugin.so").touch()
    fake = tmp_path / "nbdkit"
    fake.write_text(f"#!/bin/sh\necho plugindir={plugins}\n")
    fake.chmod(0o755)
    with pytest.raises(SourceError, match="VDDK is not installed at /nowhere"):
        check_vddk(VddkSettings(nbdkit=str(fake), libdir="/nowhere"))


def test_auto_prefers_a_readable_datastore(tmp_path: Path):
    desc = write_disk(tmp_path / "vm", b"\2" * 4096)
    used_vddk = []
    with open_source(
        "auto", "[ds] vm/disk.vmdk", locate=lambda name: desc, vddk=lambda: used_vddk.append(1)
    ) as src:  # type: ignore[arg-type,return-value]
        assert "file" in src.argv
    assert not used_vddk


def test_auto_falls_back_to_vddk_and_datastore_does_not(tmp_path: Path):
    missing = tmp_path / "nope.vmdk"

    def no_vddk():
        check_vddk(VddkSettings())
        raise AssertionError("unreachable")

    with pytest.raises(SourceError, match="no vddk plugin"):
        open_source("auto", "[ds] nope.vmdk", locate=lambda name: missing, vddk=no_vddk)
    with pytest.raises(SourceError, match=r"disk \[ds\] nope.vmdk: cannot read VMDK"):
        open_source("datastore", "[ds] nope.vmdk", locate=lambda name: missing, vddk=no_vddk)
