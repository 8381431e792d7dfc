"""The typed hub API client: every request the CLI and the console make, and the events.

One async client over httpx, answers read into the contract's models. An error answer
becomes the engine error its status stands for (``engine.errors.error_for_status``: a 404
is ``NotFound``, exit code 7), carrying the hub's one-line ``detail``; a hub that does
not answer is ``HubUnreachable``. The CLI runs it with ``asyncio.run``; the console in
its workers. This module imports only the contract and the errors, so the console can
load it without the engine behind it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from httpx_sse import EventSource, aconnect_sse
from pydantic import BaseModel, TypeAdapter, ValidationError

from engine.contract.files import ContentQuery, FileEntry, FileQuery, FolderListing, Partition
from engine.contract.hub import (
    BackupPreview,
    BackupRequest,
    BackupStarted,
    DiskEvent,
    ErrorAnswer,
    Health,
    Job,
    JobLog,
    NodeEdit,
    NodeIn,
    NodeInfo,
    Probe,
    QueueRequest,
    Repository,
    RepositoryIn,
    VCenter,
    VCenterIn,
    VCenterTest,
    VMContext,
    VMIn,
)
from engine.contract.inventory import Inventory
from engine.contract.policy import (
    Policy,
    PolicyEdit,
    PolicyIn,
    PolicyPreview,
    PolicyRun,
    RetentionPlan,
)
from engine.contract.restore import (
    DiskRestoreRequest,
    ExportRequest,
    MergeResult,
    RestoreExport,
    RestoreJob,
    RestorePoint,
    RestoreQuery,
    VMRestoreRequest,
)
from engine.contract.status import JobStatus
from engine.contract.verify import VerifyReport
from engine.errors import SendenseError, Unavailable, error_for_status

M = TypeVar("M", bound=BaseModel)
HubEvent = Job | DiskEvent | RestoreJob


class HubUnreachable(Unavailable):
    """The hub itself did not answer (not running, wrong URL, a network in between)."""


def raise_for_answer(response: httpx.Response) -> None:
    """The engine error an error answer stands for; nothing for a success."""
    if response.status_code >= 400:
        detail = ErrorAnswer.detail_of(response.content, response.reason_phrase)
        raise error_for_status(response.status_code, detail)


class HubClient:
    """One instance per CLI command or console, sharing one connection pool."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=f"{self.base_url}/api/v1",
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=httpx.Timeout(timeout, connect=3.0),
            transport=transport,
        )

    async def __aenter__(self) -> HubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise HubUnreachable(
                f"the hub at {self.base_url} is not answering ({reason})"
            ) from None
        raise_for_answer(response)
        return response

    async def _get(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        response = await self._request(method, path, **kwargs)
        return _read(TypeAdapter(model), response)

    async def _list(self, model: type[M], path: str, **kwargs: Any) -> list[M]:
        return await self._get_list(model, "GET", path, **kwargs)

    async def _get_list(self, model: type[M], method: str, path: str, **kwargs: Any) -> list[M]:
        response = await self._request(method, path, **kwargs)
        return _read(TypeAdapter(list[model]), response)  # type: ignore[valid-type]

    # ---- the hub itself ------------------------------------------------------------

    async def health(self) -> Health:
        return await self._get(Health, "GET", "/health")

    async def answers(self) -> bool:
        """Whether a hub answers its health check now (for launchers, never raises)."""
        try:
            await self.health()
        except SendenseError:
            return False
        return True

    async def nodes(self) -> list[NodeInfo]:
        return await self._list(NodeInfo, "/nodes")

    async def add_node(self, request: NodeIn) -> NodeInfo:
        body = request.model_dump(mode="json", exclude_none=True)
        return await self._get(NodeInfo, "POST", "/nodes", json=body)

    async def edit_node(self, name: str, request: NodeEdit) -> NodeInfo:
        body = request.model_dump(mode="json", exclude_unset=True)
        return await self._get(NodeInfo, "PATCH", f"/nodes/{_segment(name)}", json=body)

    async def delete_node(self, name: str) -> None:
        await self._request("DELETE", f"/nodes/{_segment(name)}")

    # ---- vCenters, inventory, VMs ----------------------------------------------------

    async def vcenters(self) -> list[VCenter]:
        return await self._list(VCenter, "/vcenters")

    async def probe_vcenter(self, host: str) -> Probe:
        return await self._get(Probe, "GET", "/vcenters/probe", params={"host": host})

    async def add_vcenter(self, request: VCenterIn) -> VCenter:
        body = request.model_dump(mode="json", exclude_none=True)
        body["password"] = request.password.get_secret_value()
        return await self._get(VCenter, "POST", "/vcenters", json=body)

    async def test_vcenter(self, vcenter_id: int) -> VCenterTest:
        return await self._get(VCenterTest, "POST", f"/vcenters/{vcenter_id}/test")

    async def inventory(self, vcenter_id: int, *, refresh: bool = False) -> Inventory:
        """``refresh`` asks the hub to read vCenter again rather than answer from its cache."""
        params = {"refresh": "true"} if refresh else {}
        return await self._get(Inventory, "GET", f"/vcenters/{vcenter_id}/inventory", params=params)

    async def vms(self) -> list[VMContext]:
        return await self._list(VMContext, "/vms")

    async def add_vm(self, request: VMIn) -> VMContext:
        return await self._get(VMContext, "POST", "/vms", json=request.model_dump(mode="json"))

    # ---- repositories -------------------------------------------------------------------

    async def enable_cbt(self, context_id: str) -> VMContext:
        """Turn changed block tracking on for the VM (and refresh its context)."""
        return await self._get(VMContext, "POST", f"/vms/{_segment(context_id)}/cbt")

    async def repositories(self) -> list[Repository]:
        return await self._list(Repository, "/repositories")

    async def add_repository(self, request: RepositoryIn) -> Repository:
        body = request.model_dump(mode="json")
        return await self._get(Repository, "POST", "/repositories", json=body)

    # ---- backups ---------------------------------------------------------------------------

    async def start_backup(self, request: BackupRequest) -> BackupStarted:
        body = request.model_dump(mode="json", exclude_none=True)
        return await self._get(BackupStarted, "POST", "/backups", json=body)

    async def queue_backups(self, request: QueueRequest) -> list[Job]:
        """Queue one job per backup; the hub starts them as its limits allow."""
        body = request.model_dump(mode="json", exclude_none=True)
        return await self._get_list(Job, "POST", "/backups/queue", json=body)

    async def jobs(
        self, *, vm_name: str | None = None, status: JobStatus | None = None, limit: int = 200
    ) -> list[Job]:
        params: dict[str, Any] = {"limit": limit}
        if vm_name:
            params["vm_name"] = vm_name
        if status:
            params["status"] = status.value
        return await self._list(Job, "/backups", params=params)

    async def preview_backup(self, request: BackupRequest) -> BackupPreview:
        """What ``start_backup`` would do with this request: full or incremental, per
        disk, and why."""
        body = request.model_dump(mode="json", exclude_none=True)
        return await self._get(BackupPreview, "POST", "/backups/preview", json=body)

    async def job(self, backup_id: str) -> Job:
        return await self._get(Job, "GET", f"/backups/{_segment(backup_id)}")

    async def cancel_backup(self, backup_id: str) -> Job:
        return await self._get(Job, "DELETE", f"/backups/{_segment(backup_id)}")

    async def job_log(self, backup_id: str, lines: int = 200) -> list[str]:
        path = f"/backups/{_segment(backup_id)}/log"
        return (await self._get(JobLog, "GET", path, params={"lines": lines})).lines

    # ---- policies and retention -----------------------------------------------------------

    async def policies(self) -> list[Policy]:
        return await self._list(Policy, "/policies")

    async def policy(self, name: str) -> Policy:
        return await self._get(Policy, "GET", f"/policies/{_segment(name)}")

    async def add_policy(self, request: PolicyIn) -> Policy:
        return await self._get(Policy, "POST", "/policies", json=_with_secrets(request))

    async def edit_policy(self, name: str, request: PolicyEdit) -> Policy:
        body = _with_secrets(request, exclude_unset=True)
        return await self._get(Policy, "PATCH", f"/policies/{_segment(name)}", json=body)

    async def delete_policy(self, name: str) -> None:
        await self._request("DELETE", f"/policies/{_segment(name)}")

    async def set_policy_enabled(self, name: str, enabled: bool) -> Policy:
        verb = "enable" if enabled else "disable"
        return await self._get(Policy, "POST", f"/policies/{_segment(name)}/{verb}")

    async def policy_vms(self, name: str) -> PolicyPreview:
        """The policy's VMs resolved now, from vCenter's inventory."""
        return await self._get(PolicyPreview, "GET", f"/policies/{_segment(name)}/vms")

    async def run_policy(self, name: str) -> PolicyRun:
        """Run the policy now: its VMs are resolved and queued."""
        return await self._get(PolicyRun, "POST", f"/policies/{_segment(name)}/run")

    async def policy_runs(self, name: str, limit: int = 20) -> list[PolicyRun]:
        """The policy's runs, newest first."""
        path = f"/policies/{_segment(name)}/runs"
        return await self._list(PolicyRun, path, params={"limit": limit})

    async def policy_run(self, run_id: int) -> PolicyRun:
        return await self._get(PolicyRun, "GET", f"/policy-runs/{int(run_id)}")

    async def retention_plan(self, policy: str | None = None) -> RetentionPlan:
        """What retention would expire now, and why each point stays or goes."""
        params = {"policy": policy} if policy else {}
        return await self._get(RetentionPlan, "GET", "/retention/plan", params=params)

    # ---- restore points and restores ---------------------------------------------------

    async def restore_points(self, vm: str | None = None, limit: int = 200) -> list[RestorePoint]:
        """Completed backups, newest first; ``vm`` is a VM's name or inventory path."""
        params: dict[str, Any] = {"limit": limit}
        if vm:
            params["vm"] = vm
        return await self._list(RestorePoint, "/restore-points", params=params)

    async def restore_point(self, point_id: str) -> RestorePoint:
        return await self._get(RestorePoint, "GET", f"/restore-points/{_segment(point_id)}")

    async def delete_restore_point(self, point_id: str) -> None:
        await self._request("DELETE", f"/restore-points/{_segment(point_id)}")

    async def merge_point(self, point_id: str) -> MergeResult:
        """Fold the point into its child (see ``MergeResult``)."""
        path = f"/restore-points/{_segment(point_id)}/merge"
        return await self._get(MergeResult, "POST", path)

    async def export_point(self, point_id: str, request: ExportRequest) -> RestoreExport:
        path = f"/restore-points/{_segment(point_id)}/exports"
        return await self._get(RestoreExport, "POST", path, json=request.model_dump(mode="json"))

    async def restore_exports(self) -> list[RestoreExport]:
        return await self._list(RestoreExport, "/restore-exports")

    async def unexport(self, name: str) -> None:
        await self._request("DELETE", f"/restore-exports/{_segment(name)}")

    async def restore_disk(self, request: DiskRestoreRequest) -> RestoreJob:
        body = request.model_dump(mode="json")
        return await self._get(RestoreJob, "POST", "/restores/disk", json=body)

    async def restore_vm(self, request: VMRestoreRequest) -> RestoreJob:
        body = request.model_dump(mode="json", exclude_none=True)
        return await self._get(RestoreJob, "POST", "/restores/vm", json=body)

    async def restores(self, query: RestoreQuery | None = None) -> list[RestoreJob]:
        params = (query or RestoreQuery()).model_dump(mode="json", exclude_none=True)
        return await self._list(RestoreJob, "/restores", params=params)

    async def restore(self, restore_id: str) -> RestoreJob:
        return await self._get(RestoreJob, "GET", f"/restores/{_segment(restore_id)}")

    async def cancel_restore(self, restore_id: str) -> RestoreJob:
        return await self._get(RestoreJob, "DELETE", f"/restores/{_segment(restore_id)}")

    # ---- single files out of a restore point --------------------------------------------

    def _disk_path(self, point_id: str, disk_key: int) -> str:
        return f"/restore-points/{_segment(point_id)}/disks/{int(disk_key)}"

    async def partitions(self, point_id: str, disk_key: int) -> list[Partition]:
        """The disk's partitions and the file system found in each (``0``: the whole
        disk, when it has no partition table)."""
        return await self._list(Partition, f"{self._disk_path(point_id, disk_key)}/partitions")

    async def list_folder(
        self, point_id: str, disk_key: int, path: str = "/", partition: int | None = None
    ) -> FolderListing:
        params = FileQuery(path=path, partition=partition).model_dump(exclude_none=True)
        return await self._get(
            FolderListing, "GET", f"{self._disk_path(point_id, disk_key)}/files", params=params
        )

    async def stat_file(
        self, point_id: str, disk_key: int, path: str, partition: int | None = None
    ) -> FileEntry:
        params = FileQuery(path=path, partition=partition).model_dump(exclude_none=True)
        return await self._get(
            FileEntry, "GET", f"{self._disk_path(point_id, disk_key)}/files/stat", params=params
        )

    @asynccontextmanager
    async def file_content(
        self,
        point_id: str,
        disk_key: int,
        path: str,
        partition: int | None = None,
        *,
        archive: bool = False,
    ) -> AsyncIterator[httpx.Response]:
        """The streamed answer (read it with ``aiter_bytes``): a file's bytes, or a tar
        stream for a folder or when ``archive`` asks for one (``Content-Type`` says
        which). An error answer raises before the block begins."""
        query = ContentQuery(path=path, partition=partition, archive=archive)
        params = query.model_dump(exclude_none=True)
        params["archive"] = "true" if archive else "false"
        url = f"{self._disk_path(point_id, disk_key)}/files/content"
        request = self._http.build_request(
            "GET", url, params=params, timeout=httpx.Timeout(60.0, connect=3.0, read=None)
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise HubUnreachable(
                f"the hub at {self.base_url} is not answering ({reason})"
            ) from None
        try:
            if response.status_code >= 400:
                await response.aread()
                raise_for_answer(response)
            yield response
        finally:
            await response.aclose()

    # ---- verification -------------------------------------------------------------------

    async def verify(self, point_id: str) -> VerifyReport:
        """Start verifying the point (running already: that verification)."""
        path = f"/restore-points/{_segment(point_id)}/verify"
        return await self._get(VerifyReport, "POST", path)

    async def verification(self, point_id: str) -> VerifyReport:
        """The point's running or last verification; ``NotFound`` if it never ran."""
        path = f"/restore-points/{_segment(point_id)}/verify"
        return await self._get(VerifyReport, "GET", path)

    async def events(self) -> AsyncIterator[HubEvent]:
        """The hub's server-sent events, typed; ends when the stream does."""
        async with self.subscribe() as events:
            async for event in events:
                yield event

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[HubEvent]]:
        """The event stream, already subscribed when the block begins: a job read inside
        the block cannot end unseen between that read and its first event."""
        try:
            async with aconnect_sse(
                self._http, "GET", "/events", timeout=httpx.Timeout(30.0, read=None)
            ) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                    raise_for_answer(source.response)
                yield _typed_events(source)
        except httpx.HTTPError as exc:
            raise HubUnreachable(f"the hub's event stream broke ({exc})") from None


_EVENTS: dict[str, TypeAdapter[Any]] = {
    "job": TypeAdapter(Job),
    "disk": TypeAdapter(DiskEvent),
    "restore": TypeAdapter(RestoreJob),
}


async def _typed_events(source: EventSource) -> AsyncIterator[HubEvent]:
    async for event in source.aiter_sse():
        adapter = _EVENTS.get(event.event)
        if adapter is not None and event.data:
            yield _validated(adapter, event.data, f"{event.event!r} event")


def _with_secrets(request: PolicyIn | PolicyEdit, *, exclude_unset: bool = False) -> Any:
    """The body with its notification URLs in clear: the one place they leave the
    operator's side, to the hub that seals them."""
    body = request.model_dump(mode="json", exclude_unset=exclude_unset)
    if request.notify is not None:
        body["notify"] = [url.get_secret_value() for url in request.notify]
    return body


def _segment(value: str) -> str:
    """An id as one URL path segment, whatever it holds (old ids may hold spaces)."""
    return httpx.URL(path=value).raw_path.decode().replace("/", "%2F")


def _read(adapter: TypeAdapter[Any], response: httpx.Response) -> Any:
    what = f"answer to {response.request.method} {response.request.url.path}"
    return _validated(adapter, response.content, what)


def _validated(adapter: TypeAdapter[Any], data: str | bytes, what: str) -> Any:
    """``data`` as the contract's model; a hub that sends another shape is one error line
    (another version of the hub, most likely), never a pydantic report."""
    try:
        return adapter.validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise SendenseError(
            f"the hub's {what} does not match the contract "
            f"({where}: {first.get('msg')}): is it another version?"
        ) from None
