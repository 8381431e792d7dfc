"""Every reason an incremental falls back to a full, through the real hub, node, client
and a vcsim lab: the disk (or the whole job) is copied whole, the reason is in the job,
its log, ``backup start --wait``/``backup show`` and, when the hub can know it first, the
preview; and the point reads exactly as the source (a full disk has no backing file).

Each test has a lab, hub and node of its own (a grown or added disk changes the VM, and
a VM's points decide what the next backup is), on the test's own data folder.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine.config import Settings
from engine.db.models import BackupDisk, BackupJob
from engine.db.session import session_scope, upgrade
from engine.lab.launcher import start as start_lab
from engine.lab.launcher import stop as stop_lab
from engine.lab.setup import register
from engine.vcenter import connect
from tests.conftest import free_port
from tests.fixtures.backups import SLOW_MIB_S, MiB
from tests.fixtures.lab import BUILD_CACHE, LAB_DISK_MIB, Lab, LabRegistration, LabVM, _lab_vm
from tests.fixtures.services import Services

pytestmark = pytest.mark.slow

KiB = 1024
PG = "/DatabanxDC/vm/pgtest1"
WEB = "/DatabanxDC/vm/Prod/Web Tier/web 01"
FS = "/DatabanxDC/vm/fstest1"


@dataclass
class Site:
    svc: Services
    lab: Lab
    reg: LabRegistration
    db_url: str

    def vm(self, path: str = PG) -> LabVM:
        """The VM's disks and flat files as the lab has them now (a disk may be new)."""
        with self.lab.connect() as vc:
            return _lab_vm(vc, path)


@pytest.fixture
def site(
    tmp_path: Path, settings: Settings, services_factory: Callable[..., Services]
) -> Iterator[Site]:
    lab_dir = tmp_path / "lab"
    info = start_lab(lab_dir, port=free_port(), disk_mib=LAB_DISK_MIB, vms=1, bin_dir=BUILD_CACHE)
    svc: Services | None = None
    try:
        with connect(info.host, info.user, info.password, thumbprint=info.thumbprint) as vc:
            lab = Lab(info, _lab_vm(vc, PG), _lab_vm(vc, WEB), _lab_vm(vc, FS))
        upgrade(settings.db_url)
        with session_scope(settings.db_url) as session:
            r = register(session, settings, info)
        reg = LabRegistration(lab, r.credential_id, r.repository_id, r.context_id)
        # Wide enough that no reason is wrapped in the CLI's tables.
        svc = services_factory(extra_env={"COLUMNS": "4000"})
        yield Site(svc, lab, reg, settings.db_url)
    finally:
        if svc is not None:
            svc.stop()  # before the lab: nothing of theirs talks to it any more
        stop_lab(lab_dir)


# --- driving the hub ---------------------------------------------------------------------


def _request(site: Site, vm: str, backup_type: str, repo: int | None) -> dict[str, Any]:
    return {
        "vm_name": vm,
        "repository_id": repo or site.reg.repository_id,
        "backup_type": backup_type,
    }


def preview(
    site: Site, backup_type: str, *, vm: str = "pgtest1", repo: int | None = None
) -> dict[str, Any]:
    with site.svc.client() as api:
        r = api.post("/api/v1/backups/preview", json=_request(site, vm, backup_type, repo))
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def launch(site: Site, backup_type: str, *, vm: str = "pgtest1", **extra: Any) -> dict[str, Any]:
    with site.svc.client() as api:
        r = api.post("/api/v1/backups", json={**_request(site, vm, backup_type, None), **extra})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def backup(site: Site, backup_type: str, *, vm: str = "pgtest1") -> dict[str, Any]:
    """A completed job through the API."""
    job = site.svc.wait_job(launch(site, backup_type, vm=vm)["backup_id"])
    assert job["status"] == "completed", job
    return job


def cli_backup(
    site: Site, backup_type: str, *, vm: str = "pgtest1", repo: int | None = None
) -> tuple[dict[str, Any], str]:
    """``sendense backup start --wait``: the completed job and what the command printed."""
    run = site.svc.sendense(
        "backup", "start", vm, "--repo", str(repo or site.reg.repository_id),
        "--type", backup_type, "--wait",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    found = re.search(r"started (\S+):", run.stdout)
    assert found, run.stdout
    return job_of(site, found.group(1)), run.stdout


def job_of(site: Site, backup_id: str) -> dict[str, Any]:
    with site.svc.client() as api:
        job: dict[str, Any] = api.get(f"/api/v1/backups/{backup_id}").json()
    return job


def failed_backup(site: Site) -> str:
    """A job that fails mid-copy (one of its qemu-nbd exports killed): the newest job."""
    answer = launch(site, "full", max_rate_mib=SLOW_MIB_S)
    victim = answer["disk_results"][0]["qemu_nbd_pid"]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    job = site.svc.wait_job(answer["backup_id"])
    assert job["status"] == "failed", job
    return str(answer["backup_id"])


def _flat(text: str) -> str:
    return " ".join(text.split())


# --- what a point must be ----------------------------------------------------------------


def backing(qcow2: Path) -> str | None:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(qcow2)],
        capture_output=True,
        text=True,
        check=True,
    )
    found: str | None = json.loads(info.stdout).get("backing-filename")
    return found


def virtual_size(qcow2: Path) -> int:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(qcow2)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(json.loads(info.stdout)["virtual-size"])


def assert_point(
    site: Site,
    job: dict[str, Any],
    expected: dict[int, str | None],
    *,
    parent: str | None = None,
    path: str = PG,
    printed: str | None = None,
) -> None:
    """The job completed with each disk as ``expected`` (a fallback reason: a full with
    exactly that reason; None: an incremental on ``parent``), shown in ``backup show``
    (and ``printed``, a ``--wait``'s output) and in the job's log (the client writes the
    reasons it found and those the hub handed it); and every disk
    compares identical with the lab's flat file now."""
    assert job["status"] == "completed", job
    disks = {d["disk_key"]: d for d in job["disks"]}
    assert set(disks) == set(expected)
    incremental = any(reason is None for reason in expected.values())
    assert job["backup_type"] == ("incremental" if incremental else "full")
    assert job["parent_backup_id"] == (parent if incremental else None)
    with site.svc.client() as api:
        log = "\n".join(api.get(f"/api/v1/backups/{job['backup_id']}/log").json()["lines"])
    shown = site.svc.sendense("backup", "show", job["backup_id"])
    assert shown.returncode == 0, shown.stderr
    vm = site.vm(path)
    for key, reason in expected.items():
        disk, qcow2 = disks[key], Path(disks[key]["qcow2_path"])
        if reason is None:
            assert (disk["mode"], disk["fallback_reason"]) == ("incremental", None), disk
            found = backing(qcow2)
            assert found is not None and not found.startswith("/")
            assert str((qcow2.parent / found).resolve()) == disk["parent_qcow2_path"]
        else:
            assert (disk["mode"], disk["fallback_reason"]) == ("full", reason), disk
            assert disk["parent_qcow2_path"] is None
            assert backing(qcow2) is None  # stands alone
            assert reason in log, log  # the hub's reasons too: it hands them to the client
            assert reason in _flat(shown.stdout), shown.stdout
            if printed is not None:
                assert reason in _flat(printed), printed
        flat = vm.flat[key]
        assert virtual_size(qcow2) == flat.stat().st_size
        compare = subprocess.run(
            ["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(qcow2), str(flat)],
            capture_output=True,
            text=True,
        )
        assert compare.returncode == 0, compare.stdout + compare.stderr


def assert_preview(
    answer: dict[str, Any], expected: dict[int, str | None], *, parent: str | None = None
) -> None:
    """The preview says the same as the job will: per disk full with the reason, or
    incremental on ``parent``."""
    disks = {d["disk_key"]: d for d in answer["disks"]}
    assert {k: d["reason"] for k, d in disks.items()} == expected, answer
    incremental = any(reason is None for reason in expected.values())
    assert answer["backup_type"] == ("incremental" if incremental else "full"), answer
    assert answer["parent_backup_id"] == (parent if incremental else None)
    for key, reason in expected.items():
        assert disks[key]["mode"] == ("full" if reason else "incremental")


def guest_writes(site: Site, vm: str = "pgtest1", keys: tuple[int, ...] = (2000, 2001)) -> None:
    for key in keys:
        site.lab.write(vm, key, 1 * MiB, 64 * KiB)
        site.lab.write(vm, key, 3 * MiB - 4 * KiB, 8 * KiB)  # across a chunk boundary
    site.lab.write(vm, keys[0], 0, 64 * KiB, zero=True)


def set_rows(site: Site, backup_id: str, **values: Any) -> None:
    with session_scope(site.db_url) as s:
        job = s.get(BackupJob, backup_id)
        assert job is not None
        for name, value in values.items():
            setattr(job, name, value)


# --- the reasons -------------------------------------------------------------------------


def test_cbt_off_is_a_full_then_enable_cbt_makes_the_next_auto_incremental(site: Site) -> None:
    with site.svc.client() as api:
        added = api.post("/api/v1/vms", json={"vcenter_id": site.reg.credential_id, "path": WEB})
    assert added.status_code == 200, added.text
    off = f"CBT is off on web 01: sendense vm enable-cbt {WEB}"
    answer = preview(site, "incremental", vm="web 01")
    assert answer["cbt_enabled"] is False and answer["reason"] == off
    assert_preview(answer, {2000: off})
    first, printed = cli_backup(site, "incremental", vm="web 01")
    assert first["requested_type"] == "incremental"
    assert_point(site, first, {2000: off}, path=WEB, printed=printed)

    on = site.svc.sendense("vm", "enable-cbt", WEB)
    assert on.returncode == 0, on.stderr
    # The full taken with CBT off has no change id to build on: one more full, said so.
    no_id = f"disk 2000 of {first['backup_id']} has no change id: full copy"
    assert_preview(preview(site, "auto", vm="web 01"), {2000: no_id})
    second = backup(site, "auto", vm="web 01")
    assert_point(site, second, {2000: no_id}, path=WEB)

    guest_writes(site, "web 01", (2000,))
    assert_preview(preview(site, "auto", vm="web 01"), {2000: None}, parent=second["backup_id"])
    third = backup(site, "auto", vm="web 01")
    assert_point(site, third, {2000: None}, parent=second["backup_id"], path=WEB)


def test_a_reset_change_tracking_is_found_by_the_client(site: Site) -> None:
    full = backup(site, "full")
    guest_writes(site)
    site.lab.reset_tracking("pgtest1", 2001)
    # The hub cannot know: vCenter says it only once the snapshot exists.
    assert_preview(preview(site, "incremental"), {2000: None, 2001: None}, parent=full["backup_id"])
    job, printed = cli_backup(site, "incremental")
    reason = job["disks"][1]["fallback_reason"] or ""
    assert reason.startswith("disk 2001: change tracking was reset"), job
    assert_point(
        site, job, {2000: None, 2001: reason}, parent=full["backup_id"], printed=printed
    )  # fmt: skip


def test_a_change_id_vcenter_never_issued_is_its_file_fault(site: Site) -> None:
    full = backup(site, "full")
    guest_writes(site)
    with session_scope(site.db_url) as s:
        disk = s.scalar(
            select(BackupDisk).where(
                BackupDisk.backup_job_id == full["backup_id"], BackupDisk.disk_key == 2000
            )
        )
        assert disk is not None and disk.change_id
        uuid, seq = disk.change_id.rsplit("/", 1)
        unknown = f"{uuid}/{int(seq) + 1000}"  # the disk's epoch, a sequence from the future
        disk.change_id = unknown
    assert_preview(preview(site, "incremental"), {2000: None, 2001: None}, parent=full["backup_id"])
    job, printed = cli_backup(site, "incremental")
    reason = job["disks"][0]["fallback_reason"] or ""
    assert reason.startswith(f"disk 2000: vCenter refused change id {unknown} ("), job
    assert "Error caused by file" in reason
    assert_point(
        site, job, {2000: reason, 2001: None}, parent=full["backup_id"], printed=printed
    )  # fmt: skip


def test_a_grown_disk_is_copied_whole_the_others_build_on_the_parent(site: Site) -> None:
    full = backup(site, "full")
    site.lab.resize_disk("pgtest1", 2000, LAB_DISK_MIB + 4)
    guest_writes(site)
    site.lab.write("pgtest1", 2000, (LAB_DISK_MIB + 4) * MiB - 1, 1)  # the new last byte
    grew = (
        f"disk 2000 grew from {LAB_DISK_MIB} MiB to {LAB_DISK_MIB + 4} MiB "
        f"since {full['backup_id']}: full copy"
    )
    expected: dict[int, str | None] = {2000: grew, 2001: None}
    assert_preview(preview(site, "incremental"), expected, parent=full["backup_id"])
    job, printed = cli_backup(site, "incremental")
    assert_point(site, job, expected, parent=full["backup_id"], printed=printed)


def test_a_disk_added_since_the_parent_is_copied_whole(site: Site) -> None:
    full = backup(site, "full")
    added = site.lab.add_disk("pgtest1", 4)
    assert added.key == 2002
    guest_writes(site)
    site.lab.write("pgtest1", 2002, 2 * MiB, 64 * KiB)
    new = f"disk 2002 was added since {full['backup_id']}: full copy"
    expected: dict[int, str | None] = {2000: None, 2001: None, 2002: new}
    assert_preview(preview(site, "auto"), expected, parent=full["backup_id"])
    job, printed = cli_backup(site, "auto")
    assert_point(site, job, expected, parent=full["backup_id"], printed=printed)
    # From then on the new disk has a parent too.
    site.lab.write("pgtest1", 2002, 3 * MiB, 64 * KiB)
    again = backup(site, "auto")
    assert_point(site, again, dict.fromkeys(expected), parent=job["backup_id"])


def test_a_point_whose_files_are_gone_is_passed_over(site: Site) -> None:
    full = backup(site, "full")
    guest_writes(site)
    lost = backup(site, "auto")
    Path(lost["disks"][1]["qcow2_path"]).unlink()
    guest_writes(site)
    # The newest point cannot be a parent: the one before it can.
    assert_preview(preview(site, "auto"), {2000: None, 2001: None}, parent=full["backup_id"])
    job = backup(site, "auto")
    assert_point(site, job, {2000: None, 2001: None}, parent=full["backup_id"])


def test_the_only_point_with_a_file_gone_gives_a_full(site: Site) -> None:
    full = backup(site, "full")
    Path(full["disks"][0]["qcow2_path"]).unlink()
    guest_writes(site)
    gone = f"the files of the last point {full['backup_id']} are gone (disk 2000): full copy"
    answer = preview(site, "incremental")
    assert answer["reason"] == gone
    assert_preview(answer, {2000: gone, 2001: gone})
    job, printed = cli_backup(site, "incremental")
    assert_point(site, job, {2000: gone, 2001: gone}, printed=printed)


def test_a_failed_job_is_no_parent(site: Site) -> None:
    failed_backup(site)  # no good point at all: a full, said so
    none_yet = "no restore point of this VM yet: full copy"
    assert_preview(preview(site, "auto"), {2000: none_yet, 2001: none_yet})
    full, printed = cli_backup(site, "auto")
    assert_point(site, full, {2000: none_yet, 2001: none_yet}, printed=printed)

    guest_writes(site)
    failed_backup(site)  # the newest job failed: auto builds on the last good point
    assert_preview(preview(site, "auto"), {2000: None, 2001: None}, parent=full["backup_id"])
    job = backup(site, "auto")
    assert_point(site, job, {2000: None, 2001: None}, parent=full["backup_id"])


def _flip_a_byte(qcow2: Path) -> None:
    """Corrupt one byte of data the overlay itself holds (not its parent's)."""
    mapped = subprocess.run(
        ["qemu-img", "map", "--output=json", "-f", "qcow2", str(qcow2)],
        capture_output=True,
        text=True,
        check=True,
    )
    own = [e for e in json.loads(mapped.stdout) if e["data"] and e["depth"] == 0 and "offset" in e]
    assert own, mapped.stdout
    with qcow2.open("r+b") as f:
        f.seek(own[0]["offset"])
        byte = f.read(1)
        f.seek(own[0]["offset"])
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_damaged_point_is_passed_over_and_none_left_gives_a_full(site: Site) -> None:
    full = backup(site, "full")
    guest_writes(site)
    damaged = backup(site, "auto")
    _flip_a_byte(Path(damaged["disks"][0]["qcow2_path"]))
    verify = site.svc.sendense("verify", damaged["backup_id"])
    assert verify.returncode == 13, verify.stdout + verify.stderr
    guest_writes(site)
    assert_preview(preview(site, "auto"), {2000: None, 2001: None}, parent=full["backup_id"])
    job = backup(site, "auto")
    assert_point(site, job, {2000: None, 2001: None}, parent=full["backup_id"])

    for point in (full["backup_id"], job["backup_id"]):  # as a verify would mark them
        set_rows(site, point, verification="damaged")
    bad = f"the last point {job['backup_id']} is damaged (verify found it so): full copy"
    assert_preview(preview(site, "incremental"), {2000: bad, 2001: bad})
    last, printed = cli_backup(site, "incremental")
    assert_point(site, last, {2000: bad, 2001: bad}, printed=printed)


def test_another_repository_starts_with_a_full(site: Site, tmp_path: Path) -> None:
    first = backup(site, "full")
    added = site.svc.sendense("repo", "add", "--name", "second", "--path", str(tmp_path / "r2"))
    assert added.returncode == 0, added.stderr
    found = re.search(r"repository (\d+) \(second\)", added.stdout)
    assert found, added.stdout
    repo = int(found.group(1))
    guest_writes(site)
    other = (
        f"the last point {first['backup_id']} is in repository "
        f"{site.reg.repository_id}, not {repo}: full copy"
    )
    assert_preview(preview(site, "incremental", repo=repo), {2000: other, 2001: other})
    job, printed = cli_backup(site, "incremental", repo=repo)
    assert_point(site, job, {2000: other, 2001: other}, printed=printed)
    assert Path(job["disks"][0]["qcow2_path"]).is_relative_to(tmp_path / "r2")

    guest_writes(site)  # the second repository's chain goes on from its own full
    nxt, _ = cli_backup(site, "auto", repo=repo)
    assert_point(site, nxt, {2000: None, 2001: None}, parent=job["backup_id"])


def test_incremental_for_a_vm_without_points_is_a_full_said_so(site: Site) -> None:
    none_yet = "no restore point of this VM yet: full copy"
    answer = preview(site, "incremental")
    assert answer["requested_type"] == "incremental" and answer["reason"] == none_yet
    assert_preview(answer, {2000: none_yet, 2001: none_yet})
    shown = site.svc.sendense(
        "backup", "preview", "pgtest1", "--repo", "1", "--type", "incremental"
    )
    assert shown.returncode == 0, shown.stderr
    assert "will be: full" in shown.stdout and none_yet in _flat(shown.stdout)
    job, printed = cli_backup(site, "incremental")
    assert job["requested_type"] == "incremental"
    assert_point(site, job, {2000: none_yet, 2001: none_yet}, printed=printed)


def test_a_point_whose_parent_file_is_gone_is_no_parent_either(site: Site) -> None:
    full = backup(site, "full")
    guest_writes(site)
    child = backup(site, "auto")
    Path(full["disks"][0]["qcow2_path"]).unlink()  # the file the child's disk 2000 is on
    guest_writes(site)
    gone = f"the files of the last point {child['backup_id']} are gone (disk 2000): full copy"
    assert_preview(preview(site, "auto"), {2000: gone, 2001: gone})
    job, printed = cli_backup(site, "auto")
    assert_point(site, job, {2000: gone, 2001: gone}, printed=printed)
