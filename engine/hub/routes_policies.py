"""Policy routes (under /api/v1): policies, their VMs resolved now, their runs.

Policy names are one URL segment (a name cannot hold '/'). The calls into vCenter
(checking paths, resolving, starting a run) block, so every route runs in a worker
thread, as the other routes do.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from engine.contract.fields import MAX_ID, Name
from engine.contract.hub import errors
from engine.contract.policy import Policy, PolicyEdit, PolicyIn, PolicyPreview, PolicyRun
from engine.hub.policies.service import PolicyService

router = APIRouter(prefix="/api/v1")

PolicyName = Annotated[Name, Path(description="the policy's name")]
RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="a policy run's id")]


def policies(request: Request) -> PolicyService:
    service: PolicyService = request.app.state.policies
    return service


@router.get("/policies")
def list_policies(request: Request) -> list[Policy]:
    """Every policy with its next run and its last run."""
    return policies(request).all()


@router.post("/policies", status_code=201, responses=errors(404, 409, 422, 502))
def add_policy(body: PolicyIn, request: Request) -> Policy:
    """A new policy; refused whole (nothing stored) when any part is unusable: a cron
    expression or timezone that does not parse, a repository that is not there or is
    disabled, a path in no vCenter's inventory, includes that select no VM."""
    return policies(request).add(body)


@router.get("/policies/{name}", responses=errors(404, 422))
def get_policy(name: PolicyName, request: Request) -> Policy:
    return policies(request).get(name)


@router.patch("/policies/{name}", responses=errors(404, 409, 422, 502))
def edit_policy(name: PolicyName, body: PolicyEdit, request: Request) -> Policy:
    """Change the fields given; a run going on keeps its VMs, the next run takes the edit."""
    return policies(request).edit(name, body)


@router.delete(
    "/policies/{name}", status_code=204, response_class=Response, responses=errors(404, 422)
)
def delete_policy(name: PolicyName, request: Request) -> Response:
    """The policy and its runs' records go; jobs it queued go on."""
    policies(request).delete(name)
    return Response(status_code=204)


@router.post("/policies/{name}/enable", responses=errors(404, 422))
def enable_policy(name: PolicyName, request: Request) -> Policy:
    """Scheduled again from now on (what passed while disabled is not caught up)."""
    return policies(request).set_enabled(name, True)


@router.post("/policies/{name}/disable", responses=errors(404, 422))
def disable_policy(name: PolicyName, request: Request) -> Policy:
    return policies(request).set_enabled(name, False)


@router.get("/policies/{name}/vms", responses=errors(404, 422, 502))
def policy_vms(name: PolicyName, request: Request) -> PolicyPreview:
    """The policy's VMs resolved now from vCenter, and the ones its excludes take out."""
    return policies(request).preview(name)


@router.post("/policies/{name}/run", status_code=202, responses=errors(404, 422))
def run_policy(name: PolicyName, request: Request) -> PolicyRun:
    """Run it now: its VMs resolved and queued. A run that could not resolve its VMs is
    answered too, ``failed`` with why."""
    return policies(request).run(name)


@router.get("/policies/{name}/runs", responses=errors(404, 422))
def policy_runs(
    name: PolicyName, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> list[PolicyRun]:
    """The policy's runs, newest first."""
    return policies(request).runs(name, limit)


@router.get("/policy-runs/{run_id}", responses=errors(404, 422))
def policy_run(run_id: RunId, request: Request) -> PolicyRun:
    """One run with every VM's outcome: backup, status, place in the queue, bytes,
    duration, error."""
    return policies(request).run_view(run_id)
