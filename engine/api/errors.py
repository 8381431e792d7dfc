"""One shape for every API error, on the hub and the node: ``{"detail": "<one line>"}``.

Scripts and the console read ``detail`` and the status; nothing else varies, so both
services install the same handlers and every HTTP client reads answers the same way.
The OpenAPI document says so too: its 422 answers are ``ErrorAnswer``, not FastAPI's
list of validation errors, so a client generated from it reads what is really sent.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from engine.contract.hub import ErrorAnswer
from engine.errors import SendenseError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("sendense.api")

_ERROR_REF = {"$ref": "#/components/schemas/ErrorAnswer"}


def one_line_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return f"the request body is not valid JSON: {err.get('ctx', {}).get('error', '')}"
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return " ".join(("; ".join(parts) or "invalid request").split())


class _AnswerUnforeseen:
    """Any exception no handler took becomes a JSON 500 and a traceback in the log only.

    Pure ASGI, inside Starlette's ``ServerErrorMiddleware``: that one re-raises after its
    answer, which made the server drop the keep-alive connection; this one answers and
    returns, so the next request on the connection is served.
    """

    def __init__(self, app: ASGIApp, detail: str) -> None:
        self.app = app
        self.detail = detail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            log.exception("unforeseen error answering %s %s", scope["method"], scope["path"])
            if started:  # half an answer is out: nothing sound can follow it
                return
            from starlette.responses import JSONResponse

            await JSONResponse({"detail": self.detail}, status_code=500)(scope, receive, send)


def _one_line_422(schema: dict[str, Any]) -> None:
    """Describe every 422 as ``ErrorAnswer`` and drop FastAPI's validation-error models."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.setdefault("ErrorAnswer", ErrorAnswer.model_json_schema())
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422")
            if answer is not None:
                answer["content"] = {"application/json": {"schema": _ERROR_REF}}
                if answer.get("description") == "Validation Error":
                    answer["description"] = "bad or unusable input"


def install_error_handlers(app: FastAPI, *, service: str = "service") -> None:
    """Answer engine errors (with their own ``http_status``), validation errors, HTTP
    errors and anything unforeseen with one JSON line; ``service`` names the log to read."""
    # FastAPI is imported here, not above: the CLI reads error answers without serving any.
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(SendenseError)
    async def _sendense_error(_: Request, exc: SendenseError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": one_line_validation(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (not UTF-8, say)
            return JSONResponse(
                {"detail": f"the request body is not valid JSON: {exc.detail}"}, 422
            )
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    app.add_middleware(_AnswerUnforeseen, detail=f"internal error (see the {service} log)")

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        _one_line_422(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
