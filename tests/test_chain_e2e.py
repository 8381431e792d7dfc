"""A chain five deep built through the real hub, node, client and the vcsim lab: guest
writes between points (data, zeroes over data, writes across a 64 KiB chunk, the last
byte of each disk, both disks), each ``auto`` an incremental on the point before; every
point reads as the source did when it was taken, through its qcow2 chain and through an
instant export, verifies from its derived digest table, and still reads so after a middle
point and then the full are merged. A client killed mid-incremental leaves no point, file,
export or snapshot, and the next ``auto`` builds on the last good point."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.hub.verify.table import TableWriter, read_table, table_path
from tests.conftest import wait_for
from tests.fixtures.backups import MiB, assert_exports_gone, start
from tests.fixtures.lab import LabRegistration
from tests.fixtures.points import Point, back_up
from tests.fixtures.services import Services, processes_mentioning
from tests.test_client import snapshots_of_pgtest1

pytestmark = pytest.mark.slow

KiB = 1024
CHUNK = 64 * KiB
Saved = dict[int, Path]  # disk key -> the source's flat file as it was at a point


def save_sources(reg: LabRegistration, folder: Path, name: str) -> Saved:
    """The source disks now (sparse copies): the lab changes them under later points."""
    out = {}
    for key, flat in reg.pgtest1.flat.items():
        out[key] = folder / f"{name}-{key}.raw"
        subprocess.run(["cp", "--sparse=always", str(flat), str(out[key])], check=True)
    return out


def reads_as(qcow2: Path, raw: Path, fmt: str = "qcow2") -> None:
    done = subprocess.run(
        ["qemu-img", "compare", "-f", fmt, "-F", "raw", str(qcow2), str(raw)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"{qcow2} vs {raw}: {done.stdout}{done.stderr}"


def same_bytes(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def capacities(reg: LabRegistration) -> dict[int, int]:
    return {d.key: d.capacity_bytes for d in reg.pgtest1.disks}


def guest_writes(reg: LabRegistration) -> list[list[Callable[[], str]]]:
    """Four rounds of guest writes, one before each incremental; every round touches both
    disks, and the rounds zero what an earlier one wrote and write again over zeroes."""
    lab, size = reg.lab, capacities(reg)
    last0, last1 = size[2000] - 1, size[2001] - 1

    def w(key: int, offset: int, length: int, zero: bool = False) -> Callable[[], str]:
        return lambda: lab.write("pgtest1", key, offset, length, zero=zero)

    return [
        [  # data; across a chunk boundary; the last byte of each disk
            w(2000, 1 * MiB, CHUNK),
            w(2000, 2 * MiB - 4 * KiB, 8 * KiB),
            w(2000, last0, 1),
            w(2001, 3 * MiB, 128 * KiB),
            w(2001, last1, 1),
        ],
        [  # zeroes over round 1's data, whole and part of a chunk; unaligned edges
            w(2000, 1 * MiB, CHUNK, zero=True),
            w(2001, 3 * MiB + 32 * KiB, 32 * KiB, zero=True),
            w(2001, CHUNK - 1, 2),
            w(2000, 4 * MiB - 100, 200),
        ],
        [  # data inside the zeroed chunk; zeroes over the disk's last chunk
            w(2000, 1 * MiB + 16 * KiB, 4 * KiB),
            w(2001, size[2001] - CHUNK, CHUNK, zero=True),
            w(2000, 5 * MiB, 3 * CHUNK + 7),
        ],
        [  # the last bytes again, zeroes at the start, a run over many chunks
            w(2000, last0, 1),
            w(2001, last1, 1),
            w(2000, 0, CHUNK, zero=True),
            w(2001, 1 * MiB, 512 * KiB),
        ],
    ]


def job_of(svc: Services, backup_id: str) -> dict:
    with svc.client() as api:
        return dict(api.get(f"/api/v1/backups/{backup_id}").json())


def assert_incremental_on(svc: Services, point: Point, parent: Point) -> None:
    job = job_of(svc, point.point_id)
    assert job["backup_type"] == "incremental" and job["requested_type"] == "auto", job
    assert job["parent_backup_id"] == parent.point_id
    for disk in job["disks"]:
        assert disk["mode"] == "incremental", disk
        assert disk["fallback_reason"] is None, disk
        assert disk["parent_qcow2_path"] == str(parent.disks[disk["disk_key"]])
        assert disk["bytes_total"] < disk["capacity_bytes"]  # only what changed


def tables_complete(point: Point) -> None:
    for key, qcow2 in point.disks.items():
        table = read_table(table_path(qcow2))
        assert TableWriter(table_path(qcow2), table.header.capacity).complete, (point, key)


def verified(svc: Services, point_id: str) -> None:
    done = svc.sendense("verify", point_id)
    assert done.returncode == 0, done.stdout + done.stderr
    with svc.client() as api:
        view = api.get(f"/api/v1/restore-points/{point_id}").json()
    assert view["verification"] == "verified", view


def exported_reads_as(svc: Services, point_id: str, key: int, raw: Path, folder: Path) -> None:
    """An instant export of the point's disk read out with nbdcopy is its source."""
    with svc.client() as api:
        lease = api.post(f"/api/v1/restore-points/{point_id}/exports", json={"disk_key": key})
        assert lease.status_code == 201, lease.text
        try:
            out = folder / f"export-{point_id}-{key}.raw"
            subprocess.run(["nbdcopy", lease.json()["uri"], str(out)], check=True)
            reads_as(out, raw, fmt="raw")
        finally:
            assert api.delete(f"/api/v1/restore-exports/{lease.json()['name']}").status_code == 204


def test_a_chain_five_deep_reads_exactly_before_and_after_merges(
    services: Services, lab_registered: LabRegistration, tmp_path: Path
) -> None:
    reg, svc = lab_registered, services
    points = [back_up(svc, reg, backup_type="full")]
    saved = [save_sources(reg, tmp_path, "p0")]
    for n, writes in enumerate(guest_writes(reg), start=1):
        for write in writes:
            write()
        points.append(back_up(svc, reg, backup_type="auto"))
        saved.append(save_sources(reg, tmp_path, f"p{n}"))
        for key in (2000, 2001):  # every round changed both disks
            assert not same_bytes(saved[-1][key], saved[-2][key]), (n, key)
        assert_incremental_on(svc, points[-1], points[-2])

    with svc.client() as api:
        deepest = api.get(f"/api/v1/restore-points/{points[-1].point_id}").json()
    assert deepest["chain"] == [p.point_id for p in points]
    for point, source in zip(points, saved, strict=True):
        for key, qcow2 in point.disks.items():
            reads_as(qcow2, source[key])

    for point in points:
        tables_complete(point)  # an incremental's table is derived, never re-read
    verified(svc, points[0].point_id)
    verified(svc, points[-1].point_id)
    for key, raw in saved[-1].items():
        exported_reads_as(svc, points[-1].point_id, key, raw, tmp_path)

    # A middle point into its child, then the full: the child becomes a synthetic full.
    for gone, into in ((points[2], points[3]), (points[0], points[1])):
        merged = svc.sendense("chain", "merge", gone.point_id)
        assert merged.returncode == 0, merged.stderr
        assert merged.stdout.startswith(f"merged {gone.point_id} into {into.point_id}: ")
    kept = [1, 3, 4]
    with svc.client() as api:
        for gone in (points[0], points[2]):
            assert api.get(f"/api/v1/restore-points/{gone.point_id}").status_code == 404
        newest = api.get(f"/api/v1/restore-points/{points[-1].point_id}").json()
        base = api.get(f"/api/v1/restore-points/{points[1].point_id}").json()
    assert newest["chain"] == [points[i].point_id for i in kept]
    assert base["backup_type"] == "full" and base["parent_point_id"] is None
    for gone in (points[0], points[2]):
        assert not any(q.exists() or table_path(q).exists() for q in gone.disks.values())
    for i in kept:
        for key, qcow2 in points[i].disks.items():
            reads_as(qcow2, saved[i][key])
    verified(svc, points[-1].point_id)


def client_of(backup_id: str) -> int:
    """The pid of the job's ``sendense-backup-client migrate``."""
    found = [line for line in processes_mentioning(f"--job-id {backup_id}") if " migrate " in line]
    assert len(found) == 1, found
    return int(found[0].split(":", 1)[0])


@dataclass(frozen=True)
class Killed:
    good: Point  # the full the killed incremental built on
    answer: dict[str, Any]  # the killed job's BackupStarted

    @property
    def backup_id(self) -> str:
        return str(self.answer["backup_id"])

    @property
    def qcow2(self) -> dict[int, Path]:
        return {d["disk_id"]: Path(d["qcow2_path"]) for d in self.answer["disk_results"]}


def kill_mid_incremental(svc: Services, reg: LabRegistration) -> Killed:
    """A full, then a throttled ``auto`` (an incremental on it) whose client is SIGKILLed
    while it copies; returned once the hub has ended the job."""
    good = back_up(svc, reg, backup_type="full")
    for key in (2000, 2001):  # enough changed to be slow at the throttled rate
        reg.lab.write("pgtest1", key, 0, 4 * MiB)
    answer = start(svc, reg, backup_type="auto", max_rate_mib=0.5)
    assert answer.status_code == 200, answer.text
    backup_id = answer.json()["backup_id"]
    wait_for(
        lambda: svc.wait_job(backup_id, ("running",))["bytes_done"] > 0,
        timeout=30,
        what="the incremental to copy",
    )
    assert job_of(svc, backup_id)["parent_backup_id"] == good.point_id
    os.kill(client_of(backup_id), signal.SIGKILL)
    job = svc.wait_job(backup_id)
    assert job["status"] == "failed", job
    return Killed(good, answer.json())


def test_a_client_killed_mid_incremental_leaves_no_point_and_the_next_builds_on_the_last_good(
    services: Services, lab_registered: LabRegistration, tmp_path: Path
) -> None:
    reg, svc, lab = lab_registered, services, lab_registered.lab
    killed = kill_mid_incremental(svc, reg)
    with svc.client() as api:
        assert api.get(f"/api/v1/restore-points/{killed.backup_id}").status_code == 404
        newest = api.get("/api/v1/restore-points", params={"vm": "pgtest1"}).json()
    assert [p["point_id"] for p in newest] == [killed.good.point_id]
    assert not any(q.exists() or table_path(q).exists() for q in killed.qcow2.values())
    assert_exports_gone(svc, killed.answer, reg)  # no qemu-nbd, no nbdkit, ports free

    lab.write("pgtest1", 2001, 5 * MiB, CHUNK)
    after = back_up(svc, reg, backup_type="auto")
    source = save_sources(reg, tmp_path, "after")
    assert_incremental_on(svc, after, killed.good)
    for key, qcow2 in after.disks.items():
        reads_as(qcow2, source[key])
    assert not any(s.startswith("sendense-") for s in snapshots_of_pgtest1(lab))


def test_a_client_killed_mid_incremental_leaves_no_vmware_snapshot(
    services: Services, lab_registered: LabRegistration
) -> None:
    # The client cannot remove its snapshot once killed: the hub does, as the job ends.
    killed = kill_mid_incremental(services, lab_registered)
    name = f"sendense-{killed.backup_id}"
    wait_for(
        lambda: name not in snapshots_of_pgtest1(lab_registered.lab),
        timeout=30,
        what=f"the hub to remove {name}",
    )
