"""``sendense policy`` against a real hub on the lab (its one node disabled: jobs a run
queues stay queued): the commands, their --json, bad input as one line with the exit
code a script tests and nothing stored, and notification URLs that never show."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from engine.config import Settings
from engine.db.models import Node
from engine.db.session import session_scope
from tests.fixtures.lab import LabRegistration
from tests.fixtures.services import Services

CLUSTER = "/DC0/host/DC0_C0"


@pytest.fixture
def hub(
    services_factory: Callable[..., Services], lab_registered: LabRegistration, settings: Settings
) -> Services:
    with session_scope(settings.db_url) as s:
        s.add(Node(name="off", url="http://127.0.0.1:9", enabled=False))
    return services_factory(node=False)


def ok(svc: Services, *args: str, input: str | None = None) -> str:
    done = svc.sendense("policy", *args, input=input)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def as_json(svc: Services, *args: str) -> Any:
    return json.loads(ok(svc, *args, "--json"))


ADD = ("add", "nightly", "--repo", "1", "--schedule", "0 2 * * *", "--include", CLUSTER)


def test_a_policy_is_added_listed_edited_run_and_deleted(hub: Services) -> None:
    added = ok(
        hub,
        *ADD,
        "--timezone", "Europe/Berlin",
        "--exclude", "/DC0/vm/DC0_C0_RP0_VM1",
        "--keep-last", "3",
        "--type", "full",
    )  # fmt: skip
    assert "nightly" in added and "0 2 * * * (Europe/Berlin)" in added
    assert "keep:     last 3" in added and "next run: " in added
    (listed,) = as_json(hub, "list")
    assert (listed["name"], listed["backup_type"], listed["exclude"]) == (
        "nightly",
        "full",
        ["/DC0/vm/DC0_C0_RP0_VM1"],
    )

    vms = ok(hub, "vms", "nightly")
    assert "DC0_C0_RP0_VM0" in vms and "excluded by /DC0/vm/DC0_C0_RP0_VM1" in vms
    assert "1 VM(s) backed up, 1 excluded" in vms

    # Only what is given changes; a --keep-* rule joins the others.
    edited = as_json(hub, "edit", "nightly", "--name", "nights", "--keep-daily", "7")
    assert edited["name"] == "nights" and edited["exclude"] == ["/DC0/vm/DC0_C0_RP0_VM1"]
    assert (edited["retention"]["keep_last"], edited["retention"]["keep_daily"]) == (3, 7)
    assert (edited["schedule"], edited["timezone"], edited["backup_type"]) == (
        "0 2 * * *",
        "Europe/Berlin",
        "full",
    )
    assert as_json(hub, "edit", "nights", "--keep-all")["retention"]["keep_last"] is None
    assert as_json(hub, "disable", "nights")["enabled"] is False
    assert as_json(hub, "enable", "nights")["next_run_at"]

    shown = ok(hub, "run", "nights")
    assert "(manual," in shown and "running" in shown
    assert "DC0_C0_RP0_VM0" in shown and "queued" in shown
    (run,) = as_json(hub, "runs", "nights")
    assert run["trigger"] == "manual" and [v["vm_name"] for v in run["vms"]] == ["DC0_C0_RP0_VM0"]

    assert "deleted policy nights" in ok(hub, "delete", "nights")
    gone = hub.sendense("policy", "show", "nights")
    assert (gone.returncode, gone.stderr.strip()) == (7, "error: policy 'nights' does not exist")


BAD = [
    (("--schedule", "61 * * * *"), 2, "schedule '61 * * * *' is not a cron expression"),
    (("--timezone", "Mars/Olympus_Mons"), 2, "timezone 'Mars/Olympus_Mons' is not a known"),
    (("--include", "/DC0/vm/no-such-vm"), 2, "'/DC0/vm/no-such-vm' is in no registered vCenter"),
    (("--exclude", CLUSTER), 2, "the includes select no VM once the excludes are taken out"),
    (("--keep-daily", "0"), 2, "keep_daily"),
    (("--repo", "4242"), 7, "repository 4242 does not exist"),
]


def test_bad_input_is_one_line_with_its_exit_code_and_nothing_is_stored(hub: Services) -> None:
    with ThreadPoolExecutor(len(BAD)) as pool:  # independent: asked all at once
        done = list(pool.map(lambda bad: hub.sendense("policy", *ADD, *bad[0]), BAD))
    for (extra, code, says), answer in zip(BAD, done, strict=True):
        assert answer.returncode == code, (extra, answer.stderr)
        assert says in answer.stderr, (extra, answer.stderr)
        assert len(answer.stderr.strip().splitlines()) == 1, answer.stderr
    # What the command line itself refuses is click's usage error (exit 2 too).
    no_include = hub.sendense("policy", "add", "x", "--repo", "1", "--schedule", "0 2 * * *")
    assert no_include.returncode == 2 and "--include" in no_include.stderr
    nothing = hub.sendense("policy", "edit", "nightly")
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    assert as_json(hub, "list") == []
    ok(hub, *ADD)
    taken = hub.sendense("policy", *ADD)
    assert (taken.returncode, taken.stderr.strip()) == (
        8,
        "error: a policy named 'nightly' exists already",
    )


def test_notification_urls_come_from_stdin_and_never_show(hub: Services) -> None:
    secret = "hook-secret-0b7d"
    urls = f"json://robot:{secret}@127.0.0.1:9/a\n\njson://127.0.0.1:9/b?token={secret}\n"
    added = hub.sendense("policy", *ADD, "--notify", "-", "--notify-on-success", input=urls)
    assert added.returncode == 0, added.stderr
    assert secret not in added.stdout + added.stderr
    shown = as_json(hub, "show", "nightly")
    assert len(shown["notify"]) == 2 and shown["notify_on_success"] is True
    assert secret not in json.dumps(shown) + ok(hub, "list")
    bad = hub.sendense(
        "policy", "edit", "nightly", "--notify", "-", input=f"nosuch://{secret}@x/\n"
    )
    assert bad.returncode == 2 and "notification URL 1 of 1" in bad.stderr
    assert secret not in bad.stderr
    assert as_json(hub, "edit", "nightly", "--no-notify")["notify"] == []
