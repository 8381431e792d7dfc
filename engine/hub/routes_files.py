"""Single files out of a restore point: a disk's partitions, a folder's listing, a path's
entry, and a file's bytes or a tar stream of a file or folder (see engine/hub/files)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from engine.contract.fields import JobId
from engine.contract.files import (
    HEADER_KIND,
    HEADER_MODE,
    HEADER_MTIME,
    TAR_MEDIA_TYPE,
    ContentQuery,
    FileEntry,
    FileQuery,
    FolderListing,
    Partition,
)
from engine.contract.hub import errors
from engine.contract.progress import DiskKey
from engine.hub.files.service import FileService

router = APIRouter(prefix="/api/v1/restore-points/{point_id}/disks/{disk_key}")

PointId = Annotated[JobId, Path(description="the point's id: its backup's backup_id")]
Disk = Annotated[DiskKey, Path(description="the disk's key in the point")]


def files(request: Request) -> FileService:
    service: FileService = request.app.state.files
    return service


@router.get("/partitions", responses=errors(404, 422))
def partitions(point_id: PointId, disk_key: Disk, request: Request) -> list[Partition]:
    """The disk's volumes: 0 the whole disk without a table, 1… the table's entries,
    LVM logical volumes after; each with the file system read there or what was found."""
    return files(request).partitions(point_id, disk_key)


@router.get("/files", responses=errors(404, 422))
def list_folder(
    point_id: PointId, disk_key: Disk, request: Request, query: Annotated[FileQuery, Query()]
) -> FolderListing:
    return files(request).listing(point_id, disk_key, query)


@router.get("/files/stat", responses=errors(404, 422))
def stat_path(
    point_id: PointId, disk_key: Disk, request: Request, query: Annotated[FileQuery, Query()]
) -> FileEntry:
    return files(request).stat(point_id, disk_key, query)


@router.get(
    "/files/content",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "a file's bytes, or a tar stream (a folder, or archive=true)",
            "content": {"application/octet-stream": {}, TAR_MEDIA_TYPE: {}},
        },
        **errors(404, 422),
    },
)
async def content(
    point_id: PointId,
    disk_key: Disk,
    request: Request,
    query: Annotated[ContentQuery, Query()],
) -> StreamingResponse:
    """Streamed as read: memory stays bounded, and a client that goes away stops it."""
    service = files(request)
    plain = FileQuery(path=query.path, partition=query.partition)
    entry, tar, stream = await anyio.to_thread.run_sync(
        service.content, point_id, disk_key, plain, query.archive
    )
    if tar:
        name = (entry.name or "root") + ".tar"
        return StreamingResponse(
            stream,
            media_type=TAR_MEDIA_TYPE,
            headers={"Content-Disposition": f"attachment; filename*=utf-8''{quote(name, safe='')}"},
        )
    headers = {
        HEADER_KIND: entry.kind.value,
        HEADER_MODE: f"{entry.mode:o}",
        "Content-Length": str(entry.size_bytes),
    }
    if entry.mtime is not None:
        headers[HEADER_MTIME] = repr(entry.mtime.timestamp())
    return StreamingResponse(stream, media_type="application/octet-stream", headers=headers)
