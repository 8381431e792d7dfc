"""Policy runs end to end: a real hub and node on the lab back up the DC0 VMs a policy
names (1 MiB disks: seconds), through ``sendense policy run --wait``, the run's view,
its notification (Apprise ``json://`` to a loopback sink), retention after the run, and
a scheduled run fired by moving the hub's clock (``hub.clock_file``), exactly once,
across a hub restart too."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.clock import FileClock
from tests.conftest import wait_for
from tests.fixtures.lab import LabRegistration
from tests.fixtures.notify_sink import NotifySink
from tests.fixtures.services import Services

pytestmark = pytest.mark.slow

TAKEN = ["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1", "DC0_H0_VM0"]
EXCLUDED = "DC0_H0_VM1"


def runs_of(svc: Services, policy: str) -> list[dict[str, Any]]:
    with svc.client() as api:
        answer = api.get(f"/api/v1/policies/{policy}/runs")
        assert answer.status_code == 200, answer.text
        return list(answer.json())


def ended(svc: Services, policy: str, count: int) -> list[dict[str, Any]]:
    """The policy's runs once ``count`` of them ended (newest first)."""

    def done() -> list[dict[str, Any]] | None:
        found = runs_of(svc, policy)
        finished = [r for r in found if r["status"] != "running"]
        return found if len(finished) >= count else None

    return list(wait_for(done, timeout=120, interval=0.5, what=f"{count} ended run(s) of {policy}"))


def test_policy_run_wait_backs_up_every_vm_it_names_and_none_it_excludes(
    services: Services, lab_registered: LabRegistration
) -> None:
    with NotifySink() as sink:
        added = services.sendense(
            "policy", "add", "dc0",
            "--repo", str(lab_registered.repository_id),
            "--schedule", "0 2 * * *",
            "--include", "/DC0/host/DC0_C0",
            "--include", "/DC0/host/DC0_H0",
            "--exclude", f"/DC0/vm/{EXCLUDED}",
            "--keep-last", "1",
            "--notify", "-",
            "--notify-on-success",
            input=sink.url(userinfo="robot:sink-secret-41@") + "\n",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr

        done = services.sendense("policy", "run", "dc0", "--wait")
        assert done.returncode == 0, done.stderr + done.stdout
        assert "completed" in done.stdout
        for vm in TAKEN:
            assert vm in done.stdout
        assert EXCLUDED not in done.stdout
        assert "sink-secret-41" not in done.stdout + done.stderr

        (run,) = runs_of(services, "dc0")
        assert (run["status"], run["trigger"], run["error"]) == ("completed", "manual", None)
        assert sorted(vm["vm_name"] for vm in run["vms"]) == TAKEN
        for vm in run["vms"]:
            assert vm["status"] == "completed" and vm["backup_id"]
            assert vm["bytes_transferred"] > 0 and vm["duration_seconds"] is not None
            assert vm["error"] is None and vm["queue_position"] is None
        with services.client() as api:
            assert api.get("/api/v1/backups", params={"vm_name": EXCLUDED}).json() == []
            points = api.get("/api/v1/restore-points").json()
        assert sorted(p["vm_name"] for p in points) == TAKEN

        wait_for(lambda: sink.received, timeout=30, what="the run's notification")
        (message,) = sink.received
        assert all(vm in message.body["message"] for vm in TAKEN)
        assert run["notify_error"] is None

        # The second run: retention (keep the last 1) lets each VM's first point go.
        again = services.sendense("policy", "run", "dc0", "--wait")
        assert again.returncode == 0, again.stderr + again.stdout
        second = runs_of(services, "dc0")[0]
        assert second["status"] == "completed"
        assert len(second["retention"]) == len(TAKEN), second["retention"]
        wait_for(lambda: len(sink.received) == 2, timeout=30, what="the second notification")
    with services.client() as api:
        kept = api.get("/api/v1/restore-points").json()
    assert sorted(p["point_id"] for p in kept) == sorted(vm["backup_id"] for vm in second["vms"])


def test_a_scheduled_run_fires_once_when_the_hubs_clock_reaches_it(
    services_factory: Callable[..., Services],
    lab_registered: LabRegistration,
    tmp_path: Path,
) -> None:
    clock_file = tmp_path / "hub-clock"
    hub_clock = FileClock(clock_file)
    day = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    hub_clock.set(day + timedelta(days=1, hours=2, minutes=50))
    svc = services_factory(extra_env={"SENDENSE_HUB__CLOCK_FILE": str(clock_file)})
    added = svc.sendense(
        "policy", "add", "at3",
        "--repo", str(lab_registered.repository_id),
        "--schedule", "0 3 * * *",
        "--include", "/DC0/vm/DC0_H0_VM0",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr

    hub_clock.set(day + timedelta(days=1, hours=3, seconds=1))
    (run,) = ended(svc, "at3", 1)
    assert (run["trigger"], run["status"]) == ("schedule", "completed")
    assert run["scheduled_for"] == (day + timedelta(days=1, hours=3)).isoformat()

    svc.hub.stop()  # a restart at the same time fires nothing again
    svc.start(svc.hub)
    hub_clock.set(day + timedelta(days=2, hours=3, seconds=1))
    newest, first = ended(svc, "at3", 2)
    assert first["id"] == run["id"]
    assert newest["scheduled_for"] == (day + timedelta(days=2, hours=3)).isoformat()
    assert len(runs_of(svc, "at3")) == 2
