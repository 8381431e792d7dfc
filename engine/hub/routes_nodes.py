"""Node routes (under /api/v1): the nodes the hub hands jobs to, as its heartbeat sees
them, and registering, changing and forgetting one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from engine.contract.hub import NodeEdit, NodeIn, NodeInfo, errors
from engine.db.session import session_scope
from engine.hub.fleet import NodeWatch
from engine.hub.jobs import JobManager
from engine.hub.nodes import add_node, edit_node, remove_node
from engine.hub.routes_vcenters import settings_of

router = APIRouter(prefix="/api/v1")

NodeName = Annotated[str, Path(min_length=1, max_length=191, description="a node's name")]


def _fleet(request: Request) -> NodeWatch:
    fleet: NodeWatch = request.app.state.fleet
    return fleet


def _infos(request: Request) -> list[NodeInfo]:
    """Every node, with the throughput of its running backups now."""
    jobs: JobManager = request.app.state.jobs
    with jobs.ctx.live.lock:
        rates = {
            st.backup_id: sum(d.rate_bps for d in st.disks.values())
            for st in jobs.ctx.live.states()
        }
    return _fleet(request).infos(rates)


def _info(request: Request, name: str) -> NodeInfo:
    return next(i for i in _infos(request) if i.name == name)


@router.get("/nodes")
def nodes(request: Request) -> list[NodeInfo]:
    """Each node's state from a heartbeat taken now (a dead node costs its health
    check's short timeout), its capacity, load and recent throughput."""
    _fleet(request).beat()
    return _infos(request)


@router.post("/nodes", status_code=201, responses=errors(409, 422))
def add(body: NodeIn, request: Request) -> NodeInfo:
    with session_scope(settings_of(request).db_url) as s:
        name = add_node(s, body).name
    return _info(request, name)


@router.patch("/nodes/{name}", responses=errors(404, 422))
def edit(name: NodeName, body: NodeEdit, request: Request) -> NodeInfo:
    with session_scope(settings_of(request).db_url) as s:
        edit_node(s, name, body)
    return _info(request, name)


@router.delete(
    "/nodes/{name}", status_code=204, response_class=Response, responses=errors(404, 409, 422)
)
def delete(name: NodeName, request: Request) -> Response:
    """Forget a node; refused (409) while a job runs on it."""
    with session_scope(settings_of(request).db_url) as s:
        remove_node(s, name)
    return Response(status_code=204)
