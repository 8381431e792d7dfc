"""Verification routes: start verifying a restore point, and follow it."""

from __future__ import annotations

from fastapi import APIRouter, Request

from engine.contract.hub import errors
from engine.contract.verify import VerifyReport
from engine.hub.routes_restores import PointId
from engine.hub.verify.manager import VerifyManager

router = APIRouter(prefix="/api/v1")


def verifier(request: Request) -> VerifyManager:
    manager: VerifyManager = request.app.state.verify
    return manager


@router.post("/restore-points/{point_id}/verify", status_code=202, responses=errors(404, 422))
def start_verify(point_id: PointId, request: Request) -> VerifyReport:
    """Re-read the point through its chain, ``qemu-img check`` its files and compare every
    chunk with its digest table (running already: that verification)."""
    return verifier(request).start(point_id)


@router.get("/restore-points/{point_id}/verify", responses=errors(404, 422))
def get_verify(point_id: PointId, request: Request) -> VerifyReport:
    """The point's running or last verification (never verified: its recorded state)."""
    return verifier(request).report(point_id)
