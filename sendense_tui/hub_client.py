"""The hub API client: every request the console makes, and the event stream.

Errors become one ``HubError`` whose ``plain`` text is what an operator reads; the
status codes the hub documents (docs/contracts.md) get words of their own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse

# What the documented statuses mean to someone at the keyboard.
PLAIN_STATUS = {
    401: "the hub refused the API token (check the token file in the data folder)",
    404: "the hub does not know it",
    409: "busy: it already has a job running",
    422: "the hub cannot use it as it is",
    503: "the node is not reachable, so nothing can run",
}


class HubError(Exception):
    """A request the hub refused or could not answer, in words for the operator."""

    def __init__(self, status: int | None, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    @property
    def plain(self) -> str:
        if self.status is None:
            return self.detail
        if self.status == 422 and "credential" in self.detail.lower():
            return (
                "this VM has no vCenter credential: add its vCenter on the vCenters screen "
                f"(hub said: {self.detail})"
            )
        meaning = PLAIN_STATUS.get(self.status)
        return f"{meaning} (hub said: {self.detail})" if meaning else self.detail


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except json.JSONDecodeError:
        return response.text.strip()[:200] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(str(item.get("msg", item)) for item in detail)
    return str(detail or body)


class HubClient:
    """A thin async client; one instance per console, sharing one connection pool."""

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=f"{self.base_url}/api/v1",
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise HubError(None, f"the hub at {self.base_url} does not answer ({exc})") from exc
        if response.status_code >= 400:
            raise HubError(response.status_code, _detail(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/health")
        return result

    async def vcenters(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/vcenters")
        return result

    async def inventory(self, vcenter_id: int, refresh: bool = False) -> dict[str, Any]:
        """``refresh`` asks the hub to read vCenter again rather than answer from its cache."""
        params = {"refresh": "true"} if refresh else {}
        result: dict[str, Any] = await self._call(
            "GET", f"/vcenters/{vcenter_id}/inventory", params=params
        )
        return result

    async def probe_vcenter(self, host: str) -> str:
        result = await self._call("GET", "/vcenters/probe", params={"host": host})
        return str(result["thumbprint"])

    async def add_vcenter(
        self, host: str, username: str, password: str, thumbprint: str
    ) -> dict[str, Any]:
        body = {"host": host, "username": username, "password": password, "thumbprint": thumbprint}
        result: dict[str, Any] = await self._call("POST", "/vcenters", json=body)
        return result

    async def test_vcenter(self, vcenter_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"/vcenters/{vcenter_id}/test")
        return result

    async def vms(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/vms")
        return result

    async def add_vm(self, vcenter_id: int, path: str) -> dict[str, Any]:
        body = {"vcenter_id": vcenter_id, "path": path}
        result: dict[str, Any] = await self._call("POST", "/vms", json=body)
        return result

    async def repositories(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/repositories")
        return result

    async def nodes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/nodes")
        return result

    async def jobs(self, limit: int = 200) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/backups", params={"limit": limit})
        return result

    async def job(self, backup_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/backups/{backup_id}")
        return result

    async def start_backup(
        self, vm_name: str, repository_id: int | str, backup_type: str = "full"
    ) -> dict[str, Any]:
        body = {"vm_name": vm_name, "repository_id": str(repository_id), "backup_type": backup_type}
        result: dict[str, Any] = await self._call("POST", "/backups", json=body)
        return result

    async def cancel_backup(self, backup_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("DELETE", f"/backups/{backup_id}")
        return result

    async def job_log(self, backup_id: str, lines: int = 200) -> list[str]:
        result = await self._call("GET", f"/backups/{backup_id}/log", params={"lines": lines})
        return [str(line) for line in result.get("lines", [])]

    async def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The hub's server-sent events as ``(kind, data)``; ends when the stream does."""
        try:
            async with aconnect_sse(
                self._http, "GET", "/events", timeout=httpx.Timeout(30.0, read=None)
            ) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                    raise HubError(source.response.status_code, _detail(source.response))
                async for event in source.aiter_sse():
                    if event.data:
                        yield event.event, json.loads(event.data)
        except httpx.HTTPError as exc:
            raise HubError(None, f"the hub's event stream broke ({exc})") from exc
