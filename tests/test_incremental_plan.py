"""The hub's decision, disk by disk, between a full and an incremental, and its reasons:
over real database rows, real qcow2 files and digest tables (no vCenter: the context's
rows are what the decision reads; the start refreshes them from vCenter first)."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.contract.hub import BackupRequest
from engine.contract.status import BackupType, JobStatus, Verification
from engine.db.models import BackupDisk, BackupJob, BackupRepository, VMReplicationContext, utcnow
from engine.db.session import session_scope
from engine.hub.jobs.chain_plan import ChainDecision, decide
from engine.hub.verify.table import TableWriter, table_path
from tests.fixtures.backups import MiB, seed_vm

CHUNK = 64 * 1024
CTX = "ctx-pgtest1-20251006-203401"


def _qcow2(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)], check=True)


def _table(qcow2: Path, size: int, chunk: int = CHUNK) -> None:
    writer = TableWriter(table_path(qcow2), size)
    writer.put(chunk, 0, b"\x01" * 16 * (-(-size // chunk)))
    writer.close()


def add_point(
    s: Session,
    settings: Settings,
    point_id: str,
    *,
    repository_id: int,
    disks: dict[int, int] | None = None,
    change_ids: bool = True,
    tables: bool = True,
    age_minutes: int = 10,
    verification: Verification = Verification.VERIFIED,
) -> BackupJob:
    """A completed point of pgtest1 with real qcow2 files (and digest tables)."""
    disks = {2000: 4 * MiB, 2001: 2 * MiB} if disks is None else disks
    when = utcnow() - timedelta(minutes=age_minutes)
    row = BackupJob(
        id=point_id,
        vm_context_id=CTX,
        vm_name="pgtest1",
        repository_id=repository_id,
        backup_type=BackupType.FULL,
        status=JobStatus.COMPLETED,
        created_at=when,
        completed_at=when,
        verification=verification,
    )
    for key, size in disks.items():
        qcow2 = settings.repository_default / "pgtest1" / str(key) / f"{point_id}.qcow2"
        _qcow2(qcow2, size)
        if tables:
            _table(qcow2, size)
        row.disks.append(
            BackupDisk(
                disk_key=key,
                nbd_export_name=f"pgtest1-disk{key}-{point_id}",
                qcow2_path=str(qcow2),
                capacity_bytes=size,
                change_id=f"52 aa/{key}" if change_ids else None,
            )
        )
    s.add(row)
    s.flush()
    return row


@pytest.fixture
def repo_id(settings: Settings) -> int:
    return seed_vm(settings, credential=True)


def _decide(
    settings: Settings, requested: BackupType, repository_id: int, *, cbt: bool = True
) -> ChainDecision:
    with session_scope(settings.db_url) as s:
        ctx = s.get(VMReplicationContext, CTX)
        assert ctx is not None
        ctx.cbt_enabled = cbt
        return decide(s, ctx, repository_id, requested, CHUNK)


def _reasons(decision: ChainDecision) -> dict[int, str | None]:
    return {d.disk_key: d.reason for d in decision.disks}


def test_an_auto_after_a_good_point_is_incremental_on_it(settings: Settings, repo_id: int) -> None:
    with session_scope(settings.db_url) as s:
        add_point(s, settings, "backup-old", repository_id=repo_id, age_minutes=20)
        parent = add_point(s, settings, "backup-x", repository_id=repo_id)
        paths = {d.disk_key: Path(d.qcow2_path) for d in parent.disks}
    for requested in (BackupType.AUTO, BackupType.INCREMENTAL):
        decision = _decide(settings, requested, repo_id)
        assert decision.backup_type == BackupType.INCREMENTAL
        assert decision.parent_backup_id == "backup-x" and decision.reason is None
        assert decision.changed_since == {2000: "52 aa/2000", 2001: "52 aa/2001"}
        assert {d.disk_key: d.parent_qcow2_path for d in decision.disks} == paths
        assert set(_reasons(decision).values()) == {None}


def test_full_asked_is_full_without_a_reason(settings: Settings, repo_id: int) -> None:
    with session_scope(settings.db_url) as s:
        add_point(s, settings, "backup-x", repository_id=repo_id)
    decision = _decide(settings, BackupType.FULL, repo_id)
    assert decision.backup_type == BackupType.FULL and decision.parent_backup_id is None
    assert decision.reason is None and decision.changed_since == {}


def test_incremental_of_a_vm_without_points_is_a_full_that_says_so(
    settings: Settings, repo_id: int
) -> None:
    decision = _decide(settings, BackupType.INCREMENTAL, repo_id)
    assert decision.backup_type == BackupType.FULL
    assert decision.reason == "no restore point of this VM yet: full copy"
    assert set(_reasons(decision).values()) == {decision.reason}
    preview = decision.preview(_context(settings))
    assert preview.requested_type == BackupType.INCREMENTAL and preview.backup_type == "full"
    assert [d.reason for d in preview.disks] == [decision.reason] * 2


def _context(settings: Settings) -> VMReplicationContext:
    with session_scope(settings.db_url) as s:
        ctx = s.get(VMReplicationContext, CTX)
        assert ctx is not None
        s.expunge(ctx)
        return ctx


def test_cbt_off_says_how_to_turn_it_on(settings: Settings, repo_id: int) -> None:
    with session_scope(settings.db_url) as s:
        add_point(s, settings, "backup-x", repository_id=repo_id)
    decision = _decide(settings, BackupType.AUTO, repo_id, cbt=False)
    assert decision.backup_type == BackupType.FULL
    assert decision.reason == (
        "CBT is off on pgtest1: sendense vm enable-cbt /DatabanxDC/vm/pgtest1"
    )


def test_a_damaged_newest_point_is_passed_over_and_alone_it_is_the_reason(
    settings: Settings, repo_id: int
) -> None:
    with session_scope(settings.db_url) as s:
        add_point(s, settings, "backup-x", repository_id=repo_id, verification=Verification.DAMAGED)
    decision = _decide(settings, BackupType.AUTO, repo_id)
    assert decision.backup_type == BackupType.FULL
    assert decision.reason == "the last point backup-x is damaged (verify found it so): full copy"
    with session_scope(settings.db_url) as s:  # an older good point is built on instead
        add_point(s, settings, "backup-older", repository_id=repo_id, age_minutes=30)
    assert _decide(settings, BackupType.AUTO, repo_id).parent_backup_id == "backup-older"


def test_a_point_in_another_repository_or_without_files_is_no_parent(
    settings: Settings, repo_id: int, tmp_path: Path
) -> None:
    with session_scope(settings.db_url) as s:
        other = BackupRepository(name="other", path=str(tmp_path / "other"), enabled=True)
        s.add(other)
        s.flush()
        other_id = other.id
        add_point(s, settings, "backup-x", repository_id=other_id)
    decision = _decide(settings, BackupType.INCREMENTAL, repo_id)
    assert decision.reason == (
        f"the last point backup-x is in repository {other_id}, not {repo_id}: full copy"
    )
    with session_scope(settings.db_url) as s:
        gone = add_point(s, settings, "backup-y", repository_id=repo_id, age_minutes=5)
        Path(gone.disks[1].qcow2_path).unlink()
    decision = _decide(settings, BackupType.INCREMENTAL, repo_id)
    assert decision.reason == "the files of the last point backup-y are gone (disk 2001): full copy"


def test_a_disk_added_or_grown_since_the_parent_is_copied_whole(
    settings: Settings, repo_id: int
) -> None:
    with session_scope(settings.db_url) as s:
        add_point(s, settings, "backup-x", repository_id=repo_id, disks={2000: 4 * MiB})
        ctx = s.get(VMReplicationContext, CTX)
        assert ctx is not None
        ctx.disks[0].capacity_bytes = 6 * MiB  # grown, and 2001 is new since backup-x
    add_point_2000_same = _decide(settings, BackupType.AUTO, repo_id)
    assert add_point_2000_same.backup_type == BackupType.FULL
    assert _reasons(add_point_2000_same) == {
        2000: "disk 2000 grew from 4 MiB to 6 MiB since backup-x: full copy",
        2001: "disk 2001 was added since backup-x: full copy",
    }
    assert add_point_2000_same.reason == "no disk can build on backup-x: full copy"


def test_one_disk_full_the_other_incremental(settings: Settings, repo_id: int) -> None:
    with session_scope(settings.db_url) as s:
        add_point(s, settings, "backup-x", repository_id=repo_id, disks={2000: 4 * MiB})
    decision = _decide(settings, BackupType.AUTO, repo_id)
    assert decision.backup_type == BackupType.INCREMENTAL
    assert decision.parent_backup_id == "backup-x"
    assert {d.disk_key: d.mode for d in decision.disks} == {
        2000: BackupType.INCREMENTAL,
        2001: BackupType.FULL,
    }
    assert decision.changed_since == {2000: "52 aa/2000"}


def test_a_parent_disk_without_change_id_or_digest_table_is_copied_whole(
    settings: Settings, repo_id: int
) -> None:
    with session_scope(settings.db_url) as s:
        add_point(s, settings, "backup-x", repository_id=repo_id, change_ids=False)
    assert _reasons(_decide(settings, BackupType.AUTO, repo_id))[2000] == (
        "disk 2000 of backup-x has no change id: full copy"
    )
    with session_scope(settings.db_url) as s:
        add_point(s, settings, "backup-y", repository_id=repo_id, tables=False, age_minutes=5)
    assert _reasons(_decide(settings, BackupType.AUTO, repo_id))[2001] == (
        "disk 2001 of backup-y has no digest table to build on (a point from before "
        "digests): full copy, so this point can be verified"
    )
    with session_scope(settings.db_url) as s:
        p = add_point(s, settings, "backup-z", repository_id=repo_id, tables=False, age_minutes=1)
        for d in p.disks:
            _table(Path(d.qcow2_path), d.capacity_bytes, chunk=1024 * 1024)
    assert _reasons(_decide(settings, BackupType.AUTO, repo_id))[2000] == (
        "disk 2000 of backup-z has digests of 1 MiB chunks, the copier takes 64 KiB ones: "
        "full copy, so this point can be verified"
    )


def test_an_unknown_backup_type_is_refused_naming_the_types() -> None:
    with pytest.raises(ValidationError) as err:
        BackupRequest.model_validate({"vm_name": "x", "repository_id": 1, "backup_type": "weekly"})
    assert "'full', 'incremental' or 'auto'" in str(err.value)
