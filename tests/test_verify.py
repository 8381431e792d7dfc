"""Verified points after a real backup of the lab: the tables the copier's digests made,
verify passing on a good point, a single flipped byte found with its disk and chunk, a
point without tables checked for structure only, and bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from engine.config import Settings
from engine.hub.verify.table import TableWriter, read_table, table_path
from tests.fixtures.points import Point, chained_point
from tests.fixtures.services import processes_mentioning

pytestmark = pytest.mark.slow


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


def test_unknown_point_is_not_found(point: Point) -> None:
    unknown = verify(point, "no-such-point")
    assert unknown.returncode == 7
    assert unknown.stderr.strip() == "error: restore point no-such-point does not exist"
    with point.services.client() as api:
        assert api.post("/api/v1/restore-points/no-such-point/verify").status_code == 404
        assert api.get("/api/v1/restore-points/no-such-point/verify").status_code == 404
