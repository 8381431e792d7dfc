"""When a job may count as completed, and what the hub makes of the lines it is sent."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.api.auth import load_or_create_token
from engine.contract.progress import parse_line
from engine.contract.status import DiskStatus, JobStatus
from engine.db.models import BackupJob, BackupRepository
from engine.db.session import session_scope, upgrade
from engine.hub.jobs import export_name
from engine.hub.jobs.plan import unique_backup_id
from engine.hub.progress import DiskState, JobState
from tests.fixtures.backups import vm_context


def job(*keys: int) -> JobState:
    return JobState(
        backup_id="backup-vm-1",
        context_id="ctx-vm-20251006-203401",
        disks={
            k: DiskState(disk_key=k, export_name=f"vm-disk{k}-1", qcow2_path=f"/r/{k}.qcow2")
            for k in keys
        },
    )


def feed(state: JobState, *lines: dict) -> None:
    for line in lines:
        state.apply(parse_line(json.dumps({"job_id": state.backup_id, "ts": 0.0, **line})))


def test_completed_needs_every_disk_done_and_exit_zero() -> None:
    state = job(2000, 2001)
    feed(
        state,
        {
            "type": "disk_done",
            "disk_key": 2000,
            "bytes_done": 10,
            "bytes_zero": 0,
            "change_id": "a",
        },
        {"type": "done", "status": "completed"},
        {"type": "exit", "exit_code": 0},
    )
    status, reason = state.outcome()
    assert status == "failed"
    assert "2001" in (reason or "")
    feed(state, {"type": "disk_done", "disk_key": 2001, "bytes_done": 10, "change_id": "b"})
    assert state.outcome() == (JobStatus.COMPLETED, None)
    assert {d.status for d in state.disks.values()} == {DiskStatus.COPIED}


def test_nonzero_exit_fails_even_after_done_completed() -> None:
    state = job(2000)
    feed(
        state,
        {"type": "disk_done", "disk_key": 2000, "bytes_done": 10, "change_id": None},
        {"type": "done", "status": "completed"},
        {"type": "exit", "exit_code": 5, "message": "NBD write failed"},
    )
    status, reason = state.outcome()
    assert status == "failed"
    assert reason == "sendense-backup-client exited with code 5: NBD write failed"


def test_client_error_message_is_the_reason() -> None:
    state = job(2000)
    feed(
        state,
        {"type": "error", "disk_key": 2000, "message": "server disconnected"},
        {"type": "done", "status": "failed", "message": "disk 2000: server disconnected"},
        {"type": "exit", "exit_code": 5},
    )
    assert state.outcome() == ("failed", "disk 2000: server disconnected")
    assert state.disks[2000].error == "server disconnected"


def test_hub_seen_fault_wins_over_a_clean_exit() -> None:
    state = job(2000)
    feed(
        state,
        {"type": "disk_done", "disk_key": 2000, "bytes_done": 10},
        {"type": "done", "status": "completed"},
        {"type": "exit", "exit_code": 0},
    )
    state.failure = "disk 2000: qemu-nbd export died"
    assert state.outcome() == ("failed", "disk 2000: qemu-nbd export died")


def test_cancel_is_reported_as_cancelled() -> None:
    state = job(2000)
    state.cancel_requested = True
    feed(state, {"type": "done", "status": "cancelled"}, {"type": "exit", "exit_code": 130})
    assert state.outcome()[0] == "cancelled"


def test_progress_marks_disks_for_subscribers_once() -> None:
    state = job(2000, 2001)
    feed(
        state,
        {"type": "progress", "disk_key": 2000, "bytes_done": 5, "bytes_total": 10, "rate_bps": 1.0},
        {"type": "progress", "disk_key": 2000, "bytes_done": 7, "bytes_total": 10, "rate_bps": 2.0},
    )
    events = state.take_sse()
    assert [(e.disk_key, e.bytes_done, e.status) for e in events] == [(2000, 7, "copying")]
    assert events[0].backup_id == state.backup_id
    assert state.take_sse() == []
    assert [d.disk_key for d in state.take_db()] == [2000]


@pytest.mark.parametrize(
    "line",
    [
        {"type": "progress", "disk_key": "nope", "bytes_done": 1, "bytes_total": 10},
        {"type": "progress", "disk_key": 2000, "bytes_done": -4, "bytes_total": "x"},
        {"type": "whatever"},
    ],
)
def test_bad_lines_are_refused_before_they_reach_a_job(line: dict) -> None:
    state = job(2000)
    with pytest.raises(ValidationError):
        feed(state, line)
    assert state.disks[2000].bytes_done == 0


def test_a_line_for_a_disk_the_job_lacks_changes_nothing() -> None:
    state = job(2000)
    feed(state, {"type": "progress", "disk_key": 9999, "bytes_done": 5, "bytes_total": 10})
    assert state.disks[2000].bytes_done == 0
    assert state.take_sse() == []


def test_export_names_are_distinct_per_job_and_safe_in_a_uri() -> None:
    a = export_name("pg test,1", 2000, "backup-pg_test_1-1759855798")
    b = export_name("pg test,1", 2000, "backup-pg_test_1-1759855798-2")
    assert a == "pg_test_1-disk2000-1759855798"
    assert a != b


def test_backup_ids_are_safe_in_a_url_and_a_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    upgrade(url)
    monkeypatch.setattr(time, "time", lambda: 1796160170.5)
    with session_scope(url) as s:
        first = unique_backup_id(s, "fs vm 03")
        assert first == "backup-fs_vm_03-1796160170"
        assert export_name("fs vm 03", 2000, first) == "fs_vm_03-disk2000-1796160170"
        ctx = vm_context("/DC/vm/fs vm 03", "vc")
        s.add(ctx)
        repo = BackupRepository(name="r", path=str(tmp_path))
        s.add(repo)
        s.flush()
        s.add(
            BackupJob(
                id=first, vm_context_id=ctx.context_id, vm_name="fs vm 03", repository_id=repo.id
            )
        )
        s.flush()
        second = unique_backup_id(s, "fs vm 03")
    assert second == "backup-fs_vm_03-1796160170-2"
    assert export_name("fs vm 03", 2000, second) == "fs_vm_03-disk2000-1796160170-2"


def test_token_file_is_private_and_stable(tmp_path) -> None:
    path = tmp_path / "home" / "api-token"
    first = load_or_create_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == first
    assert len(first) >= 32
