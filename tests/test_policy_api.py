"""Policies through the hub API (a real ``sendense hub``, no node) on the lab, and the
resolution of paths into VMs (pure, over the lab's real inventory).

Lab's DC0: cluster DC0_C0 (hosts H0-H2, pool Resources) runs DC0_C0_RP0_VM0 (on H1)
and DC0_C0_RP0_VM1 (on H0); the standalone host DC0_H0 runs DC0_H0_VM0 and DC0_H0_VM1;
every DC0 VM sits in the folder /DC0/vm.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from engine.config import Settings
from engine.contract.inventory import Inventory
from engine.db.models import BackupRepository, Node
from engine.db.session import session_scope, upgrade
from engine.hub.policies.resolve import Source, normalise, resolve
from engine.lab.setup import register
from engine.vcenter import get_inventory
from tests.fixtures.lab import Lab
from tests.fixtures.services import Services, make_services

CLUSTER = "/DC0/host/DC0_C0"
C0 = ["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"]
H0 = ["DC0_H0_VM0", "DC0_H0_VM1"]


# ---- resolution (pure) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    with lab.connect() as vc:
        return get_inventory(vc)


def names(sources: list[Source], include: list[str], exclude: list[str] | None = None) -> list[str]:
    return sorted(t.vm.name for t in resolve(sources, include, exclude or []).vms)


@pytest.mark.parametrize(
    ("path", "vms"),
    [
        ("/DC0/vm/DC0_H0_VM1", ["DC0_H0_VM1"]),  # a VM
        ("/DC0/vm", C0 + H0),  # a folder: every VM below it
        ("/DC0", C0 + H0),  # a datacenter
        ("/DC0/host", C0 + H0),  # the host folder: the VMs of its clusters and hosts
        (CLUSTER, C0),  # a cluster: the VMs on its hosts
        ("/DC0/host/DC0_C0/DC0_C0_H1", ["DC0_C0_RP0_VM0"]),  # a host
        ("/DC0/host/DC0_H0", H0),  # a standalone host's compute resource
        ("/DC0/host/DC0_H0/Resources", H0),  # a resource pool
        ("/DatabanxDC/vm/Prod", ["web 01"]),  # a folder of folders
        ("DC0/vm/DC0_H0_VM1/", ["DC0_H0_VM1"]),  # slashes do not matter
    ],
)
def test_each_kind_of_path_takes_its_vms(inventory: Inventory, path: str, vms: list[str]) -> None:
    assert names([Source(1, inventory)], [path]) == vms


def test_excludes_take_out_by_the_same_rules_and_unknown_paths_are_named(
    inventory: Inventory,
) -> None:
    sources = [Source(1, inventory)]
    assert names(sources, ["/DC0"], ["/DC0/host/DC0_H0", "/DC0/vm/DC0_C0_RP0_VM1"]) == [
        "DC0_C0_RP0_VM0"
    ]
    found = resolve(sources, ["/DC0/vm", "/DC0/vm/nope"], ["/DC0/vm/gone", CLUSTER])
    assert found.unknown_includes == ["/DC0/vm/nope"]
    assert found.unknown_excludes == ["/DC0/vm/gone"]
    assert sorted(t.vm.name for t in found.excluded) == C0
    assert {t.matched_by for t in found.vms} == {"/DC0/vm"}
    assert normalise(" DC0/vm/ ") == "/DC0/vm"


def test_a_vm_added_to_an_included_folder_later_is_taken_at_the_next_resolution(
    inventory: Inventory,
) -> None:
    before = names([Source(1, inventory)], ["/DC0/vm"])
    added = inventory.vms[0].model_copy(
        update={"name": "new", "path": "/DC0/vm/new", "moref": "vm-x"}
    )
    later = inventory.model_copy(update={"vms": [*inventory.vms, added]})
    assert names([Source(1, later)], ["/DC0/vm"]) == sorted([*before, "new"])


def test_a_path_in_two_vcenters_takes_the_vms_of_both(inventory: Inventory) -> None:
    other = inventory.model_copy(update={"vcenter": "vc2.example:443"})
    found = resolve([Source(1, inventory), Source(2, other)], [CLUSTER], [])
    assert sorted((t.source.vcenter_host, t.vm.name) for t in found.vms) == sorted(
        [(inventory.vcenter, n) for n in C0] + [("vc2.example:443", n) for n in C0]
    )


# ---- the API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """One hub on the lab for the module (policies get names of their own), its one node
    disabled: queued jobs stay queued."""
    home = tmp_path_factory.mktemp("policy-api")
    settings = Settings(home=home)
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as s:
        register(s, settings, lab.info)
        s.add(Node(name="off", url="http://127.0.0.1:9", enabled=False))
    svc = make_services(home)
    svc.start(svc.hub)
    yield svc
    svc.stop()


@pytest.fixture
def api(hub: Services) -> Iterator[httpx.Client]:
    with hub.client() as client:
        yield client


def body(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "repository_id": 1,
        "schedule": "0 2 * * *",
        "include": [CLUSTER],
        **fields,
    }


def stored(api: httpx.Client) -> list[str]:
    return [p["name"] for p in api.get("/api/v1/policies").json()]


def test_a_policy_is_added_shown_edited_enabled_and_deleted(api: httpx.Client) -> None:
    added = api.post(
        "/api/v1/policies",
        json=body(
            "crud",
            timezone="Europe/Berlin",
            exclude=["/DC0/vm/DC0_C0_RP0_VM1"],
            retention={"keep_last": 3, "keep_daily": 7},
        ),
    )
    assert added.status_code == 201, added.text
    policy = added.json()
    assert (policy["schedule"], policy["timezone"], policy["backup_type"]) == (
        "0 2 * * *",
        "Europe/Berlin",
        "auto",
    )
    assert policy["retention"] == {
        "keep_last": 3,
        "keep_daily": 7,
        "keep_weekly": None,
        "keep_monthly": None,
        "keep_yearly": None,
    }
    assert policy["enabled"] and policy["next_run_at"] and policy["last_run"] is None
    assert api.get("/api/v1/policies/crud").json() == policy
    assert "crud" in stored(api)

    preview = api.get("/api/v1/policies/crud/vms").json()
    assert [(v["vm_name"], v["matched_by"]) for v in preview["vms"]] == [
        ("DC0_C0_RP0_VM0", CLUSTER)
    ]
    assert [v["vm_name"] for v in preview["excluded"]] == ["DC0_C0_RP0_VM1"]

    edited = api.patch(
        "/api/v1/policies/crud",
        json={
            "name": "crud2",
            "include": ["/DC0/host/DC0_H0"],
            "exclude": [],
            "backup_type": "full",
        },
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json()["include"], edited.json()["backup_type"]) == (
        ["/DC0/host/DC0_H0"],
        "full",
    )
    assert edited.json()["retention"]["keep_last"] == 3  # not given: unchanged
    assert api.get("/api/v1/policies/crud").status_code == 404
    assert [v["vm_name"] for v in api.get("/api/v1/policies/crud2/vms").json()["vms"]] == H0

    off = api.post("/api/v1/policies/crud2/disable").json()
    assert (off["enabled"], off["next_run_at"]) == (False, None)
    on = api.post("/api/v1/policies/crud2/enable").json()
    assert on["enabled"] and on["next_run_at"]

    assert api.delete("/api/v1/policies/crud2").status_code == 204
    gone = api.get("/api/v1/policies/crud2")
    assert (gone.status_code, gone.json()) == (404, {"detail": "policy 'crud2' does not exist"})
    assert api.get("/api/v1/policies/crud2/runs").status_code == 404
    assert api.get("/api/v1/policy-runs/999999").status_code == 404


def test_notification_urls_are_stored_sealed_and_answered_redacted(
    api: httpx.Client, hub: Services
) -> None:
    secret = "hook-secret-6f1e"
    answer = api.post(
        "/api/v1/policies",
        json=body("told", notify=[f"json://robot:{secret}@127.0.0.1:9/hook"]),
    )
    assert answer.status_code == 201, answer.text
    assert secret not in answer.text
    assert answer.json()["notify"] and answer.json()["notify"][0].startswith("json://")
    assert secret not in api.get("/api/v1/policies").text
    for written in hub.home.glob("sendense.db*"):  # the WAL too
        assert secret.encode() not in written.read_bytes()
    api.delete("/api/v1/policies/told")


BAD_INPUT = [
    (body("b1", schedule="61 * * * *"), 422, "schedule '61 * * * *' is not a cron expression"),
    (body("b2", schedule="0 2 * *"), 422, "is not a cron expression: give 5 fields"),
    (body("b3", timezone="Mars/Olympus_Mons"), 422, "timezone 'Mars/Olympus_Mons' is not a known"),
    (
        body("b4", include=[CLUSTER, "/DC0/vm/no-such-vm"]),
        422,
        "include path '/DC0/vm/no-such-vm' is in no registered vCenter's inventory",
    ),
    (
        body("b5", exclude=["/DC0/vm/gone"]),
        422,
        "exclude path '/DC0/vm/gone' is in no registered vCenter's inventory",
    ),
    (body("b6", include=["/DC0/network"]), 422, "the includes select no VM"),
    (
        body("b7", exclude=[CLUSTER]),
        422,
        "the includes select no VM once the excludes are taken out",
    ),
    (body("b8", retention={"keep_daily": 0}), 422, "retention.keep_daily"),
    (body("b9", repository_id=4242), 404, "repository 4242 does not exist"),
    (body("b/10"), 422, "policy name 'b/10' must not contain '/'"),
    (body("b11", include=[]), 422, "include"),
    (body("b12", notify=["nosuch://robot:s3cret-x@host/"]), 422, "notification URL 1 of 1"),
    (body("b13", backup_type="differential"), 422, "backup_type"),
]


@pytest.mark.parametrize(("request_body", "status", "says"), BAD_INPUT)
def test_bad_input_is_one_line_and_nothing_is_stored(
    api: httpx.Client, request_body: dict[str, Any], status: int, says: str
) -> None:
    answer = api.post("/api/v1/policies", json=request_body)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert says in detail
    assert "\n" not in detail
    assert "s3cret-x" not in detail
    assert request_body["name"] not in stored(api)


def test_a_name_taken_is_a_conflict_and_an_edit_to_bad_input_changes_nothing(
    api: httpx.Client,
) -> None:
    assert api.post("/api/v1/policies", json=body("taken")).status_code == 201
    again = api.post("/api/v1/policies", json=body("taken", schedule="0 3 * * *"))
    assert (again.status_code, again.json()["detail"]) == (
        409,
        "a policy named 'taken' exists already",
    )
    before = api.get("/api/v1/policies/taken").json()
    for change, status in (
        ({"schedule": "0 25 * * *"}, 422),
        ({"include": ["/DC0/vm/no-such-vm"]}, 422),
        ({"repository_id": 4242}, 404),
        ({}, 422),
    ):
        refused = api.patch("/api/v1/policies/taken", json=change)
        assert refused.status_code == status, refused.text
    assert api.get("/api/v1/policies/taken").json() == before
    assert api.post("/api/v1/policies", json=body("other")).status_code == 201
    clash = api.patch("/api/v1/policies/other", json={"name": "taken"})
    assert clash.status_code == 409
    for name in ("taken", "other"):
        api.delete(f"/api/v1/policies/{name}")


def test_a_disabled_repository_is_refused(api: httpx.Client, hub: Services) -> None:
    settings = Settings(home=hub.home)
    with session_scope(settings.db_url) as s:
        row = BackupRepository(name="off", path=str(hub.home / "off"), enabled=False)
        s.add(row)
        s.flush()
        repo_id = row.id
    try:
        refused = api.post("/api/v1/policies", json=body("on-off", repository_id=repo_id))
        assert refused.status_code == 422
        assert refused.json()["detail"] == f"repository {repo_id} (off) is disabled"
    finally:
        with session_scope(settings.db_url) as s:
            s.execute(
                update(BackupRepository).where(BackupRepository.id == repo_id).values(enabled=True)
            )


def test_a_manual_run_is_listed_with_its_vms(api: httpx.Client) -> None:
    assert (
        api.post(
            "/api/v1/policies", json=body("manual", include=["/DC0/vm/DC0_H0_VM1"])
        ).status_code
        == 201
    )
    started = api.post("/api/v1/policies/manual/run")
    assert started.status_code == 202, started.text
    run = started.json()
    assert (run["trigger"], run["status"], run["policy_name"]) == ("manual", "running", "manual")
    (vm,) = run["vms"]
    assert (vm["vm_name"], vm["vm_path"], vm["status"]) == (
        "DC0_H0_VM1",
        "/DC0/vm/DC0_H0_VM1",
        "queued",
    )
    assert vm["backup_id"] and vm["queue_position"] >= 1
    assert (
        api.get(f"/api/v1/policy-runs/{run['id']}").json()["vms"][0]["backup_id"] == vm["backup_id"]
    )
    listed = api.get("/api/v1/policies/manual/runs", params={"limit": 5}).json()
    assert [r["id"] for r in listed] == [run["id"]]
    assert api.get("/api/v1/policies/manual").json()["last_run"]["id"] == run["id"]
    job = api.get(f"/api/v1/backups/{vm['backup_id']}").json()
    assert (job["policy_name"], job["policy_run_id"]) == ("manual", run["id"])
    api.delete(f"/api/v1/backups/{vm['backup_id']}")  # cancelled in the queue
    api.delete("/api/v1/policies/manual")


def test_answers_are_json_with_one_line_details(api: httpx.Client) -> None:
    for method, path in (
        ("GET", "/api/v1/policies/nope"),
        ("POST", "/api/v1/policies/nope/run"),
        ("GET", "/api/v1/policies/nope/vms"),
        ("POST", "/api/v1/policies/nope/enable"),
    ):
        answer = api.request(method, path)
        assert answer.status_code == 404
        assert json.loads(answer.text) == {"detail": "policy 'nope' does not exist"}
