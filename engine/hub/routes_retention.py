"""retention routes (under /api/v1)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from engine.contract.fields import Name
from engine.contract.hub import errors
from engine.contract.policy import RetentionPlan
from engine.hub.policies.retention import RetentionService

router = APIRouter(prefix="/api/v1")


@router.get("/retention/plan", responses=errors(404, 422))
def retention_plan(
    request: Request,
    policy: Annotated[Name | None, Query(description="only this policy's points")] = None,
) -> RetentionPlan:
    """What the policies' expiry would do now, point by point, and why; nothing is done.
    Without ``policy``: every policy, and the points no policy expires."""
    retention: RetentionService = request.app.state.retention
    return retention.plan(policy)
