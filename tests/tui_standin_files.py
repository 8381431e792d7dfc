"""The stand-in hub's single files and verifications (tests/tui_standin_hub.py serves
them), built from the contract's models so the console meets the shapes the real hub
sends.

Every point's disk 2000 is a GPT disk with an ext4 partition holding a small known
tree (``ROOT_FILES``), an NTFS one and swap; disk 2001 is one FAT file system with no
partition table. File contents are real bytes and folders come as real tar streams, so
``engine.extract`` writes real files from them. A verification starts running and moves
only when the test calls ``step_verify``, so a test sees every stage; a point named in
``damage`` ends damaged there.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from engine.contract.files import (
    HEADER_KIND,
    HEADER_MODE,
    HEADER_MTIME,
    TAR_MEDIA_TYPE,
    FileEntry,
    FileKind,
    FolderListing,
    Partition,
)
from engine.contract.hub import ErrorAnswer
from engine.contract.status import Verification
from engine.contract.verify import DamagedRange, DiskVerification, VerifyReport
from tests.tui_standin_restores import StandinRestores

MiB = 2**20
# path: bytes (a file), None (a folder), or "-> target" (a symlink)
ROOT_FILES: dict[str, bytes | str | None] = {
    "/etc": None,
    "/etc/hostname": b"pgtest1\n",
    "/etc/fstab": b"UUID=1 / ext4 defaults 0 1\n",
    "/home": None,
    "/home/ops": None,
    "/home/ops/notes.txt": b"restore drill: every Tuesday\n" * 40,
    "/home/ops/report 2026.csv": b"month,backups\n"
    + b"".join(b"%d,%d\n" % (m, m * 7) for m in range(1, 13)),
    "/home/ops/café.md": "# café\nunicode names survive\n".encode(),
    "/home/ops/latest": "-> report 2026.csv",
    "/home/ops/archive": None,
    "/home/ops/archive/2025.tar": bytes(range(256)) * 64,
    "/lost+found": None,
    "/var": None,
    "/var/log": None,
    "/var/log/syslog": b"Nov 29 09:00:00 pgtest1 sendense: quiesced\n" * 100,
}
DATA_FILES: dict[str, bytes | str | None] = {"/Users": None, "/Users/readme.txt": b"ntfs\r\n"}
BOOT_FILES: dict[str, bytes | str | None] = {"/EFI": None, "/EFI/BOOT.CFG": b"timeout=3\n"}
PARTITIONS = {
    2000: [
        Partition(
            number=1,
            offset_bytes=MiB,
            size_bytes=40 * MiB,
            scheme="gpt",
            type="Linux filesystem",
            name="root",
            filesystem="ext4",
            label="root",
        ),
        Partition(
            number=2,
            offset_bytes=41 * MiB,
            size_bytes=16 * MiB,
            scheme="gpt",
            type="Microsoft basic data",
            name="data",
            filesystem="ntfs",
            label="DATA",
        ),
        Partition(
            number=3,
            offset_bytes=57 * MiB,
            size_bytes=6 * MiB,
            scheme="gpt",
            type="Linux swap",
            found="swap",
        ),
    ],
    2001: [
        Partition(number=0, offset_bytes=0, size_bytes=32 * MiB, filesystem="fat32", label="BOOT")
    ],
}
TREES = {(2000, 1): ROOT_FILES, (2000, 2): DATA_FILES, (2001, 0): BOOT_FILES}


@dataclass
class Node:
    entry: FileEntry
    data: bytes = b""


def file_system(files: dict[str, bytes | str | None], at: datetime) -> dict[str, Node]:
    nodes = {"/": Node(FileEntry(path="/", name="/", kind=FileKind.DIRECTORY, mode=0o755))}
    for n, (path, what) in enumerate(files.items()):
        mtime = at - timedelta(days=30 - n)
        name = path.rsplit("/", 1)[1]
        if what is None:
            entry = FileEntry(path=path, name=name, kind=FileKind.DIRECTORY, mode=0o755)
            nodes[path] = Node(entry)
        elif isinstance(what, str):
            target = what.removeprefix("-> ")
            entry = FileEntry(
                path=path, name=name, kind=FileKind.SYMLINK, mode=0o777, symlink_target=target
            )
            nodes[path] = Node(entry)
        else:
            mode = 0o600 if name == "notes.txt" else 0o644
            entry = FileEntry(
                path=path, name=name, kind=FileKind.FILE, mode=mode, size_bytes=len(what)
            )
            nodes[path] = Node(entry, what)
        entry.mtime, entry.uid, entry.gid = mtime, 1000, 1000
    return nodes


def tar_of(nodes: dict[str, Node], path: str) -> bytes:
    """``path`` and, for a folder, everything under it, named from its basename."""
    out = io.BytesIO()
    base = path.rsplit("/", 1)[0]
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for at in sorted(p for p in nodes if p == path or p.startswith(path.rstrip("/") + "/")):
            node = nodes[at]
            info = tarfile.TarInfo(at[len(base) + 1 :])
            info.mode, info.mtime = (
                node.entry.mode,
                (node.entry.mtime or datetime.now()).timestamp(),
            )
            if node.entry.kind is FileKind.DIRECTORY:
                info.type = tarfile.DIRTYPE
            elif node.entry.kind is FileKind.SYMLINK:
                info.type, info.linkname = tarfile.SYMTYPE, node.entry.symlink_target or ""
            info.size = len(node.data)
            tar.addfile(info, io.BytesIO(node.data) if node.data else None)
    return out.getvalue()


def _refused(status: int, detail: str) -> JSONResponse:
    return JSONResponse(ErrorAnswer(detail=detail).model_dump(), status_code=status)


class StandinFiles:
    def __init__(self, restores: StandinRestores) -> None:
        self.restores = restores
        self.trees = {key: file_system(files, restores.at) for key, files in TREES.items()}
        self.reports: dict[str, VerifyReport] = {}
        self.damage: dict[str, DamagedRange] = {}  # a point whose verification finds this

    def partition(self, disk_key: int, number: int | None) -> Partition | JSONResponse:
        parts = PARTITIONS.get(disk_key, [])
        readable = [p for p in parts if p.filesystem]
        if number is None:
            if len(readable) == 1:
                return readable[0]
            listed = ", ".join(f"{p.number} ({p.filesystem})" for p in readable)
            return _refused(422, f"disk {disk_key} holds several file systems: {listed}")
        found = next((p for p in parts if p.number == number), None)
        if found is None:
            there = ", ".join(str(p.number) for p in parts)
            return _refused(404, f"no partition {number} on disk {disk_key} (there are {there})")
        if found.filesystem is None:
            return _refused(422, f"partition {number} holds {found.found}: no file system read")
        return found

    def node(
        self, disk_key: int, path: str, number: int | None
    ) -> tuple[Node, Partition] | JSONResponse:
        part = self.partition(disk_key, number)
        if isinstance(part, JSONResponse):
            return part
        nodes = self.trees[(disk_key, part.number)]
        path = "/" + path.strip("/")
        if path not in nodes:
            return _refused(404, f"no {path} in partition {part.number} ({part.filesystem})")
        return nodes[path], part

    # -- verification -------------------------------------------------------------------

    def verify(self, point_id: str) -> VerifyReport:
        running = self.reports.get(point_id)
        if running is not None and running.running:
            return running
        point = self.restores.points[point_id]
        report = VerifyReport(
            point_id=point_id,
            running=True,
            started_at=self.restores.at,
            bytes_total=point.bytes_total,
            disks=[
                DiskVerification(disk_key=d.disk_key, bytes_total=d.capacity_bytes, chunk_size=MiB)
                for d in point.disks
            ],
        )
        self.reports[point_id] = report
        return report

    def verification(self, point_id: str) -> VerifyReport:
        point = self.restores.points[point_id]
        never = VerifyReport(point_id=point_id, running=False, state=point.verification)
        return self.reports.get(point_id, never)

    def step_verify(self, point_id: str, fraction: float) -> None:
        """Advance the running verification; at its end the point takes its outcome."""
        report = self.reports[point_id]
        report.bytes_done = min(
            report.bytes_total, report.bytes_done + int(report.bytes_total * fraction)
        )
        report.rate_bps = 120.0 * MiB
        if report.bytes_done < report.bytes_total:
            return
        damage = self.damage.get(point_id)
        report.running, report.finished_at, report.rate_bps = False, self.restores.at, 0.0
        for disk in report.disks:
            disk.bytes_done, disk.check = disk.bytes_total, "ok"
            disk.chunks = disk.bytes_total // MiB
        if damage is None:
            report.state = Verification.VERIFIED
            report.detail = f"every chunk of {len(report.disks)} disk(s) matches"
        else:
            report.state, report.damaged = Verification.DAMAGED, [damage]
            report.detail = f"disk {damage.disk_key}: {damage.reason}"
        point = self.restores.points[point_id]
        point.verification, point.verification_detail = report.state, report.detail


def file_routes(data: StandinFiles) -> APIRouter:
    router = APIRouter()
    disk = "/restore-points/{point_id}/disks/{disk_key}"

    @router.get(f"{disk}/partitions", response_model=None)
    async def partitions(point_id: str, disk_key: int) -> list[Partition] | JSONResponse:
        if point_id not in data.restores.points or disk_key not in PARTITIONS:
            return _refused(404, f"no disk {disk_key} in restore point {point_id}")
        return PARTITIONS[disk_key]

    @router.get(f"{disk}/files", response_model=None)
    async def files(
        point_id: str, disk_key: int, path: str = "/", partition: int | None = None
    ) -> FolderListing | JSONResponse:
        found = data.node(disk_key, path, partition)
        if isinstance(found, JSONResponse):
            return found
        node, part = found
        nodes = data.trees[(disk_key, part.number)]
        at = node.entry.path
        entries = (
            [
                n.entry
                for p, n in sorted(nodes.items())
                if p != "/" and p.rsplit("/", 1)[0] == at.rstrip("/")
            ]
            if node.entry.kind is FileKind.DIRECTORY
            else [node.entry]
        )
        return FolderListing(
            point_id=point_id,
            disk_key=disk_key,
            partition=part.number,
            filesystem=part.filesystem or "",
            path=at,
            entries=entries,
        )

    @router.get(f"{disk}/files/stat", response_model=None)
    async def stat(
        point_id: str, disk_key: int, path: str = "/", partition: int | None = None
    ) -> FileEntry | JSONResponse:
        found = data.node(disk_key, path, partition)
        return found if isinstance(found, JSONResponse) else found[0].entry

    @router.get(f"{disk}/files/content", response_model=None)
    async def content(
        point_id: str,
        disk_key: int,
        path: str = "/",
        partition: int | None = None,
        archive: bool = False,
    ) -> Response:
        found = data.node(disk_key, path, partition)
        if isinstance(found, JSONResponse):
            return found
        node, part = found
        entry = node.entry
        if entry.kind is FileKind.FILE and not archive:
            headers = {
                HEADER_KIND: entry.kind.value,
                HEADER_MODE: f"{entry.mode:o}",
                HEADER_MTIME: str(entry.mtime.timestamp() if entry.mtime else 0.0),
            }
            return Response(node.data, media_type="application/octet-stream", headers=headers)
        tar = tar_of(data.trees[(disk_key, part.number)], entry.path)
        return Response(tar, media_type=TAR_MEDIA_TYPE)

    @router.post("/restore-points/{point_id}/verify", status_code=202)
    async def verify(point_id: str) -> VerifyReport:
        return data.verify(point_id)

    @router.get("/restore-points/{point_id}/verify")
    async def verification(point_id: str) -> VerifyReport:
        return data.verification(point_id)

    return router
