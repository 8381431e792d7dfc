"""``restore vm`` through the hub and a node against ``nbdcopy`` from the point's own
read-only exports into fresh flat files, same run, same point, same disk.

A private lab (pgtest1 with bigger disks: ``--disk-mib``; 3/8 of each disk data, 2/8
written zeroes, 3/8 holes), a hub and a node on a private data folder under /var/tmp,
and one full backup of pgtest1: the point. Then, round by round (the order turns each
round, so a busy machine penalises neither more; every round starts after a ``sync``, so
that none pays for the writeback of the one before, and an untimed nbdcopy round first
reads the point once, so that no round pays for a cold read):

- ``restore vm``: ``POST /api/v1/restores/vm`` until the job is completed: vCenter makes
  the VM, the hub exports the point, the node's client writes both disks in parallel
  into descriptor + flat files in the VM's datastore folder. Everything is timed, from
  the request to the end.
- ``nbdcopy``: the point's instant exports (started before the clock), both disks at
  once, ``nbdcopy --target-is-zero --flush`` into new sparse flat files on the same file
  system: only the copy is timed.

Printed: the machine, each tool's best and median time and throughput (of the disks'
whole size), and the ratio nbdcopy time / restore time. Goal: ratio >= 0.8.

    .venv/bin/python -m bench.bench_restore_vm [--disk-mib 4096] [--repeat 5] [--tmpfs]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.lab.launcher import LabInfo
    from engine.vcenter import VCenter

MiB = 1024 * 1024


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    nbdcopy = subprocess.run(["nbdcopy", "--version"], capture_output=True, text=True)
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {ram:.0f} GiB RAM, {platform.platform()}, "
        f"python {sys.version.split()[0]}, {nbdcopy.stdout.splitlines()[0]}"
    )


def wait(api: Any, path: str, statuses: tuple[str, ...], timeout: float = 3600) -> dict[str, Any]:
    """Poll gently: a quick poll would cost the hub the CPU the restore needs (the time
    of the end is the job's own ``completed_at``, not when the poll saw it)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.get(path).json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} still {job['status']} after {timeout:.0f}s")
        time.sleep(0.5)


def restore_round(api: Any, lab: LabInfo, point: str, name: str, sources: dict[str, int]) -> float:
    """One ``restore vm``, timed from the request to its end; its disks are then checked
    against the lab's (``sources``: the point's qcow2 path → its disk key), and the VM
    removed."""
    from engine.node.sources import flat_extent
    from engine.vcenter import datastore_file_path, destroy_vm, find_vm

    t0 = time.time()
    answer = api.post("/api/v1/restores/vm", json={"point_id": point, "name": name})
    if answer.status_code != 202:
        raise SystemExit(f"restore vm refused: {answer.text}")
    job = wait(api, f"/api/v1/restores/{answer.json()['restore_id']}", FINISHED)
    seconds = datetime.fromisoformat(job["completed_at"]).timestamp() - t0
    if job["status"] != "completed":
        raise SystemExit(f"restore {job['restore_id']} {job['status']}: {job['error_message']}")
    copy_seconds = copy_window(Path(os.environ["SENDENSE_HOME"]) / "logs", job["restore_id"])
    print(f"  (its client copied for {copy_seconds:.2f} s)", flush=True)
    with login(lab) as vc:
        for disk in job["disks"]:
            flat = flat_extent(datastore_file_path(vc, disk["target"]))
            compare(flat, LAB_FLAT[sources[disk["source_path"]]])
        destroy_vm(vc, find_vm(vc, job["vm_path"])._moId)
    return seconds


def copy_window(logs: Path, restore_id: str) -> float:
    """From the client's first ``copying`` to its last ``done``, as its log says."""
    stamps = []
    for line in (logs / f"restore-{restore_id}.log").read_text().splitlines():
        if ": copying " in line or ": done, " in line:
            day, clock = line.split()[:2]
            stamps.append(datetime.fromisoformat(f"{day} {clock.replace(',', '.')}"))
    return (max(stamps) - min(stamps)).total_seconds() if stamps else 0.0


def nbdcopy_round(api: Any, point: str, disks: dict[int, int], folder: Path) -> float:
    """Both disks at once with nbdcopy from the point's instant exports, copy timed only."""
    exports = {
        key: api.post(f"/api/v1/restore-points/{point}/exports", json={"disk_key": key}).json()
        for key in disks
    }
    folder.mkdir(parents=True, exist_ok=True)
    files = {key: folder / f"disk{key}-flat.vmdk" for key in disks}
    for key, size in disks.items():
        with files[key].open("wb") as f:
            f.truncate(size)
    try:
        t0 = time.monotonic()
        procs = [
            subprocess.Popen(
                ["nbdcopy", "--target-is-zero", "--flush", exports[key]["uri"], str(files[key])]
            )
            for key in disks
        ]
        codes = [p.wait() for p in procs]
        seconds = time.monotonic() - t0
        if any(codes):
            raise SystemExit(f"nbdcopy failed: exit codes {codes}")
        for key in disks:
            compare(files[key], LAB_FLAT[key])
    finally:
        for export in exports.values():
            api.delete(f"/api/v1/restore-exports/{export['name']}")
        shutil.rmtree(folder, ignore_errors=True)
    return seconds


def compare(a: Path, b: Path) -> None:
    out = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", str(a), str(b)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{a} differs from {b}: {out.stdout}{out.stderr}")


FINISHED = ("completed", "failed", "cancelled")
# pgtest1's flat files in the lab, by disk key: what every copy must equal.
LAB_FLAT: dict[int, Path] = {}


def login(lab: LabInfo) -> VCenter:
    from engine.vcenter import connect

    return connect(lab.host, lab.user, lab.password, thumbprint=lab.thumbprint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--disk-mib", type=int, default=4096, help="pgtest1's first disk")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per tool")
    parser.add_argument(
        "--tmpfs",
        action="store_true",
        help="the datastore (and nbdcopy's target) on /dev/shm: the disk's write noise out",
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-restore-vm-", dir="/var/tmp") as tmp_name,
        tempfile.TemporaryDirectory(
            prefix="bench-restore-vm-", dir="/dev/shm" if args.tmpfs else "/var/tmp"
        ) as datastore,
    ):
        home = Path(tmp_name) / "home"
        os.environ["SENDENSE_HOME"] = str(home)
        os.environ["SENDENSE_CONFIG"] = ""
        run(home, Path(datastore), args.disk_mib, args.repeat)


def run(home: Path, tmp: Path, disk_mib: int, repeat: int) -> None:
    """The lab (its datastore) and nbdcopy's files go in ``tmp``; the point in ``home``."""
    from engine.config import get_settings
    from engine.db.session import session_scope, upgrade
    from engine.lab.launcher import start, stop
    from engine.lab.setup import register
    from engine.node.sources import flat_extent
    from engine.vcenter import datastore_file_path, find_vm, vm_info
    from tests.conftest import free_port
    from tests.fixtures.lab import BUILD_CACHE
    from tests.fixtures.services import make_services

    settings = get_settings()
    lab_dir = tmp / "lab"
    # Writing big lab disks takes the lab a while before it answers.
    info = start(lab_dir, port=free_port(), disk_mib=disk_mib, bin_dir=BUILD_CACHE, timeout=1800)
    svc = None
    try:
        upgrade(settings.db_url)
        with session_scope(settings.db_url) as s:
            reg = register(s, settings, info)
        with login(info) as vc:
            disks = vm_info(vc, find_vm(vc, "/DatabanxDC/vm/pgtest1")).disks
            for disk in disks:
                LAB_FLAT[disk.key] = flat_extent(datastore_file_path(vc, disk.file_name))
        # The product's own pace of database writes, not the tests' quicker one.
        svc = make_services(home, extra_env={"SENDENSE_HUB__PROGRESS_FLUSH_SECONDS": "2"})
        svc.start(svc.hub, svc.node)
        sizes = {d.key: d.capacity_bytes for d in disks}
        total = sum(sizes.values())
        data = sum(p.stat().st_blocks * 512 for p in LAB_FLAT.values())
        print(machine())
        print(
            f"pgtest1: {len(sizes)} disks, {total / MiB:.0f} MiB in all, "
            f"{data / MiB:.0f} MiB allocated; the datastore in {tmp}; {repeat} rounds",
            flush=True,
        )
        with svc.client(timeout=600.0) as api:
            started = api.post(
                "/api/v1/backups",
                json={"vm_name": "pgtest1", "repository_id": reg.repository_id},
            )
            backup = wait(api, f"/api/v1/backups/{started.json()['backup_id']}", FINISHED)
            if backup["status"] != "completed":
                raise SystemExit(f"the backup {backup['status']}: {backup['error_message']}")
            point = backup["backup_id"]
            sources = {d["qcow2_path"]: d["disk_key"] for d in backup["disks"]}
            # Untimed: the point's files are read once first, so that the first timed
            # round pays for no cold read that the others do not.
            nbdcopy_round(api, point, sizes, tmp / "nbdcopy")
            times: dict[str, list[float]] = {"restore vm": [], "nbdcopy": []}
            for r in range(repeat):
                order = ["restore vm", "nbdcopy"] if r % 2 == 0 else ["nbdcopy", "restore vm"]
                for tool in order:
                    os.sync()  # the last round's writes go to disk before the next starts
                    if tool == "restore vm":
                        seconds = restore_round(api, info, point, f"bench-{r}", sources)
                    else:
                        seconds = nbdcopy_round(api, point, sizes, tmp / "nbdcopy")
                    times[tool].append(seconds)
                    print(f"round {r + 1}: {tool:10} {seconds:6.2f} s", flush=True)
        for tool, runs in times.items():
            best, median = min(runs), statistics.median(runs)
            print(
                f"{tool:10}  best {best:6.2f} s ({total / best / MiB:6.0f} MiB/s)  "
                f"median {median:6.2f} s ({total / median / MiB:6.0f} MiB/s)"
            )
        ours, ref = times["restore vm"], times["nbdcopy"]
        print(
            f"ratio nbdcopy/restore vm: best {min(ref) / min(ours):.2f}, "
            f"median {statistics.median(ref) / statistics.median(ours):.2f} (goal >= 0.8)"
        )
    finally:
        if svc is not None:
            svc.stop()
        stop(lab_dir)


if __name__ == "__main__":
    main()
