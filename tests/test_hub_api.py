"""The hub's API on a real ``sendense hub`` process: auth, errors as one line, and the
promise that a refused backup leaves nothing behind (no qemu-nbd, no qcow2, no row).

These need no vCenter: the VM context is written into the test's database directly, and
the failure paths under test end before anything would talk to vCenter.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select

from engine.api.errors import install_error_handlers
from engine.config import Settings
from engine.db.models import BackupJob
from engine.db.session import session_scope
from tests.conftest import free_port, wait_for
from tests.fixtures.backups import seed_vm, vm_context
from tests.fixtures.services import Services, make_services, ports_free, processes_mentioning


def assert_nothing_left(settings: Settings, svc: Services) -> None:
    assert processes_mentioning(str(settings.home), "qemu-nbd") == []
    assert ports_free(svc.nbd_ports)
    assert list(Path(settings.repository_default).rglob("*.qcow2")) == []
    with session_scope(settings.db_url) as s:
        assert s.scalar(select(func.count()).select_from(BackupJob)) == 0


@pytest.fixture
def hub(services_factory: Callable[..., Services]) -> Services:
    return services_factory(node=False)


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """One hub (no node) for the tests that change nothing: a hub start is seconds."""
    svc = make_services(tmp_path_factory.mktemp("shared-hub"))
    svc.start(svc.hub)
    yield svc
    svc.stop()


def test_health_is_open_everything_else_needs_the_token(shared_hub: Services) -> None:
    with shared_hub.client() as api:
        assert api.get("/api/v1/health").json()["status"] == "ok"
        assert api.get("/openapi.json").json()["paths"]["/api/v1/backups"]["post"]
        assert api.get("/api/v1/backups").status_code == 200
        anonymous = api.get("/api/v1/backups", headers={"Authorization": ""})
        assert anonymous.status_code == 401
        assert "bearer token" in anonymous.json()["detail"]
        wrong = api.get("/api/v1/vms", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


def test_token_file_is_0600_and_shown_by_the_cli(shared_hub: Services) -> None:
    token_file = shared_hub.home / "api-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    shown = shared_hub.sendense("token", "show")
    assert shown.returncode == 0
    assert shown.stdout.strip() == shared_hub.token


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"vm_name": "pgtest1", "repository_id": ["x"]}', "repository_id"),
        (b'{"vm_name": 5, "repository_id": 1}', "vm_name"),
        (b'{"repository_id": 1}', "vm_name"),
        (b'{"vm_name": "", "repository_id": 1}', "vm_name"),
        (b'["vm_name"]', "body"),
        (b'{"vm_name": "pgtest1", "repository_id": 0}', "repository_id"),
    ],
)
def test_bad_requests_get_4xx_with_one_line(shared_hub: Services, body: bytes, needle: str) -> None:
    with shared_hub.client() as api:
        r = api.post("/api/v1/backups", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    assert needle in detail


def test_other_bad_inputs_are_4xx(shared_hub: Services) -> None:
    with shared_hub.client() as api:
        assert api.get("/api/v1/backups/backup-nope-1").status_code == 404
        assert api.delete("/api/v1/backups/backup-nope-1").status_code == 404
        assert api.get("/api/v1/backups", params={"limit": "many"}).status_code == 422
        r = api.post("/api/v1/backups/backup-nope-1/events", json={"events": "x"})
        assert r.status_code == 422
        line = {"type": "progress", "job_id": "backup-nope-1", "disk_key": 2000}
        r = api.post("/api/v1/backups/backup-nope-1/events", json={**line, "bytes_done": 0})
        assert r.status_code == 422  # a progress line without its bytes_total
        r = api.post(
            "/api/v1/backups/backup-nope-1/events", json={**line, "bytes_done": 0, "bytes_total": 1}
        )
        assert r.status_code == 404
        assert api.get("/api/v1/vcenters/999/inventory").status_code == 404
        assert api.post("/api/v1/vms", json={"vcenter_id": "x"}).status_code == 422


def test_unknown_vm_and_repository_are_404(settings: Settings, hub: Services) -> None:
    repo_id = seed_vm(settings, credential=True)
    with hub.client() as api:
        r = api.post("/api/v1/backups", json={"vm_name": "nope", "repository_id": repo_id})
        assert r.status_code == 404 and "nope" in r.json()["detail"]
        r = api.post("/api/v1/backups", json={"vm_name": "pgtest1", "repository_id": 99})
        assert r.status_code == 404 and "repository 99" in r.json()["detail"]
    assert_nothing_left(settings, hub)


def test_context_without_credential_is_422_and_leaves_nothing(
    settings: Settings, hub: Services
) -> None:
    repo_id = seed_vm(settings, credential=False)
    with hub.client() as api:
        # The seed sends repository_id as a string; that is accepted.
        r = api.post(
            "/api/v1/backups",
            json={"vm_name": "pgtest1", "repository_id": str(repo_id), "backup_type": "full"},
        )
    assert r.status_code == 422
    assert r.json() == {"detail": "VM context missing credential_id"}
    assert_nothing_left(settings, hub)


def test_node_down_is_503_and_everything_started_is_undone(
    settings: Settings, hub: Services
) -> None:
    """The hub creates both qcow2 files and starts both exports before it asks the node;
    when the node does not answer, all of that is undone before the 503."""
    repo_id = seed_vm(settings, credential=True)
    with hub.client() as api:
        r = api.post("/api/v1/backups", json={"vm_name": "pgtest1", "repository_id": repo_id})
        assert r.status_code == 503, r.text
        assert "unreachable" in r.json()["detail"]
        assert "test-only" not in r.text
        assert api.get("/api/v1/backups").json() == []
    assert_nothing_left(settings, hub)
    assert "test-only" not in hub.hub.log()


def test_nodes_cli_registers_a_node_and_the_hub_lists_it(hub: Services) -> None:
    added = hub.sendense("nodes", "add", "--name", "site-b", "--url", "http://127.0.0.1:9")
    assert added.returncode == 0, added.stderr
    bad = hub.sendense("nodes", "add", "--name", "site-c", "--url", "ftp://x")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    with hub.client() as api:
        nodes = {n["name"]: n for n in api.get("/api/v1/nodes").json()}
    # Neither the hub's default nor site-b answers (this test runs no node); each counts
    # as up, as a node starting beside the hub would, until fleet.down_after_seconds pass.
    for name in ("local", "site-b"):
        assert nodes[name]["state"] == "up" and nodes[name]["version"] is None
        assert nodes[name]["error"]
    assert nodes["site-b"]["url"] == "http://127.0.0.1:9"


def test_repositories_report_space(settings: Settings, hub: Services) -> None:
    seed_vm(settings, credential=False)
    with hub.client() as api:
        repos = api.get("/api/v1/repositories").json()
        vcenters = api.get("/api/v1/vcenters").json()
    assert repos[0]["name"] == "default"
    assert repos[0]["free_bytes"] > 0 and repos[0]["total_bytes"] >= repos[0]["free_bytes"]
    assert vcenters == []


def test_an_unforeseen_error_is_one_json_line_and_the_connection_lives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Starlette's own 500 re-raises, and the server then dropped the keep-alive
    connection; the handlers answer JSON, log the traceback, and keep it."""
    app = FastAPI()
    install_error_handlers(app, service="hub")

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a secret the answer must not carry")

    @app.get("/fine")
    def fine() -> dict[str, bool]:
        return {"ok": True}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn to start")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/boom")
        answer = conn.getresponse()
        body = answer.read()
        sock = conn.sock
        assert answer.status == 500
        assert json.loads(body) == {"detail": "internal error (see the hub log)"}
        conn.request("GET", "/fine")  # the same connection, not a new one
        again = conn.getresponse()
        assert again.status == 200 and json.loads(again.read()) == {"ok": True}
        assert conn.sock is sock
        conn.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert "a secret the answer must not carry" in caplog.text  # the traceback is logged


def test_inputs_are_validated_at_the_edge(shared_hub: Services) -> None:
    """What the issue's fuzzing found answering 500: huge ids, bad hosts, NUL in paths,
    a throttle that never ends. Each is a 422 with one line now."""
    huge = 2**63
    with shared_hub.client() as api:
        calls = [
            api.post(f"/api/v1/vcenters/{huge}/test"),
            api.get(f"/api/v1/vcenters/{huge}/inventory"),
            api.post("/api/v1/vms", json={"vcenter_id": huge, "path": "/DC/vm/x"}),
            api.post("/api/v1/vms", json={"vcenter_id": 1, "path": "/DC/vm/\x00x"}),
            api.post("/api/v1/repositories", json={"name": "r", "path": "/srv/\x00r"}),
            api.post("/api/v1/repositories", json={"name": "r", "path": "relative/r"}),
            api.post(
                "/api/v1/backups",
                json={"vm_name": "pgtest1", "repository_id": 1, "max_rate_mib": 5e-324},
            ),
            api.post("/api/v1/backups", json={"vm_name": "a", "vm_path": "/a", "repository_id": 1}),
            api.post("/api/v1/backups", json={"repository_id": huge, "vm_name": "pgtest1"}),
            api.get("/api/v1/backups", params={"status": "sleeping"}),
            api.get("/api/v1/backups/a%00b"),
        ]
        for host in ("x:abc", "[::1]:", "h" * 300, "a..b", "x\x01y"):
            calls.append(api.get("/api/v1/vcenters/probe", params={"host": host}))
            body = {"host": host, "username": "u", "password": "test-only", "thumbprint": "ab" * 32}
            calls.append(api.post("/api/v1/vcenters", json=body))
    for r in calls:
        assert r.status_code == 422, (r.request.url, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail
        assert "test-only" not in r.text


def test_the_probe_tells_nothing_but_a_certificate(shared_hub: Services) -> None:
    """A closed port, a plain-HTTP server (the hub itself) and a name that does not
    resolve answer alike: the hub is no port scanner."""
    plain = shared_hub.hub.url.removeprefix("http://")
    with shared_hub.client() as api:
        for host in (f"127.0.0.1:{free_port()}", plain, "no-such-host.invalid"):
            r = api.get("/api/v1/vcenters/probe", params={"host": host})
            assert r.status_code == 502
            assert r.json() == {"detail": f"no vCenter with a certificate answers at {host}"}


def test_repositories_refuse_system_and_data_folders(shared_hub: Services) -> None:
    home = shared_hub.home
    with shared_hub.client() as api:
        for path in ("/", "/etc", "/usr/local/backups", "/var", str(home), str(home / "logs")):
            r = api.post("/api/v1/repositories", json={"name": "r", "path": path})
            assert r.status_code == 422, (path, r.text)
            assert "\n" not in r.json()["detail"]
        assert "data folder" in r.json()["detail"]
        assert api.get("/api/v1/repositories").json() == []


def test_a_vm_name_two_contexts_share_is_409_naming_both(settings: Settings, hub: Services) -> None:
    """Two vCenters with a VM of the same name: the hub asks which, never takes one."""
    repo_id = seed_vm(settings, credential=True)
    with session_scope(settings.db_url) as s:
        twin = vm_context("/OtherDC/vm/pgtest1", "vc2.example:443", stamp="20251007-101010")
        s.add(twin)
    with hub.client() as api:
        r = api.post("/api/v1/backups", json={"vm_name": "pgtest1", "repository_id": repo_id})
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        for needle in ("ctx-pgtest1-20251006-203401", "127.0.0.1:9"):
            assert needle in detail
        for needle in ("ctx-pgtest1-20251007-101010", "vc2.example:443", "vm_context_id"):
            assert needle in detail
        # Named by its context (or its path) it is one VM again.
        by_id = {"vm_context_id": "ctx-pgtest1-20251007-101010", "repository_id": repo_id}
        r = api.post("/api/v1/backups", json=by_id)
        assert r.json() == {"detail": "VM context missing credential_id"}
        by_path = {"vm_path": "/DatabanxDC/vm/pgtest1", "repository_id": repo_id}
        r = api.post("/api/v1/backups", json=by_path)
        assert r.status_code == 503 and "unreachable" in r.json()["detail"]
        r = api.post("/api/v1/backups", json={"vm_context_id": "ctx-nope", "repository_id": 1})
        assert r.status_code == 404
    assert_nothing_left(settings, hub)
