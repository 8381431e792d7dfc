"""The hub fuzzed from its own ``/openapi.json`` (schemathesis): every operation gets
valid and invalid requests, and every answer must be documented, match its schema, never
be a 5xx but the documented 502/503, refuse what the schema refuses, and never carry a
traceback, the vCenter password or the API token.

A real hub, no node: a start gets as far as the node call (503). What a request could
reach beyond the hub stays on this machine: hosts that pass validation are pointed at a
closed loopback port, and repository folders that pass are made under the test's own
folder, so the fuzzer neither scans networks nor writes across the file system.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from engine.config import Settings
from engine.contract.fields import FieldError, split_host, url_safe
from tests.conftest import free_port
from tests.fixtures.backups import seed_vm
from tests.fixtures.services import Services

pytestmark = pytest.mark.slow

PASSWORD = "fuzz-only-vcenter-password-7d3e"
CONFIG = """
[generation]
# The hub ignores query parameters it does not know, as HTTP APIs do; the test sends
# its own token.
allow-extra-parameters = false
with-security-parameters = false

[checks.not_a_server_error]
# 502 and 503 say that a vCenter or node behind the hub refused or is not there (this
# hub has no node, its vCenter is a closed port); any other 5xx fails, and
# status_code_conformance holds these two to the operations that document them.
expected-statuses = ["1xx", "2xx", "3xx", "4xx", "502", "503"]
"""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@pytest.fixture
def fuzzed(settings: Settings, services_factory: Callable[..., Services]) -> Services:
    seed_vm(settings, credential=True, password=PASSWORD)
    return services_factory(node=False)


@pytest.fixture
def hub_schema(fuzzed: Services) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(
        f"{fuzzed.hub.url}/openapi.json", config=schemathesis.Config.from_str(CONFIG), timeout=10
    )


schema = schemathesis.pytest.from_fixture("hub_schema").exclude(path="/api/v1/events")


def _host_here(value: object, closed: str) -> object:
    """A host the hub would take becomes a closed loopback port; one it refuses stays."""
    if not isinstance(value, str):
        return value
    try:
        split_host(value)
    except FieldError:
        return value
    return closed


def _path_text(value: str) -> bool:
    """What the contract's ``PathText`` takes (so a refused one is sent as it is)."""
    return 0 < len(value) <= 1024 and not _CONTROL.search(value)


def keep_it_here(case: schemathesis.Case, folder: Path, closed: str) -> None:
    path = case.operation.path
    if path == "/api/v1/vcenters/probe" and isinstance(case.query, dict):
        case.query["host"] = _host_here(case.query.get("host"), closed)
    if isinstance(case.body, dict):
        if path == "/api/v1/vcenters" and "host" in case.body:
            case.body["host"] = _host_here(case.body["host"], closed)
        value = case.body.get("path")
        if path == "/api/v1/repositories" and isinstance(value, str) and _path_text(value):
            case.body["path"] = str(folder / url_safe(value)[:200])


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_keeps_the_contract(
    case: schemathesis.Case, fuzzed: Services, tmp_path: Path
) -> None:
    keep_it_here(case, tmp_path / "fuzzed-repos", f"127.0.0.1:{free_port()}")
    token = fuzzed.token
    response = case.call(
        base_url=fuzzed.hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ],
    )
    for secret in ("Traceback", PASSWORD, token):
        assert secret not in response.text, f"{secret[:9]}… in {case.method} {case.path}"
