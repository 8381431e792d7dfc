"""The restore side of the client alone: its sinks (descriptor + flat file through nbdkit,
the vddk command), its refusals, and one whole ``restore`` into a VM made in the lab."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import nbd
import pytest

from engine.config import VddkSettings
from engine.contract.node import RestoreStartRequest
from engine.errors import BadInput, SourceError
from engine.hub.exports.manager import ExportManager
from engine.node.runner import client_argv
from engine.node.sinks import (
    DatastoreSink,
    descriptor_text,
    flat_file_of,
    open_sink,
)
from engine.node.sources import NbdkitSource, VddkLogin, flat_extent, parse_descriptor, vddk_source
from tests.conftest import wait_for
from tests.fixtures.lab import Lab
from tests.fixtures.services import Services, free_port, processes_mentioning

CLIENT = str(Path(sys.executable).parent / "sendense-backup-client")
MiB = 1024 * 1024
PASSWORD = "s3cret-Pa55 with spaces"


def write_through(uri: str, offset: int, data: bytes) -> None:
    h = nbd.NBD()
    h.connect_uri(uri)
    try:
        h.pwrite(data, offset)
        h.flush()
    finally:
        h.shutdown()


# -- the datastore sink ----------------------------------------------------------------


def test_descriptor_is_one_flat_extent_that_the_source_side_reads_back(tmp_path: Path):
    text = descriptor_text(3 * MiB + 100, "vm-flat.vmdk")
    desc = parse_descriptor(text)
    assert desc.create_type == "monolithicFlat"
    (extent,) = desc.extents
    assert (extent.access, extent.kind, extent.file, extent.offset) == (
        "RW",
        "FLAT",
        "vm-flat.vmdk",
        0,
    )
    assert extent.sectors == (3 * MiB + 512) // 512  # rounded up to a whole sector
    path = tmp_path / "vm.vmdk"
    path.write_text(text)
    assert flat_extent(path) == tmp_path / "vm-flat.vmdk"


def test_datastore_sink_writes_descriptor_and_sparse_flat_file(tmp_path: Path):
    folder = tmp_path / "NEW"
    folder.mkdir()
    descriptor = folder / "NEW.vmdk"
    descriptor.write_text("")  # what vCenter (vcsim) leaves there: an empty file
    with open_sink(
        "datastore", "[ds] NEW/NEW.vmdk", 4 * MiB, locate=lambda name: descriptor, vddk=_no_vddk
    ) as sink:
        assert sink.plugin == "file" and "-r" not in sink.argv
        write_through(sink.uri, MiB, b"\x5a" * 4096)
    flat = folder / "NEW-flat.vmdk"
    assert flat_extent(descriptor) == flat  # the descriptor names the flat file
    assert flat.stat().st_size == 4 * MiB
    assert flat.stat().st_blocks * 512 < MiB  # sparse: only what was written
    with flat.open("rb") as f:
        f.seek(MiB)
        assert f.read(4096) == b"\x5a" * 4096
    assert sorted(p.name for p in folder.iterdir()) == ["NEW-flat.vmdk", "NEW.vmdk"]
    assert processes_mentioning(str(flat), "nbdkit") == []


def test_a_sink_that_cannot_start_leaves_the_folder_as_it_was(tmp_path: Path):
    descriptor = tmp_path / "NEW.vmdk"
    descriptor.write_text("")
    sink = DatastoreSink(descriptor, MiB, nbdkit="/nonexistent/nbdkit")
    with pytest.raises(SourceError, match="cannot run /nonexistent/nbdkit"):
        sink.start()
    assert [p.name for p in tmp_path.iterdir()] == ["NEW.vmdk"]
    assert descriptor.read_text() == ""
    assert not sink.dir.exists()


def test_datastore_target_refuses_a_folder_it_cannot_write(tmp_path: Path):
    missing = tmp_path / "not-mounted" / "x.vmdk"
    with pytest.raises(SourceError, match=r"disk \[ds\] x.vmdk: its folder .* is not writable"):
        open_sink("datastore", "[ds] x.vmdk", MiB, locate=lambda n: missing, vddk=_no_vddk)
    assert not missing.parent.exists()


def test_auto_takes_the_datastore_when_writable_and_vddk_otherwise(tmp_path: Path):
    used: list[str] = []

    def vddk() -> NbdkitSource:
        used.append("vddk")
        raise SourceError("nbdkit has no vddk plugin")

    descriptor = tmp_path / "x.vmdk"
    with open_sink("auto", "[ds] x.vmdk", MiB, locate=lambda n: descriptor, vddk=vddk) as sink:
        assert sink.plugin == "file"
    assert used == []
    gone = tmp_path / "no-such-folder" / "x.vmdk"
    with pytest.raises(SourceError, match="no vddk plugin"):
        open_sink("auto", "[ds] x.vmdk", MiB, locate=lambda n: gone, vddk=vddk)
    assert used == ["vddk"]
    assert not gone.parent.exists()


def test_unknown_target_kind_is_bad_input():
    with pytest.raises(BadInput, match="--target must be one of auto, datastore, vddk"):
        open_sink("nfs", "[ds] x.vmdk", MiB, locate=Path, vddk=_no_vddk)


def test_flat_file_is_named_as_vsphere_names_it():
    assert flat_file_of(Path("/ds/NEW/NEW_1.vmdk")) == Path("/ds/NEW/NEW_1-flat.vmdk")


def _no_vddk() -> NbdkitSource:
    raise AssertionError("the vddk sink must not be asked for")


# -- the vddk sink ---------------------------------------------------------------------


def test_vddk_sink_is_writable_on_the_vm_itself_and_keeps_the_password_off_argv():
    # VDDK cannot be installed here: the command is what can be tested.
    login = VddkLogin("vc.example", 443, "restore@vsphere.local", PASSWORD, "cd" * 32)
    sink = vddk_source(
        login,
        vm_moref="vm-77",
        snapshot_moref=None,
        file_name="[ds1] NEW/NEW.vmdk",
        settings=VddkSettings(libdir="/opt/vddk"),
        writable=True,
    )
    try:
        argv = sink.argv
        assert "-r" not in argv
        assert not any(a.startswith("snapshot=") for a in argv)
        assert not any(PASSWORD in a for a in argv)
        plugin = argv.index("vddk")
        assert argv[plugin - 1] == str(sink.socket)
        for expected in (
            "libdir=/opt/vddk",
            "server=vc.example",
            "port=443",
            "user=restore@vsphere.local",
            "thumbprint=" + ":".join(["CD"] * 32),
            "vm=moref=vm-77",
            "transports=nbdssl:nbd",
            "file=[ds1] NEW/NEW.vmdk",
        ):
            assert expected in argv[plugin:]
        secret = Path(next(a for a in argv if a.startswith("password=+"))[len("password=+") :])
        assert secret.read_text() == PASSWORD
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    finally:
        sink.close()
    assert not secret.exists()


# -- the command -----------------------------------------------------------------------


def run_restore(
    lab: Lab, vm_path: str, sources: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CLIENT, "restore", "--vmware-endpoint", lab.host, "--vmware-username", lab.user,
            "--vmware-password-file", "-", "--vmware-thumbprint", lab.thumbprint,
            "--vmware-path", vm_path, "--nbd-sources", sources, "--job-id", "restore-t-1",
            "--progress", "json", *extra,
        ],
        input=lab.password + "\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_restore_help_shares_migrates_flags():
    out = subprocess.run([CLIENT, "restore", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in (
        "--vmware-endpoint", "--vmware-username", "--vmware-password-file", "--vmware-path",
        "--nbd-sources", "--job-id", "--vmware-thumbprint", "--vmware-insecure", "--target",
        "--progress", "--log-file", "--max-rate", "exit codes",
    ):  # fmt: skip
        assert flag in out.stdout


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ("2000:nbd://127.0.0.1:9/a", "disk 2001 of the VM has no nbd source"),
        (
            "2000:nbd://127.0.0.1:9/a,2001:nbd://127.0.0.1:9/b,2002:nbd://127.0.0.1:9/c",
            "nbd source '2002:nbd://127.0.0.1:9/c': the VM has no disk with key 2002 "
            "(its disks: 2000, 2001)",
        ),
    ],
)
def test_sources_that_do_not_match_the_vms_disks_are_one_line_and_exit_2(
    lab: Lab, sources: str, message: str, tmp_path: Path
):
    # Refused before any sink opens: pgtest1's own disks are never touched.
    out = run_restore(lab, lab.pgtest1.path, sources, "--log-file", str(tmp_path / "r.log"))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == f"error: {message}"
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["type"] for line in lines] == ["error", "done"]
    assert lines[0]["message"] == message


# -- one whole restore into a VM made in the lab -----------------------------------------


@pytest.fixture
def blank_vm(lab: Lab) -> Iterator[tuple[str, dict[int, int], dict[int, Path]]]:
    """A new VM made from pgtest1's configuration, with empty disks: (path, new key → its
    source key, new key → its descriptor's local path). Destroyed afterwards."""
    from engine.vcenter import (
        create_vm,
        datastore_file_path,
        destroy_vm,
        find_vm,
        resolve_placement,
        vm_config,
    )

    with lab.connect() as vc:
        config = vm_config(vc, find_vm(vc, lab.pgtest1.path))
        placement = resolve_placement(vc, config)
        created = create_vm(vc, config, f"restore-client-{os.getpid()}", placement)
        keys = {d.key: d.source_key for d in created.disks}
        files = {d.key: datastore_file_path(vc, d.file_name) for d in created.disks}
    try:
        yield created.path, keys, files
    finally:
        with lab.connect() as vc:
            destroy_vm(vc, created.moref)


@pytest.mark.slow
def test_restore_writes_every_disk_of_the_vm_from_its_source(
    lab: Lab,
    blank_vm: tuple[str, dict[int, int], dict[int, Path]],
    export_manager: ExportManager,
    tmp_path: Path,
):
    vm_path, keys, files = blank_vm
    entries = []
    for key, source_key in keys.items():
        export = export_manager.start(
            f"src{key}", _qcow2_of(lab.pgtest1.flat[source_key], tmp_path), read_only=True
        )
        entries.append(f"{key}:{export.uri}")
    out = run_restore(lab, vm_path, ",".join(entries))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    kinds = [line["type"] for line in lines]
    assert kinds[-1] == "done" and lines[-1]["status"] == "completed"
    assert {line["disk_key"] for line in lines if line["type"] == "disk_done"} == set(keys)
    for key, source_key in keys.items():
        flat = flat_extent(files[key])
        source = lab.pgtest1.flat[source_key]
        compare = subprocess.run(
            ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(flat), str(source)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert compare.returncode == 0, compare.stdout + compare.stderr
        # Holes of the source stay holes: the flat file takes no more than the source.
        assert flat.stat().st_blocks <= source.stat().st_blocks
        assert processes_mentioning(str(flat), "nbdkit") == []


def _qcow2_of(flat: Path, folder: Path) -> Path:
    image = folder / f"{flat.stem}.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(flat), str(image)], check=True
    )
    return image


# -- the node's side -------------------------------------------------------------------


def restore_request(job_id: str, vcenter_host: str) -> dict[str, object]:
    return {
        "job_id": job_id,
        "vm_name": "pgtest1-copy",
        "vm_path": "/DatabanxDC/vm/pgtest1-copy",
        "vcenter_host": vcenter_host,
        "vcenter_user": "administrator@vsphere.local",
        "vcenter_password": PASSWORD,
        "vcenter_thumbprint": "ab" * 32,
        "nbd_host": "127.0.0.1",
        "nbd_sources": "2000:nbd://127.0.0.1:10110/restore-x-disk2000",
        "max_rate_mib": 5,
    }


def test_node_runs_restore_with_the_sources_at_its_tunnel_host(tmp_path: Path):
    req = RestoreStartRequest.model_validate(restore_request("restore-x-1", "vc:443"))
    argv = client_argv(req, tmp_path / "r.log", "127.0.0.2")
    assert argv[argv.index("restore") + 1 :][:4] == [
        "--nbd-sources",
        "2000:nbd://127.0.0.2:10110/restore-x-disk2000",
        "--target",
        "auto",
    ]
    assert argv[argv.index("--vmware-password-file") + 1] == "-"
    assert argv[argv.index("--max-rate") + 1] == "5.0"
    assert "--nbd-targets" not in argv and "--backup-type" not in argv
    assert PASSWORD not in " ".join(argv)


def test_node_restore_route_is_followed_through_the_job_routes(
    services_factory: Callable[..., Services],
):
    svc = services_factory(hub=False)
    body = restore_request("restore-pgtest1-1", f"127.0.0.1:{free_port()}")  # nothing listens
    with svc.node_client() as node:
        r = node.post("/api/v1/restores", json=body)
        assert r.status_code == 202, r.text
        assert node.post("/api/v1/restores", json=body).status_code == 409
        job = wait_for(
            lambda: (
                (j := node.get("/api/v1/backup/restore-pgtest1-1").json())["exit_code"] is not None
                and j
            ),
            timeout=60,
            what="the restore client to exit",
        )
        assert job["exit_code"] == 3  # no vCenter there
        assert job["log_file"].endswith("restore-restore-pgtest1-1.log")
        assert node.delete("/api/v1/backup/restore-pgtest1-1").status_code == 409
    assert PASSWORD not in svc.node.log()
    assert PASSWORD not in Path(job["log_file"]).read_text()
