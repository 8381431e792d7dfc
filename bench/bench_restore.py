"""``restore disk --format raw`` through the hub's API against a plain ``qemu-img convert
-O raw`` of the same chain, same run.

The point: a full backup of the lab's pgtest1 (disk 2000 of ``--disk-mib``, 3/8 of it
data) through a real hub and node, and an incremental on it (``--incr-mib`` of new data,
a qcow2 overlay), so both read a chain of two. Rounds alternate which goes first; the
page cache is dropped before each run (``--warm`` keeps it), as a restore reads a point
written long ago. Printed: the best and median times of each, the ratios (qemu-img time
/ ours: above 1 is ours faster; each against the restore that does the same work), and
the machine.

- ``restore``: from POST /api/v1/restores/disk to the job's end on the event stream
  (the checks, the job, qemu-img, the rename: all of it), into a new file;
- ``qemu-img``: ``qemu-img convert -O raw`` as one types it; both return with their
  writes in the page cache, where the kernel writes them back;
- ``restore --force``: over an existing file, which a restore replaces only once the
  new data is on disk (it waits for the writeback);
- ``qemu-img+sync``: ``qemu-img convert -O raw``, then its file's data flushed: the
  same work as ``restore --force``.

    .venv/bin/python -m bench.bench_restore                     # 1 GiB disk, 3 rounds
    .venv/bin/python -m bench.bench_restore --disk-mib 512 --repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fixtures.services import Services

MiB = 1024 * 1024
TOOLS = ("restore", "qemu-img", "restore --force", "qemu-img+sync")


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3")
    except OSError as exc:
        raise SystemExit(
            f"cannot drop the page cache ({exc.strerror}): run as root, or --warm"
        ) from None


def machine(folder: Path) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    fs = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(folder)],
        capture_output=True,
        text=True,
    ).stdout.strip()
    qemu = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True).stdout
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 30
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {ram} GiB RAM, kernel {platform.release()},"
        f" {qemu.splitlines()[0]}, target {' '.join(fs.split())}"
    )


def fdatasync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


async def run_restore(svc: Services, point_id: str, target: Path, force: bool) -> float:
    """From the POST to the job's end as the hub's event stream tells it (no polling: on
    a machine of few CPUs a poll loop would take them from qemu-img)."""
    from engine.contract.restore import DiskRestoreRequest, RestoreJob
    from engine.contract.status import JobStatus
    from engine.hub_client import HubClient

    if force:
        target.write_bytes(b"the file it replaces")
    request = DiskRestoreRequest(point_id=point_id, disk_key=2000, path=str(target), force=force)
    async with HubClient(svc.hub.url, svc.token) as hub, hub.subscribe() as events:
        start = time.perf_counter()
        job = await hub.restore_disk(request)
        while not job.finished:
            event = await anext(events)
            if isinstance(event, RestoreJob) and event.restore_id == job.restore_id:
                job = event
        seconds = time.perf_counter() - start
    if job.status != JobStatus.COMPLETED:
        raise SystemExit(f"restore {job.restore_id} {job.status}: {job.error_message}")
    return seconds


def run_convert(source: Path, target: Path, sync: bool) -> float:
    start = time.perf_counter()
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(source), str(target)], check=True)
    if sync:
        fdatasync(target)
    return time.perf_counter() - start


def point_on_lab(home: Path, disk_mib: int, incr_mib: int):  # type: ignore[no-untyped-def]
    """Lab, hub and node on ``home``; a full backup of pgtest1 and an incremental on it."""
    from engine.config import get_settings
    from engine.db.session import session_scope, upgrade
    from engine.lab.launcher import start
    from engine.lab.setup import register
    from tests.conftest import free_port
    from tests.fixtures.lab import BUILD_CACHE
    from tests.fixtures.points import add_incremental
    from tests.fixtures.services import make_services

    os.environ.update(SENDENSE_HOME=str(home), SENDENSE_CONFIG="")
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.db_url)
    info = start(home / "lab", port=free_port(), disk_mib=disk_mib, bin_dir=BUILD_CACHE)
    with session_scope(settings.db_url) as s:
        reg = register(s, settings, info)
    svc = make_services(home)
    svc.start(svc.hub, svc.node)
    with svc.client() as api:
        answer = api.post(
            "/api/v1/backups", json={"vm_name": "pgtest1", "repository_id": reg.repository_id}
        )
        answer.raise_for_status()
    job = svc.wait_job(answer.json()["backup_id"], timeout=600)
    if job["status"] != "completed":
        raise SystemExit(f"the backup {job['status']}: {job['error_message']}")
    point_id, disks = add_incremental(settings, job["backup_id"], incr_mib)
    return svc, point_id, disks[2000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--disk-mib", type=int, default=1024, help="pgtest1's disk 2000")
    parser.add_argument("--incr-mib", type=int, default=64, help="the incremental's new data")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool")
    parser.add_argument("--warm", action="store_true", help="keep the page cache between runs")
    args = parser.parse_args()
    from engine.hub.restores.convert import data_bytes
    from engine.lab.launcher import stop

    with tempfile.TemporaryDirectory(prefix="bench-restore-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        home, out = tmp / "home", tmp / "out"
        out.mkdir()
        svc = None
        try:
            svc, point_id, qcow2 = point_on_lab(home, args.disk_mib, args.incr_mib)
            data = data_bytes("qemu-img", qcow2)
            runs: dict[str, list[float]] = {tool: [] for tool in TOOLS}
            for i in range(args.repeat):
                for tool in TOOLS[i % len(TOOLS) :] + TOOLS[: i % len(TOOLS)]:
                    target = out / f"{tool.split()[0]}.raw"
                    target.unlink(missing_ok=True)
                    if not args.warm:
                        drop_caches()
                    if tool.startswith("restore"):
                        force = tool.endswith("force")
                        seconds = asyncio.run(run_restore(svc, point_id, target, force))
                    else:
                        seconds = run_convert(qcow2, target, sync=tool.endswith("sync"))
                    runs[tool].append(seconds)
            compare = ["qemu-img", "compare", "-f", "raw", "-F", "raw"]
            same = subprocess.run(
                [*compare, str(out / "restore.raw"), str(out / "qemu-img.raw")],
                capture_output=True,
                text=True,
            )
            if same.returncode != 0:
                raise SystemExit(f"the two files differ: {same.stdout.strip()}")
            print(machine(out))
            cache = "warm page cache" if args.warm else "page cache dropped before each run"
            print(
                f"restore disk --format raw of a chain of 2, disk {args.disk_mib} MiB,"
                f" {data / MiB:.0f} MiB data; {args.repeat} rounds, {cache}"
            )
            for tool in TOOLS:
                ours = runs["restore --force" if tool.endswith("sync") else "restore"]
                best, median = min(runs[tool]), statistics.median(runs[tool])
                line = (
                    f"  {tool:<16} best {best:6.3f}s ({data / best / MiB:5.0f} MiB/s)"
                    f"  median {median:6.3f}s"
                )
                if tool.startswith("qemu-img"):
                    mine = "restore --force" if tool.endswith("sync") else "restore"
                    line += (
                        f"  ratio {tool} / {mine}: best {best / min(ours):4.2f}"
                        f" median {median / statistics.median(ours):4.2f}"
                    )
                print(line, flush=True)
        finally:
            if svc is not None:
                svc.stop()
            stop(home / "lab")


if __name__ == "__main__":
    sys.exit(main())
