"""Errors the hub API answers with, each carrying its HTTP status."""

from __future__ import annotations

from engine.errors import SendenseError


class HubError(SendenseError):
    status_code = 400


class NotFound(HubError):
    status_code = 404


class Conflict(HubError):
    status_code = 409


class Unprocessable(HubError):
    status_code = 422
