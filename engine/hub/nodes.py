"""The hub's side of talking to nodes: which node runs a job, and its HTTP API.

Nodes live in the ``nodes`` table. A hub with none configured registers the embedded
default (``node.name`` at ``http://127.0.0.1:<node.port>``), so a hub and a node started
on one data folder work together with no set-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.api.auth import auth_headers
from engine.config import Settings
from engine.contract.hub import ErrorAnswer
from engine.contract.node import (
    NodeHealth,
    NodeJob,
    RestoreStartRequest,
    StartAnswer,
    StartRequest,
)
from engine.db.models import Node, utcnow
from engine.errors import BadInput, Refused, Unavailable

M = TypeVar("M", bound=BaseModel)

# Generous reads: a busy node still answers; an absent one fails fast on connect.
TIMEOUT = httpx.Timeout(30.0, connect=3.0)


class NodeUnreachable(Unavailable):
    """The node did not answer (refused, timed out, tunnel down)."""


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


def ensure_default_node(session: Session, settings: Settings) -> None:
    if session.scalar(select(Node.id).limit(1)) is None:
        session.add(Node(name=settings.node.name, url=f"http://127.0.0.1:{settings.node.port}"))
        session.flush()


def add_node(session: Session, name: str, url: str) -> Node:
    name = name.strip()
    if not name:
        raise BadInput("the node name is empty")
    if not url.startswith(("http://", "https://")):
        raise BadInput(f"node URL {url!r} must start with http:// or https://")
    if session.scalar(select(Node).where(Node.name == name)):
        raise BadInput(f"a node named {name!r} already exists")
    node = Node(name=name, url=url.rstrip("/"))
    session.add(node)
    session.flush()
    return node


def list_nodes(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.id)))


def pick_node(session: Session) -> NodeRef:
    """The node for a new job: the first enabled one."""
    node = session.scalar(select(Node).where(Node.enabled.is_(True)).order_by(Node.id).limit(1))
    if node is None:
        raise NodeUnreachable("no enabled node is configured (sendense nodes add)")
    return NodeRef(node.id, node.name, node.url)


def node_ref(session: Session, node_id: int | None) -> NodeRef | None:
    node = session.get(Node, node_id) if node_id is not None else None
    return NodeRef(node.id, node.name, node.url) if node else None


def mark_seen(session: Session, node_id: int) -> None:
    node = session.get(Node, node_id)
    if node is not None:
        node.last_seen_at = utcnow()


class NodeClient:
    """Calls one node's API with the shared bearer token."""

    def __init__(self, node: NodeRef, token: str) -> None:
        self.node = node
        self._headers = auth_headers(token)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.node.url.rstrip('/')}{path}"
        try:
            response = httpx.request(method, url, headers=self._headers, timeout=TIMEOUT, **kwargs)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise NodeUnreachable(
                f"node {self.node.name} at {self.node.url} is unreachable: {reason}"
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
        return self._answer(NodeHealth, "GET", "/api/v1/health")
