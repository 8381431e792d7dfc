"""The hub's side of talking to nodes: the ``nodes`` table, and each node's HTTP API.

Nodes live in the ``nodes`` table, each with the vCenters it may serve (none listed:
every one) and its capacity (none given: the ``[queue]`` settings' per-node limits). A
hub with none configured registers the embedded default (``node.name`` at
``http://127.0.0.1:<node.port>``), so a hub and a node started on one data folder work
together with no set-up. Which node takes a job is the fleet's (``engine.hub.fleet``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.api.auth import auth_headers
from engine.config import Settings
from engine.contract.hub import ErrorAnswer, NodeEdit, NodeIn
from engine.contract.node import (
    NodeHealth,
    NodeJob,
    RestoreStartRequest,
    StartAnswer,
    StartRequest,
)
from engine.contract.status import ACTIVE_JOB
from engine.db.models import BackupJob, Node, RestoreJob, utcnow
from engine.errors import BadInput, Conflict, NotFound, Refused, Unavailable

M = TypeVar("M", bound=BaseModel)

# Generous reads: a busy node still answers; an absent one fails fast on connect.
TIMEOUT = httpx.Timeout(30.0, connect=3.0)
# A health check: one dead node must not hold up a heartbeat round (nor a node list).
HEALTH_TIMEOUT = httpx.Timeout(2.5)


class NodeUnreachable(Unavailable):
    """The node did not answer (refused, timed out, tunnel down); ``reason`` is the
    transport's own words, for messages that name the node already."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class NodeRefused(Refused):
    """The node answered with an error; the message carries its ``detail``."""

    def __init__(self, message: str, node_status: int) -> None:
        super().__init__(message)
        self.node_status = node_status


@dataclass(frozen=True)
class NodeRef:
    id: int
    name: str
    url: str


def ref_of(node: Node) -> NodeRef:
    return NodeRef(node.id, node.name, node.url)


def default_node(settings: Settings) -> Node:
    """The node a hub registers when it has none: the embedded one on this machine."""
    return Node(name=settings.node.name, url=f"http://127.0.0.1:{settings.node.port}", enabled=True)


def ensure_default_node(session: Session, settings: Settings) -> None:
    if session.scalar(select(Node.id).limit(1)) is None:
        session.add(default_node(settings))
        session.flush()


def vcenters_of(node: Node) -> list[str]:
    """The vCenter hosts the node may serve; empty: every one."""
    return list(json.loads(node.vcenters)) if node.vcenters else []


def capacity(node: Node, settings: Settings) -> tuple[int, int]:
    """The node's jobs and disks at once: its own, else the ``[queue]`` per-node limits."""
    return (
        node.max_jobs or settings.queue.jobs_per_node,
        node.max_disks or settings.queue.disks_per_node,
    )


def _url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise BadInput(f"node URL {url!r} must start with http:// or https://")
    return url.rstrip("/")


def _vcenters_text(hosts: Iterable[str]) -> str | None:
    unique = sorted(set(hosts))
    return json.dumps(unique) if unique else None


def add_node(session: Session, body: NodeIn) -> Node:
    name = body.name.strip()
    if not name:
        raise BadInput("the node name is empty")
    url = _url(body.url)
    if session.scalar(select(Node).where(Node.name == name)):
        raise Conflict(f"a node named {name!r} already exists")
    node = Node(
        name=name,
        url=url,
        enabled=body.enabled,
        vcenters=_vcenters_text(body.vcenters),
        max_jobs=body.max_jobs,
        max_disks=body.max_disks,
    )
    session.add(node)
    session.flush()
    return node


def find_node(session: Session, name: str) -> Node:
    node = session.scalar(select(Node).where(Node.name == name))
    if node is None:
        raise NotFound(f"node {name!r} does not exist")
    return node


def edit_node(session: Session, name: str, edit: NodeEdit) -> Node:
    """Change the fields ``edit`` gives; a capacity given as null returns to the
    ``[queue]`` settings' limit."""
    node = find_node(session, name)
    given = edit.model_fields_set
    if edit.url is not None:
        node.url = _url(edit.url)
    if edit.vcenters is not None:
        node.vcenters = _vcenters_text(edit.vcenters)
    if "max_jobs" in given:
        node.max_jobs = edit.max_jobs
    if "max_disks" in given:
        node.max_disks = edit.max_disks
    if edit.enabled is not None:
        node.enabled = edit.enabled
    session.flush()
    return node


def remove_node(session: Session, name: str) -> None:
    """Forget a node; refused while a job runs on it (its end would have nowhere to go).
    Its finished jobs keep their points and lose only the node's name."""
    node = find_node(session, name)
    active = sum(
        session.scalar(
            select(func.count())
            .select_from(model)
            .where(model.node_id == node.id, model.status.in_(list(ACTIVE_JOB)))
        )
        or 0
        for model in (BackupJob, RestoreJob)
    )
    if active:
        raise Conflict(f"node {name!r} has {active} job(s) running: wait for them or cancel them")
    session.delete(node)
    session.flush()


def list_nodes(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.id)))


def pick_node(session: Session) -> NodeRef:
    """The node for a new job: the first enabled one."""
    node = session.scalar(select(Node).where(Node.enabled.is_(True)).order_by(Node.id).limit(1))
    if node is None:
        raise NodeUnreachable("no enabled node is configured (sendense nodes add)")
    return ref_of(node)


def node_ref(session: Session, node_id: int | None) -> NodeRef | None:
    node = session.get(Node, node_id) if node_id is not None else None
    return ref_of(node) if node else None


def mark_seen(session: Session, node_id: int) -> None:
    node = session.get(Node, node_id)
    if node is not None:
        node.last_seen_at = utcnow()


class NodeClient:
    """Calls one node's API with the shared bearer token."""

    def __init__(self, node: NodeRef, token: str) -> None:
        self.node = node
        self._headers = auth_headers(token)

    def _call(
        self, method: str, path: str, timeout: httpx.Timeout = TIMEOUT, **kwargs: Any
    ) -> httpx.Response:
        url = f"{self.node.url.rstrip('/')}{path}"
        try:
            response = httpx.request(method, url, headers=self._headers, timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise NodeUnreachable(
                f"node {self.node.name} at {self.node.url} is unreachable: {reason}", reason
            ) from None
        if response.status_code >= 400:
            detail = ErrorAnswer.detail_of(response.content, response.reason_phrase)
            raise NodeRefused(f"node {self.node.name} refused: {detail}", response.status_code)
        return response

    def _answer(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        response = self._call(method, path, **kwargs)
        try:
            return model.model_validate_json(response.content)
        except ValidationError:
            raise NodeRefused(
                f"node {self.node.name} answered {method} {path} in a shape the hub does not "
                "know: is it another version?",
                response.status_code,
            ) from None

    def start(self, request: StartRequest) -> StartAnswer:
        return self._answer(StartAnswer, "POST", "/api/v1/backup/start", json=request.wire())

    def start_restore(self, request: RestoreStartRequest) -> StartAnswer:
        """Have the node write a restored VM's disks; the job is then followed like a
        backup's (``status``, ``log``, ``cancel``)."""
        return self._answer(StartAnswer, "POST", "/api/v1/restores", json=request.wire())

    def status(self, job_id: str) -> NodeJob | None:
        """The node's view of a job, or None when it does not know the job."""
        try:
            return self._answer(NodeJob, "GET", f"/api/v1/backup/{job_id}")
        except NodeRefused as exc:
            if exc.node_status == 404:
                return None
            raise

    def log(self, job_id: str, lines: int) -> list[str]:
        path = f"/api/v1/backup/{job_id}"
        return self._answer(NodeJob, "GET", path, params={"lines": lines}).log_tail

    def cancel(self, job_id: str) -> None:
        try:
            self._call("DELETE", f"/api/v1/backup/{job_id}")
        except NodeRefused as exc:
            if exc.node_status not in (404, 409):  # already gone or finished: nothing to stop
                raise

    def health(self) -> NodeHealth:
        """The node's health, with a short timeout: a node that cannot answer this
        quickly counts as not answering."""
        return self._answer(NodeHealth, "GET", "/api/v1/health", timeout=HEALTH_TIMEOUT)
