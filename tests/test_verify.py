"""Verified points after a real backup of the lab: the tables the copier's digests made,
verify passing on a good point, a single flipped byte found with its disk and chunk, a
point without tables checked for structure only, and bad input."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from pathlib import Path

import pytest

from engine.config import Settings
from engine.contract.progress import ChunkDigests
from engine.contract.status import DiskStatus, JobStatus
from engine.hub.progress import DiskState, JobState
from engine.hub.verify.table import TableWriter, derive, read_table, table_path
from tests.fixtures.points import Point, chained_point
from tests.fixtures.services import processes_mentioning


def verify(point: Point, point_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return point.services.sendense("verify", point_id, *extra)


def a_data_byte(qcow2: Path) -> tuple[int, int]:
    """(guest offset, file offset) of the first byte of the qcow2's first data cluster."""
    out = subprocess.run(
        ["qemu-img", "map", "--output=json", "-f", "qcow2", str(qcow2)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    mapped = [m for m in json.loads(out) if m["data"] and "offset" in m]
    assert mapped, f"{qcow2} holds no data to flip"
    return mapped[0]["start"], mapped[0]["offset"]


@pytest.mark.slow
def test_a_good_point_verifies_and_one_flipped_byte_is_found(
    point: Point, settings: Settings
) -> None:
    for key, qcow2 in point.disks.items():
        table = read_table(table_path(qcow2))
        assert TableWriter(table_path(qcow2), table.header.capacity).complete, key

    good = verify(point, point.point_id)
    assert good.returncode == 0, good.stderr
    assert "verified" in good.stdout
    with point.services.client() as api:
        view = api.get(f"/api/v1/restore-points/{point.point_id}").json()
        assert view["verification"] == "verified"
        report = api.get(f"/api/v1/restore-points/{point.point_id}/verify").json()
        assert report["state"] == "verified" and not report["running"]
        assert report["bytes_done"] == report["bytes_total"] > 0

    # An incremental made without tables: structure and reads only, with the note.
    child = chained_point(settings, point)
    note = verify(point, child.point_id, "--json")
    assert note.returncode == 0, note.stderr
    answer = json.loads(note.stdout)
    assert answer["state"] == "unverified"
    assert "no chunk digests were recorded" in answer["detail"]

    key = min(point.disks)
    qcow2 = point.disks[key]
    guest, host = a_data_byte(qcow2)
    with qcow2.open("r+b") as f:
        f.seek(host)
        byte = f.read(1)
        f.seek(host)
        f.write(bytes([byte[0] ^ 0xFF]))
    chunk = read_table(table_path(qcow2)).header.chunk_size
    start = guest // chunk * chunk
    bad = verify(point, point.point_id)
    assert bad.returncode == 13, bad.stdout + bad.stderr
    line = bad.stderr.strip().splitlines()[-1]
    assert f"disk {key} bytes {start}-{start + chunk}" in line, line
    with point.services.client() as api:
        report = api.get(f"/api/v1/restore-points/{point.point_id}/verify").json()
        assert report["state"] == "damaged"
        assert report["damaged"] == [
            {
                "disk_key": key,
                "offset": start,
                "length": chunk,
                "reason": "chunk digest differs from what the copier read",
            }
        ]
        assert api.get(f"/api/v1/restore-points/{point.point_id}").json()["verification"] == (
            "damaged"
        )
    assert processes_mentioning(str(qcow2), "qemu-nbd") == []


@pytest.mark.slow
def test_unknown_point_is_not_found(point: Point) -> None:
    unknown = verify(point, "no-such-point")
    assert unknown.returncode == 7
    assert unknown.stderr.strip() == "error: restore point no-such-point does not exist"
    with point.services.client() as api:
        assert api.post("/api/v1/restore-points/no-such-point/verify").status_code == 404
        assert api.get("/api/v1/restore-points/no-such-point/verify").status_code == 404


def test_a_table_knows_its_chunks_and_an_incremental_starts_from_its_parents(
    tmp_path: Path,
) -> None:
    chunk, capacity = 64 * 1024, 3 * 64 * 1024 + 10  # four chunks, the last short
    path = table_path(tmp_path / "full.qcow2")
    state = JobState(
        backup_id="b",
        context_id="c",
        disks={
            2000: DiskState(
                disk_key=2000,
                export_name="e",
                qcow2_path=str(tmp_path / "full.qcow2"),
                bytes_total=capacity,
                status=DiskStatus.COPIED,
                digests=TableWriter(path, capacity),
            )
        },
        client_status=JobStatus.COMPLETED,
        exit_code=0,
    )

    def digests(offset: int, raw: bytes) -> ChunkDigests:
        encoded = base64.b64encode(raw).decode()
        return ChunkDigests(
            job_id="b", disk_key=2000, chunk_size=chunk, offset=offset, digests=encoded
        )

    state.apply(digests(0, b"\x01" * 32))
    state.apply(digests(3 * chunk, b"\x03" * 16))
    state.apply(digests(0, b"\x01" * 16))  # again: counted once
    assert state.outcome() == (JobStatus.FAILED, "disk 2000: chunk digests cover 3 of 4 chunks")
    state.apply(digests(2 * chunk, b"\x02" * 16))
    assert state.outcome() == (JobStatus.COMPLETED, None)
    beyond = copy.deepcopy(state)  # digests beyond the disk's end fail the job
    beyond.apply(digests(4 * chunk, b"\x05" * 16))
    assert beyond.outcome()[0] == JobStatus.FAILED
    assert "do not fit 4 chunks" in (beyond.outcome()[1] or "")
    state.disks[2000].digests.close(sync=True)  # type: ignore[union-attr]

    reopened = TableWriter(path, capacity)  # a restarted hub's view
    assert reopened.complete and reopened.count == 4
    reopened.close()
    child = derive(path, table_path(tmp_path / "incr.qcow2"))
    assert child.complete
    child.put(chunk, chunk, b"\x09" * 16)  # a changed chunk replaces the parent's
    child.close()
    table = read_table(table_path(tmp_path / "incr.qcow2"))
    assert [table.digest(i)[:1] for i in range(4)] == [b"\x01", b"\x09", b"\x02", b"\x03"]
    assert read_table(path).digest(1) == b"\x01" * 16
