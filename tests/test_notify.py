"""Notifications of policy runs: the message a real Apprise ``json://`` target on loopback
receives, failing targets named without their secrets (in the answer and in the logs),
redaction, sealing and validation of notification URLs."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Iterator
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.clock import utcnow
from engine.contract.policy import PolicyRun, PolicyRunVM
from engine.contract.status import BackupType, JobStatus, PolicyRunStatus, RunTrigger
from engine.credentials import CredentialError, VMwareCredentialService, load_or_create_key, seal
from engine.db.models import BackupPolicy
from engine.db.session import session_scope, upgrade
from engine.hub.policies.notify import (
    Notifier,
    message,
    open_urls,
    redact,
    seal_urls,
    validate,
)
from engine.repository import add_repository
from tests.conftest import free_port
from tests.fixtures.notify_sink import NotifySink

GiB = 1024**3
SECRET = "s3cret-Pa55word"


@pytest.fixture
def sink() -> Iterator[NotifySink]:
    with NotifySink() as s:
        yield s


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything logged, at DEBUG, Apprise's logger and urllib3's included."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="apprise")
    caplog.set_level(logging.DEBUG, logger="urllib3")
    return caplog


def run_of(*vms: PolicyRunVM, status: PolicyRunStatus, **fields: object) -> PolicyRun:
    start = utcnow() - timedelta(hours=1)
    values: dict[str, object] = {
        "id": 42,
        "policy_id": 1,
        "policy_name": "nightly",
        "trigger": RunTrigger.SCHEDULE,
        "scheduled_for": start,
        "started_at": start,
        "finished_at": start + timedelta(minutes=41, seconds=6),
        "status": status,
        "vms": list(vms),
    }
    return PolicyRun.model_validate(values | fields)


def vm(name: str, status: JobStatus | None, **fields: object) -> PolicyRunVM:
    return PolicyRunVM.model_validate(
        {"vm_name": name, "vm_path": f"/DC0/vm/{name}", "status": status} | fields
    )


PGTEST = vm(
    "pgtest1",
    JobStatus.COMPLETED,
    bytes_transferred=int(1.5 * GiB),
    duration_seconds=185,
    backup_type=BackupType.FULL,
)
WEB = vm(
    "web 01",
    JobStatus.FAILED,
    bytes_transferred=3 * 1024**2,
    duration_seconds=12,
    backup_type=BackupType.INCREMENTAL,
    error="snapshot could not be taken: the VM's disks are busy",
)
FS = vm("fstest1", None, error="fstest1 already has a backup queued")


def test_a_run_with_failures_reaches_a_json_target_with_every_vm_and_reason(
    sink: NotifySink,
) -> None:
    run = run_of(
        PGTEST,
        WEB,
        FS,
        status=PolicyRunStatus.FAILED,
        retention=["pgtest1: point p-1 merged into p-2 (outside keep-last 3)"],
    )

    assert Notifier().send([sink.url(userinfo=f"sendense:{SECRET}@")], run) is None

    [got] = sink.received
    assert got.body["type"] == "failure"
    assert got.body["title"] == "Sendense: policy nightly — 2 of 3 VMs failed"
    text = got.body["message"]
    assert "Run 42, scheduled for" in text and "(41 min 6 s)" in text
    assert "- pgtest1: completed, 1.5 GiB in 3 min 5 s, full" in text
    assert "- web 01: failed, 3.0 MiB in 12 s, incremental" in text
    assert "  reason: snapshot could not be taken: the VM's disks are busy" in text
    assert "- fstest1: not queued\n  reason: fstest1 already has a backup queued" in text
    # failures come first: they are what the reader needs
    assert text.index("Failed (2 of 3):") < text.index("Backed up (1 of 3):")
    assert "- pgtest1: point p-1 merged into p-2 (outside keep-last 3)" in text
    # the password went where it belongs: to the target, as its credentials
    auth = base64.b64encode(f"sendense:{SECRET}".encode()).decode()
    assert got.headers["Authorization"] == f"Basic {auth}"


def test_a_completed_run_is_a_success_message(sink: NotifySink) -> None:
    other = PGTEST.model_copy(update={"vm_name": "web 02", "vm_path": "/DC0/vm/web 02"})

    run = run_of(PGTEST, other, status=PolicyRunStatus.COMPLETED)
    assert Notifier().send([sink.url()], run) is None

    [got] = sink.received
    assert got.body["type"] == "success"
    assert got.body["title"] == "Sendense: policy nightly — all 2 VMs backed up"
    assert "Transferred 3.0 GiB in all." in got.body["message"]
    assert "Failed" not in got.body["message"]


def test_a_run_that_failed_as_a_whole_or_was_missed_says_why() -> None:
    failed = message(
        run_of(status=PolicyRunStatus.FAILED, error="include path /DC0/vm/gone does not exist")
    )
    assert failed.title == "Sendense: policy nightly — run failed"
    assert "The run failed: include path /DC0/vm/gone does not exist" in failed.body

    missed = message(
        run_of(
            status=PolicyRunStatus.MISSED,
            started_at=None,
            finished_at=None,
            error="the hub was down from its time until 3 h later, past the 1 h grace window",
        )
    )
    assert missed.title == "Sendense: policy nightly — run missed"
    assert missed.kind == "failure"
    assert "Missed: the hub was down" in missed.body


def test_one_vm_runs_name_it_and_shared_names_are_told_apart_by_path() -> None:
    assert message(run_of(WEB, status=PolicyRunStatus.FAILED)).title == (
        "Sendense: policy nightly — web 01 failed"
    )
    twin = PGTEST.model_copy(update={"vm_path": "/DC1/vm/pgtest1"})
    body = message(run_of(PGTEST, twin, status=PolicyRunStatus.COMPLETED)).body
    assert "- /DC0/vm/pgtest1: completed" in body and "- /DC1/vm/pgtest1: completed" in body


def test_a_closed_port_fails_in_one_line_without_the_secret_and_the_others_still_get_it(
    sink: NotifySink, logs: pytest.LogCaptureFixture
) -> None:
    closed = free_port()
    dead = f"json://sendense:{SECRET}@127.0.0.1:{closed}/hook?-apikey={SECRET}X"

    error = Notifier().send([dead, sink.url()], run_of(WEB, status=PolicyRunStatus.FAILED))

    assert len(sink.received) == 1
    assert error is not None and "\n" not in error
    assert error.startswith("1 of 2 notification targets failed: ")
    assert f"json://sendense:****@127.0.0.1:{closed}/hook?-apikey=**** (" in error
    assert "Connection error" in error
    assert SECRET not in error
    assert any(r.name == "apprise" and r.levelno == logging.WARNING for r in logs.records)
    assert SECRET not in logs.text


def test_a_refusing_target_fails_and_urllib3_request_lines_keep_no_token(
    logs: pytest.LogCaptureFixture,
) -> None:
    token = secrets.token_hex(16)
    with NotifySink(HTTPStatus.INTERNAL_SERVER_ERROR) as refusing:
        url = refusing.url(f"/hooks/x?-token={token}&+Authorization=Bearer%20{token}")
        error = Notifier().send([url], run_of(PGTEST, status=PolicyRunStatus.COMPLETED))
        [got] = refusing.received

    assert got.path == f"/hooks/x?token={token}"  # the token did reach the target
    assert got.headers["Authorization"] == f"Bearer {token}"
    assert error is not None and "error=500" in error
    assert token not in error
    assert "urllib3.connectionpool" in {r.name for r in logs.records}
    assert token not in logs.text


def test_a_url_apprise_cannot_use_fails_alone(sink: NotifySink) -> None:
    error = Notifier().send(
        [f"foo://admin:{SECRET}@host", sink.url()], run_of(PGTEST, status=PolicyRunStatus.COMPLETED)
    )

    assert len(sink.received) == 1
    assert error == (
        "1 of 2 notification targets failed: <unparsable foo:// URL> "
        "(unknown notification scheme foo://: Apprise has no such service)"
    )


def test_no_targets_send_nothing() -> None:
    assert Notifier().send([], run_of(PGTEST, status=PolicyRunStatus.COMPLETED)) is None


@pytest.mark.parametrize(
    ("url", "hidden", "shown"),
    [
        (
            f"mailto://backup:{SECRET}@mail.example.com",
            [SECRET],
            "mailto://backup:****@mail.example.com",
        ),
        (
            f"json://user:{SECRET}@10.0.0.5:8080/hook",
            [SECRET],
            "json://user:****@10.0.0.5:8080/hook",
        ),
        (
            "jsons://hooks.example.com/in?+Authorization=Bearer%20T0ken1234&method=PUT",
            ["T0ken1234"],
            "jsons://hooks.example.com/in?method=PUT&+Authorization=****",
        ),
        (
            "https://discord.com/api/webhooks/112233445566/AbCdEfGhIjKlMnOpQrStUvWxYz",
            ["112233445566", "AbCdEfGhIjKlMnOpQrStUvWxYz"],
            "discord://",
        ),
        (
            "https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/XyZsEcReTtOkEn123456",
            ["T01ABCDEF", "B02GHIJKL", "XyZsEcReTtOkEn123456"],
            "slack://",
        ),
    ],
)
def test_redaction_hides_passwords_and_tokens(url: str, hidden: list[str], shown: str) -> None:
    redacted = redact(url)

    assert redacted.startswith(shown)
    for secret in hidden:
        assert secret not in redacted
    assert "overflow=" not in redacted  # Apprise's defaults are not shown back


def test_a_url_apprise_cannot_parse_is_redacted_to_its_scheme() -> None:
    assert redact(f"foo://admin:{SECRET}@host") == "<unparsable foo:// URL>"
    assert redact(f"just {SECRET}") == "<unparsable URL>"


def test_sealed_urls_open_with_the_master_key_only() -> None:
    key, other = secrets.token_bytes(32), secrets.token_bytes(32)
    urls = [f"mailto://backup:{SECRET}@mail.example.com", "discord://1234567/token"]

    sealed = seal_urls(key, urls)

    assert sealed is not None and SECRET.encode() not in sealed
    assert open_urls(key, sealed) == urls
    with pytest.raises(CredentialError, match="do not open with the master key"):
        open_urls(other, sealed)
    # sealed for another purpose (a vCenter password), the bytes do not pass as URLs
    with pytest.raises(CredentialError, match="notification URLs"):
        open_urls(key, seal(key, json.dumps(urls).encode(), b"vmware_credentials:1:vc:user"))


def test_no_urls_seal_to_nothing() -> None:
    key = secrets.token_bytes(32)
    assert seal_urls(key, []) is None
    assert open_urls(key, None) == []


def policy_with_urls(db_url: str, key_path: Path, urls: list[str]) -> None:
    upgrade(db_url)
    with session_scope(db_url) as s:
        repo = add_repository(s, "main", key_path.parent / "repo")
        s.flush()
        sealed = seal_urls(load_or_create_key(key_path), urls)
        s.add(
            BackupPolicy(
                name="nightly",
                repository_id=repo.id,
                schedule="0 2 * * *",
                includes='["/DC0/vm"]',
                notify_sealed=sealed,
            )
        )


def urls_of(db_url: str, key: bytes) -> list[str]:
    with session_scope(db_url) as s:
        [policy] = s.scalars(select(BackupPolicy))
        return open_urls(key, policy.notify_sealed)


def test_a_key_rotation_reseals_the_policies_urls(db_url: str, tmp_path: Path) -> None:
    key_path = tmp_path / "master.key"
    urls = [f"mailto://backup:{SECRET}@mail.example.com"]
    policy_with_urls(db_url, key_path, urls)
    old = key_path.read_bytes()

    with session_scope(db_url) as s:
        assert VMwareCredentialService(s, key_path).rotate() == 0  # no credentials

    assert urls_of(db_url, key_path.read_bytes()) == urls
    with pytest.raises(CredentialError):
        urls_of(db_url, old)


def test_a_rotation_cut_before_the_key_rename_is_finished_by_the_policies_urls(
    db_url: str, tmp_path: Path
) -> None:
    key_path = tmp_path / "master.key"
    urls = ["discord://1234567/TOKENSECRETabcdef"]
    policy_with_urls(db_url, key_path, urls)
    old = key_path.read_bytes()
    with session_scope(db_url) as s:
        VMwareCredentialService(s, key_path).rotate()
    # the state of a crash after the commit and before the rename
    key_path.with_name("master.key.new").write_bytes(key_path.read_bytes())
    key_path.write_bytes(old)

    with session_scope(db_url) as s:
        key = VMwareCredentialService(s, key_path).key

    assert key != old and not key_path.with_name("master.key.new").exists()
    assert urls_of(db_url, key) == urls


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("foo://host/path", "unknown notification scheme foo://: Apprise has no such service"),
        ("nightly-alerts", "not an Apprise URL"),
        ("https://example.com/hook", "Apprise knows no service at this https:// address"),
        ("json://", "Apprise cannot read this json:// URL"),
        ("gotify://host/", "Apprise cannot use this gotify:// URL: An invalid Gotify Token"),
    ],
)
def test_validate_says_why_apprise_cannot_use_a_url(url: str, reason: str) -> None:
    said = validate(url)

    assert said is not None and said.startswith(reason)


def test_validate_quotes_no_secret_of_a_bad_url(logs: pytest.LogCaptureFixture) -> None:
    said = validate(f"slack://BAD!{SECRET}/B02GHIJKL/XyZ")

    assert said is not None and said.startswith("Apprise cannot use this slack:// URL")
    assert SECRET not in said
    assert SECRET not in logs.text


def test_validate_takes_good_urls() -> None:
    assert validate("mailto://backup:pw@mail.example.com") is None
    assert validate("jsons://hooks.example.com/in") is None
    assert validate("https://discord.com/api/webhooks/112233445566/AbCdEfGh") is None
