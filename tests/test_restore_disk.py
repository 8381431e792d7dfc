"""A point's disk into a standalone image file, through a real hub on the lab: raw (sparse),
qcow2 (no backing) and streamOptimized VMDK, each byte-identical to the lab's disk; the
refusals before anything is written (one line each); cancel and a hub crash leave no
partial file and no qemu-img; an existing file is replaced only with --force, and only
once the new one is whole."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.config import Settings
from engine.hub.restores.convert import backing_file, chain_bytes, data_bytes
from tests.conftest import wait_for
from tests.fixtures.images import qcow2_map
from tests.fixtures.points import Point, chained_point
from tests.fixtures.services import Services, processes_mentioning
from tests.test_restore_points import _fail_a_backup

MiB = 1024 * 1024


def qemu_img_info(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True, check=True
    )
    return dict(json.loads(done.stdout))


def compare(a: Path, fmt_a: str, b: Path, fmt_b: str = "raw") -> None:
    done = subprocess.run(
        ["qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def start(svc: Services, point_id: str, path: Path, **extra: Any) -> dict[str, Any]:
    body = {"point_id": point_id, "disk_key": 2000, "path": str(path), **extra}
    with svc.client() as api:
        answer = api.post("/api/v1/restores/disk", json=body)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def refused(svc: Services, body: dict[str, Any]) -> tuple[int, str]:
    with svc.client() as api:
        answer = api.post("/api/v1/restores/disk", json=body)
    return answer.status_code, answer.json()["detail"]


def wait_restore(svc: Services, restore_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with svc.client() as api:
        while True:
            job = dict(api.get(f"/api/v1/restores/{restore_id}").json())
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            assert time.monotonic() < deadline, f"restore {restore_id} still {job['status']}"
            time.sleep(0.05)


def leftovers(folder: Path) -> list[str]:
    """Partial files, and qemu-img still writing there."""
    parts = [p.name for p in folder.iterdir() if p.name.endswith(".part")]
    return parts + processes_mentioning(str(folder), "qemu-img")


def test_each_format_is_standalone_and_identical(point: Point, tmp_path: Path) -> None:
    svc, flat = point.services, point.registration.pgtest1.flat[2000]
    out = tmp_path / "out"
    out.mkdir()
    jobs = {
        fmt: start(svc, point.point_id, out / f"disk.{fmt}", format=fmt)
        for fmt in ("raw", "qcow2", "vmdk")
    }
    assert all(j["kind"] == "disk" and j["status"] in ("pending", "running") for j in jobs.values())
    done = {fmt: wait_restore(svc, j["restore_id"]) for fmt, j in jobs.items()}
    for fmt, job in done.items():
        assert job["status"] == "completed", job["error_message"]
        assert job["format"] == fmt and job["target"] == str(out / f"disk.{fmt}")
        (disk,) = job["disks"]
        assert disk["status"] == "completed" and disk["bytes_done"] == disk["bytes_total"] > 0
        assert disk["source_path"] == str(point.disks[2000])
        compare(out / f"disk.{fmt}", fmt, flat)

    raw = (out / "disk.raw").stat()
    assert raw.st_size == flat.stat().st_size
    # Only the point's data takes room (the lab's disk has zeroes and holes; other tests
    # may have written more data into the lab's pgtest1 before this point was taken).
    data = sum(m["length"] for m in qcow2_map(point.disks[2000]) if m["data"] and not m["zero"])
    assert raw.st_blocks * 512 <= data + 64 * 1024
    assert "backing-filename" not in qemu_img_info(out / "disk.qcow2")
    vmdk = qemu_img_info(out / "disk.vmdk")["format-specific"]["data"]
    assert vmdk["create-type"] == "streamOptimized"
    assert leftovers(out) == []

    with svc.client() as api:
        listed = api.get("/api/v1/restores", params={"point_id": point.point_id}).json()
        assert {j["restore_id"] for j in listed} == {j["restore_id"] for j in jobs.values()}
        # Restored points can be deleted (their restores are history).
        assert api.delete(f"/api/v1/restore-points/{point.point_id}").status_code == 204


def test_an_incremental_is_restored_through_its_chain(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    child = chained_point(settings, point)
    job = wait_restore(
        point.services, start(point.services, child.point_id, tmp_path / "d.raw")["restore_id"]
    )
    assert job["status"] == "completed", job["error_message"]
    compare(tmp_path / "d.raw", "raw", child.disks[2000], "qcow2")


def test_refusals_are_one_line_and_write_nothing(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    svc = point.services
    failed_id = _fail_a_backup(settings, point)
    existing = tmp_path / "existing.raw"
    existing.write_bytes(b"old")
    target = str(tmp_path / "new.raw")
    source = point.disks[2000]  # over the point itself, with --force: never
    with svc.client() as api:
        repo = api.get("/api/v1/repositories").json()[0]
    cases = [
        ({"point_id": "backup-nope-1", "disk_key": 2000, "path": target}, 404,
         "restore point backup-nope-1 does not exist"),
        ({"point_id": failed_id, "disk_key": 2000, "path": target}, 404,
         f"not a restore point: backup {failed_id} is failed"),
        ({"point_id": point.point_id, "disk_key": 2002, "path": target}, 404,
         f"point {point.point_id} has no disk 2002 (disks: 2000, 2001)"),
        ({"point_id": point.point_id, "disk_key": 2000, "path": "rel/d.raw"}, 422,
         "restore target 'rel/d.raw' must be an absolute path"),
        ({"point_id": point.point_id, "disk_key": 2000, "path": str(tmp_path / "no" / "d.raw")},
         422, f"folder {tmp_path / 'no'} does not exist"),
        ({"point_id": point.point_id, "disk_key": 2000, "path": str(tmp_path)}, 422,
         f"restore target {tmp_path} is a folder"),
        ({"point_id": point.point_id, "disk_key": 2000, "path": str(existing)}, 409,
         f"{existing} exists; --force replaces it"),
        ({"point_id": point.point_id, "disk_key": 2000, "path": "/etc/d.raw", "force": True},
         422, "restore target /etc/d.raw is in a system folder (/etc): choose another"),
        ({"point_id": point.point_id, "disk_key": 2000, "path": str(source), "force": True},
         422, f"restore target {source} is in repository {repo['name']} ({repo['path']}): "
         "choose another"),
    ]  # fmt: skip
    for body, status, detail in cases:
        assert refused(svc, body) == (status, detail)
    bad_format = refused(
        svc, {"point_id": point.point_id, "disk_key": 2000, "path": target, "format": "vhd"}
    )
    assert bad_format[0] == 422 and "\n" not in bad_format[1]
    assert existing.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.raw", "home"]
    with svc.client() as api:
        assert api.get("/api/v1/restores").json() == []


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted at the end."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_too_little_space_is_refused_before_writing(point: Point, tiny_fs: Path) -> None:
    svc = point.services
    body = {"point_id": point.point_id, "disk_key": 2000, "path": str(tiny_fs / "d.raw")}
    status, detail = refused(svc, body)
    assert status == 507
    assert detail.startswith(f"too little space in {tiny_fs} for d.raw: needs ")
    assert detail.endswith(" MiB, 1.0 MiB free")
    cli = svc.sendense(
        "restore", "disk", point.point_id, "--disk", "2000", "--to", str(tiny_fs / "d.raw")
    )
    assert cli.returncode == 12 and cli.stderr == f"error: {detail}\n"
    assert list(tiny_fs.iterdir()) == []


def slow_point(settings: Settings, point: Point) -> Point:
    """An incremental whose disk 2000 is all data (7 MiB written over the lab's 8 MiB):
    restored at 1 MiB/s it runs for seconds, in qemu-img's 2 MiB steps."""
    return chained_point(settings, point, write_mib=7)


def test_force_replaces_only_once_whole_and_cancel_leaves_nothing(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    svc, slow = point.services, slow_point(settings, point)
    target = tmp_path / "d.raw"
    target.write_bytes(b"old")
    job = start(svc, slow.point_id, target, force=True, max_rate_mib=1)
    with svc.client() as api:

        def copying() -> dict[str, Any] | None:
            (disk,) = api.get(f"/api/v1/restores/{job['restore_id']}").json()["disks"]
            moving = disk["status"] == "copying" and disk["rate_bps"] > 0
            return disk if moving and 0 < disk["bytes_done"] < disk["bytes_total"] else None

        live = wait_for(copying, what="live progress of the restore")
        assert live["bytes_zero"] <= live["bytes_done"]
        assert leftovers(tmp_path)  # the partial file, and qemu-img writing it
        cancelled = api.delete(f"/api/v1/restores/{job['restore_id']}").json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["disks"][0]["status"] == "cancelled"
        again = api.delete(f"/api/v1/restores/{job['restore_id']}")
        assert again.status_code == 409
        assert api.delete("/api/v1/restores/restore-nope-1").status_code == 404
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []

    done = wait_restore(svc, start(svc, slow.point_id, target, force=True)["restore_id"])
    assert done["status"] == "completed", done["error_message"]
    compare(target, "raw", slow.disks[2000], "qcow2")
    assert leftovers(tmp_path) == []


def corrupt_first_cluster_at(qcow2: Path, guest_offset: int) -> None:
    """Point the L2 entry of ``guest_offset``'s cluster half a cluster off its data:
    qemu-img opens the image, and fails reading that cluster ("unaligned")."""
    with qcow2.open("r+b") as fh:
        header = fh.read(48)
        cluster_bits = struct.unpack(">I", header[20:24])[0]
        l1_offset = struct.unpack(">Q", header[40:48])[0]
        cluster = 1 << cluster_bits
        index = guest_offset // cluster
        l2_entries = cluster // 8
        fh.seek(l1_offset + 8 * (index // l2_entries))
        l2_offset = struct.unpack(">Q", fh.read(8))[0] & 0x00FFFFFFFFFFFE00
        entry_at = l2_offset + 8 * (index % l2_entries)
        fh.seek(entry_at)
        entry = struct.unpack(">Q", fh.read(8))[0]
        assert entry & 0x00FFFFFFFFFFFE00, "the cluster must hold data"
        fh.seek(entry_at)
        fh.write(struct.pack(">Q", entry + cluster // 2))


def test_a_failing_qemu_img_fails_the_job_with_its_words_and_leaves_nothing(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    child = chained_point(settings, point)
    corrupt_first_cluster_at(child.disks[2000], MiB)
    job = wait_restore(
        point.services, start(point.services, child.point_id, tmp_path / "d.raw")["restore_id"]
    )
    assert job["status"] == "failed"
    assert job["error_message"].startswith("disk 2000: qemu-img convert exited with status 1: ")
    assert "unaligned" in job["error_message"] and "\n" not in job["error_message"]
    assert job["disks"][0]["status"] == "failed"
    assert leftovers(tmp_path) == [] and not (tmp_path / "d.raw").exists()


def test_a_hub_that_stops_or_crashes_fails_its_restore_and_leaves_nothing(
    point: Point, settings: Settings, tmp_path: Path
) -> None:
    svc, slow = point.services, slow_point(settings, point)
    stopped = start(svc, slow.point_id, tmp_path / "a.raw", max_rate_mib=1)
    wait_for(lambda: leftovers(tmp_path), what="the restore to write its partial file")
    svc.hub.stop()  # SIGTERM: the hub ends the restore on its way out
    assert leftovers(tmp_path) == []

    svc.start(svc.hub)
    crashed = start(svc, slow.point_id, tmp_path / "b.raw", max_rate_mib=1)
    wait_for(lambda: leftovers(tmp_path), what="the restore to write its partial file")
    svc.hub.stop(signal.SIGKILL)
    # qemu-img dies with the hub's thread that ran it.
    wait_for(
        lambda: processes_mentioning(str(tmp_path), "qemu-img") == [],
        what="qemu-img to die with the hub",
    )
    svc.start(svc.hub)
    for job, reason in (
        (stopped, "the hub stopped while it ran"),
        (crashed, "the hub restarted while it ran"),
    ):
        ended = wait_restore(svc, job["restore_id"])
        assert (ended["status"], ended["error_message"]) == ("failed", reason)
        assert ended["disks"][0]["status"] == "failed"
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "a.raw").exists() and not (tmp_path / "b.raw").exists()


def test_cli_restore_disk_list_show_cancel(point: Point, tmp_path: Path) -> None:
    svc, flat = point.services, point.registration.pgtest1.flat[2000]
    target = tmp_path / "d.qcow2"
    done = svc.sendense(
        "restore",
        "disk",
        point.point_id,
        "--disk",
        "2000",
        "--to",
        str(target),
        "--format",
        "qcow2",
    )
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout
    compare(target, "qcow2", flat)

    exists = svc.sendense("restore", "disk", point.point_id, "--disk", "2000", "--to", str(target))
    assert exists.returncode == 8
    assert exists.stderr == f"error: {target} exists; --force replaces it\n"
    for args, code in (
        (("backup-nope-1", "--disk", "2000"), 7),
        ((point.point_id, "--disk", "2000", "--format", "vhd"), 2),
    ):
        bad = svc.sendense("restore", "disk", *args, "--to", str(tmp_path / "x.raw"))
        assert bad.returncode == code, bad.stderr

    started = svc.sendense(
        "restore", "disk", point.point_id, "--disk", "2001", "--to", str(tmp_path / "e.raw"),
        "--no-wait", "--json",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    restore_id = json.loads(started.stdout)["restore_id"]
    wait_restore(svc, restore_id)
    shown = svc.sendense("restore", "show", restore_id, "--json")
    assert json.loads(shown.stdout)["status"] == "completed"
    compare(tmp_path / "e.raw", "raw", point.registration.pgtest1.flat[2001])
    listed = svc.sendense("restore", "list", "--point", point.point_id, "--json")
    assert len(json.loads(listed.stdout)) == 2
    not_running = svc.sendense("restore", "cancel", restore_id)
    assert not_running.returncode == 8 and not_running.stderr.count("\n") == 1


def test_a_chain_takes_at_least_its_data_whatever_its_backing_names(tmp_path: Path) -> None:
    base, top = tmp_path / "base.qcow2", tmp_path / "sub" / "top.qcow2"
    top.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    # A relative backing name is relative to the overlay's folder.
    create = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "../base.qcow2"]
    subprocess.run([*create, str(top)], check=True)
    for image, offset in ((base, "0"), (top, "4M"), (top, "0")):
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", f"write -P 9 {offset} 2M", str(image)],
            check=True,
            capture_output=True,
        )
    assert backing_file(top) == top.parent / "../base.qcow2"
    assert backing_file(base) is None
    assert data_bytes("qemu-img", top) == 4 * MiB  # the overlay's 0-2M hides the base's
    assert chain_bytes(top) >= 6 * MiB
