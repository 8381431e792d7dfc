"""The routes the console lives on, against a real hub and the vcsim lab."""

from __future__ import annotations

from collections.abc import Callable

from engine.vcenter.connection import split_host
from tests.fixtures.lab import LabRegistration
from tests.fixtures.services import Services


def test_vcenters_inventory_and_vm_contexts(
    services_factory: Callable[..., Services], lab_registered: LabRegistration
) -> None:
    svc = services_factory(node=False)
    lab = lab_registered.lab
    with svc.client() as api:
        vcenters = api.get("/api/v1/vcenters").json()
        assert [v["id"] for v in vcenters] == [lab_registered.credential_id]
        assert vcenters[0]["host"] == lab.host and vcenters[0]["thumbprint"] == lab.thumbprint
        assert lab.password not in api.get("/api/v1/vcenters").text

        vc_id = lab_registered.credential_id
        assert api.post(f"/api/v1/vcenters/{vc_id}/test").json()["ok"] is True
        name, port = split_host(lab.host)
        probe = api.get("/api/v1/vcenters/probe", params={"host": f"{name}:{port}"}).json()
        assert probe == {"thumbprint": lab.thumbprint}

        inventory = api.get(f"/api/v1/vcenters/{vc_id}/inventory")
        assert inventory.status_code == 200, inventory.text
        assert "pgtest1" in inventory.text

        vms = api.get("/api/v1/vms").json()
        pg = next(v for v in vms if v["vm_name"] == "pgtest1")
        assert pg["context_id"] == lab_registered.context_id
        assert pg["credential_id"] == vc_id
        assert [d["disk_key"] for d in pg["disks"]] == [2000, 2001]

        added = api.post("/api/v1/vms", json={"vcenter_id": vc_id, "path": lab.web01.path})
        assert added.status_code == 200, added.text
        assert added.json()["vm_name"] == lab.web01.name
        assert added.json()["credential_id"] == vc_id
        again = api.post("/api/v1/vms", json={"vcenter_id": vc_id, "path": lab.web01.path})
        assert again.json()["context_id"] == added.json()["context_id"]  # a refresh, not a twin

        missing = api.post("/api/v1/vms", json={"vcenter_id": vc_id, "path": "/DatabanxDC/vm/no"})
        assert 400 <= missing.status_code < 500
        assert api.get("/api/v1/vcenters/999/inventory").status_code == 404


def test_adding_a_vcenter_needs_a_thumbprint_or_trust(
    services_factory: Callable[..., Services], lab_registered: LabRegistration
) -> None:
    svc = services_factory(node=False)
    lab = lab_registered.lab
    body = {"host": lab.host, "username": lab.user, "password": lab.password, "name": "again"}
    with svc.client() as api:
        refused = api.post("/api/v1/vcenters", json=body)
        assert refused.status_code == 422
        trusted = api.post("/api/v1/vcenters", json={**body, "trust": True})
        assert trusted.status_code == 201, trusted.text
        assert trusted.json()["thumbprint"] == lab.thumbprint
        assert "password" not in trusted.json()


def test_adding_a_vcenter_checks_the_login_unless_told_not_to(
    services_factory: Callable[..., Services], lab_registered: LabRegistration
) -> None:
    """A given thumbprint pins the certificate; the login is still tried before the
    password is stored, so a typo is said now rather than at the first backup."""
    svc = services_factory(node=False)
    lab = lab_registered.lab
    wrong = {"host": lab.host, "username": lab.user, "password": "not-the-password"}
    with svc.client() as api:
        for body in ({**wrong, "thumbprint": lab.thumbprint}, {**wrong, "trust": True}):
            refused = api.post("/api/v1/vcenters", json=body)
            assert refused.status_code == 502, refused.text
            assert "refused the login" in refused.json()["detail"]
            assert "not-the-password" not in refused.text
        other = {**wrong, "thumbprint": "cd" * 32, "password": lab.password}
        mismatch = api.post("/api/v1/vcenters", json=other)
        assert mismatch.status_code == 502 and lab.password not in mismatch.text
        stored = {**wrong, "thumbprint": lab.thumbprint, "verify": False, "name": "untried"}
        untried = api.post("/api/v1/vcenters", json=stored)
        assert untried.status_code == 201, untried.text
        assert untried.json()["thumbprint"] == lab.thumbprint
        test = api.post(f"/api/v1/vcenters/{untried.json()['id']}/test").json()
        assert test["ok"] is False and "not-the-password" not in test["message"]
        names = [v["name"] for v in api.get("/api/v1/vcenters").json()]
    assert names.count("untried") == 1 and len(names) == 2
