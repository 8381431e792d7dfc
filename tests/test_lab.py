"""The lab and the vCenter commands through the installed ``sendense`` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.lab.launcher import source_hash
from engine.vcenter import DiskInfo, VMInfo
from engine.vcenter.contexts import upsert_context
from tests.conftest import free_port
from tests.fixtures.lab import BUILD_CACHE, Lab, LabRegistration

SENDENSE = str(Path(sys.executable).with_name("sendense"))
MiB = 1024 * 1024


def sendense(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SENDENSE, *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(") ", 1)[1][0] != "Z"


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def registered_contexts() -> list[Any]:
    """The vm_replication_contexts rows (with disks) of this test's database."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from engine.config import get_settings
    from engine.db.models import VMReplicationContext
    from engine.db.session import session_scope

    get_settings.cache_clear()
    with session_scope(get_settings().db_url) as s:
        query = select(VMReplicationContext).options(selectinload(VMReplicationContext.disks))
        return list(s.scalars(query))


def test_lab_up_registers_is_idempotent_and_down_leaves_nothing(
    lab: Lab, sendense_home: Path
) -> None:
    # The session's lab fixture has built the binary: reuse it (keyed by source hash).
    name = f"sendense-lab-{source_hash()}"
    (sendense_home / "lab" / "bin").mkdir(parents=True)
    shutil.copy2(BUILD_CACHE / name, sendense_home / "lab" / "bin" / name)
    port = str(free_port())

    up = sendense("lab", "up", "--port", port, "--vms", "2", "--disk-mib", "2")
    assert up.returncode == 0, up.stderr
    pid = json.loads((sendense_home / "lab" / "run" / "lab.json").read_text())["pid"]
    try:
        password_file = sendense_home / "lab" / "identity" / "password"
        assert f"https://127.0.0.1:{port}/sdk" in up.stdout
        assert "administrator@vsphere.local" in up.stdout
        assert f"in {password_file}" in up.stdout
        assert password_file.stat().st_mode & 0o777 == 0o600
        assert password_file.read_text().strip() not in up.stdout + up.stderr
        again = sendense("lab", "up")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert json.loads((sendense_home / "lab" / "run" / "lab.json").read_text())["pid"] == pid

        contexts = registered_contexts()
        assert [(c.vm_name, c.vm_path) for c in contexts] == [("pgtest1", "/DatabanxDC/vm/pgtest1")]
        assert contexts[0].credential_id is not None  # registered once, not twice
        assert [(d.disk_key, d.capacity_bytes) for d in contexts[0].disks] == [
            (2000, 2 * MiB),
            (2001, 3 * MiB),
        ]
        inv = json.loads(sendense("inventory", str(contexts[0].credential_id), "--json").stdout)
        assert "/DatabanxDC/vm/Prod/Web Tier/web 01" in {v["path"] for v in inv["vms"]}
        assert sendense("lab", "status").returncode == 0
        wrote = sendense(
            "lab", "write", "pgtest1", "--disk", "2000", "--offset", "0", "--length", "4096"
        )
        assert wrote.returncode == 0 and wrote.stdout.strip().endswith("/1")
        zeroed = sendense(
            "lab", "write", "pgtest1", "--disk", "2000", "--offset", "0", "--length", "4096",
            "--zero",
        )  # fmt: skip
        assert zeroed.returncode == 0 and zeroed.stdout.strip().endswith("/2")
        bad = sendense(
            "lab", "write", "pgtest1", "--disk", "2999", "--offset", "0", "--length", "1"
        )
        assert bad.returncode != 0
        assert bad.stderr.strip() == "error: lab write refused: pgtest1 has no disk with key 2999"
    finally:
        down = sendense("lab", "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not alive(pid)
    assert processes_mentioning(str(sendense_home / "lab")) == []
    assert not (sendense_home / "lab" / "run").exists()
    assert sendense("lab", "status").returncode == 1


def test_vcenter_add_checks_the_login(lab: Lab, sendense_home: Path) -> None:
    base = ["vcenter", "add", "--host", lab.host, "--username", lab.user, "--password-stdin"]
    good = sendense(*base, "--trust", "--name", "good", stdin=lab.password + "\n")
    assert good.returncode == 0, good.stderr
    good_id = good.stdout.strip()
    assert lab.thumbprint in good.stderr  # says what it trusted

    wrong = sendense(*base, "--trust", "--name", "bad", stdin="wrong-password\n")
    assert wrong.returncode == 3
    last = wrong.stderr.strip().splitlines()[-1]
    assert last == f"error: vCenter {lab.host} refused the login for {lab.user}"
    assert "wrong-password" not in wrong.stderr

    mitm = sendense(*base, "--thumbprint", "cd" * 32, stdin=lab.password + "\n")
    assert mitm.returncode == 3
    assert "cd" * 32 in mitm.stderr and lab.thumbprint in mitm.stderr
    assert len(mitm.stderr.strip().splitlines()) == 1

    unchecked = sendense(
        *base,
        "--thumbprint",
        lab.thumbprint,
        "--no-verify",
        "--name",
        "stale",
        stdin="stale-password\n",
    )
    assert unchecked.returncode == 0, unchecked.stderr
    stale = sendense("vcenter", "test", unchecked.stdout.strip())
    assert stale.returncode == 3 and "refused the login" in stale.stderr
    assert "stale-password" not in stale.stderr

    ok = sendense("vcenter", "test", good_id)
    assert ok.returncode == 0 and ok.stdout.startswith(f"ok: {lab.host}")
    from engine.cli.common import db_session
    from engine.credentials import VMwareCredentialService

    with db_session() as session:
        stored = VMwareCredentialService(session, Path("unused")).list()
        assert sorted(r.credential_name for r in stored) == ["good", "stale"]
    assert os.environ["SENDENSE_HOME"] == str(sendense_home)


def test_vm_add_creates_then_refreshes_and_lists(lab_registered: LabRegistration) -> None:
    cred = str(lab_registered.credential_id)
    path = "/DatabanxDC/vm/Prod/Web Tier/web 01"
    first = sendense("vm", "add", "--vcenter", cred, "--path", path)
    assert first.returncode == 0, first.stderr
    ctx = first.stdout.splitlines()[0]
    assert ctx.startswith("ctx-web-01-")
    again = sendense("vm", "add", "--vcenter", cred, "--path", path.lstrip("/"))
    assert again.stdout.splitlines()[0] == ctx  # refreshed, not duplicated
    vms = {v["vm_name"]: v for v in json.loads(sendense("vm", "list", "--json").stdout)}
    assert set(vms) == {"pgtest1", "web 01"}
    assert vms["web 01"]["context_id"] == ctx
    assert vms["web 01"]["credential_id"] == lab_registered.credential_id
    assert [d["disk_key"] for d in vms["web 01"]["disks"]] == [2000]
    missing = sendense("vm", "add", "--vcenter", cred, "--path", "/DatabanxDC/vm/nope")
    assert missing.returncode == 3
    assert (
        missing.stderr.strip()
        == f"error: no VM at '/DatabanxDC/vm/nope' on vCenter {lab_registered.lab.host}"
    )


def _vm(disks: list[tuple[int, int]]) -> VMInfo:
    return VMInfo(
        name="db 1",
        path="/DC/vm/db 1",
        moref="vm-7",
        power_state="poweredOn",
        guest_os="linux",
        cpus=2,
        memory_mb=1024,
        cbt_enabled=True,
        has_snapshots=False,
        datacenter="DC",
        disks=[
            DiskInfo(
                key=k,
                label=f"Hard disk {k}",
                capacity_bytes=size,
                file_name=f"[ds] db/{k}.vmdk",
                datastore="ds",
                controller_key=1000,
                unit_number=k - 2000,
                change_id="u/1",
            )
            for k, size in disks
        ],
    )


@pytest.mark.usefixtures("sendense_home")
def test_upsert_context_keeps_restore_point_change_ids(settings) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from engine.db.models import VMReplicationContext
    from engine.db.session import session_scope, upgrade

    upgrade(settings.db_url)
    with session_scope(settings.db_url) as s:
        ctx = upsert_context(
            s, _vm([(2000, MiB), (2001, 2 * MiB)]), credential_id=None, vcenter_host="vc"
        )
        assert ctx.context_id.startswith("ctx-db-1-")
        ctx.disks[0].change_id = "backup-base/5"
    with session_scope(settings.db_url) as s:
        again = upsert_context(
            s, _vm([(2000, 4 * MiB), (2002, MiB)]), credential_id=None, vcenter_host="vc"
        )
        assert [(d.disk_key, d.capacity_bytes, d.change_id) for d in again.disks] == [
            (2000, 4 * MiB, "backup-base/5"),
            (2002, MiB, None),
        ]
    with session_scope(settings.db_url) as s:
        assert len(list(s.scalars(select(VMReplicationContext)))) == 1


def test_inventory_tree_for_people(lab: Lab) -> None:
    from rich.console import Console

    from engine.cli.inventory import render_tree
    from engine.vcenter import get_inventory

    with lab.connect() as vc:
        inv = get_inventory(vc)
    console = Console(width=200, record=True)
    console.print(render_tree(inv))
    lines = console.export_text().splitlines()
    assert lines[0] == lab.host
    dc = next(i for i, line in enumerate(lines) if "DatabanxDC Datacenter" in line)
    web = next(i for i, line in enumerate(lines) if "web 01 (" in line)
    tier = next(i for i, line in enumerate(lines) if "Web Tier Folder" in line)
    assert dc < tier < web  # nested under its folders
    assert "disks 2000:8M, 2001:13M" in next(line for line in lines if "pgtest1 (" in line)


def test_build_is_keyed_by_the_go_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.lab import launcher

    source = tmp_path / "go"
    shutil.copytree(launcher.GO_SOURCE, source)
    monkeypatch.setattr(launcher, "GO_SOURCE", source)
    before = launcher.source_hash()
    cached = tmp_path / "bin" / f"sendense-lab-{before}"
    cached.parent.mkdir()
    cached.write_text("cached build")
    assert launcher.build(tmp_path, tmp_path / "bin") == cached  # reused, go not run
    (source / "main.go").write_text((source / "main.go").read_text() + "\n// changed\n")
    assert launcher.source_hash() != before
