"""An ``auto`` backup (incremental, with CBT) of 1 % of a disk changed in scattered 64 KiB
runs against a full backup of the same disk, same run.

A private lab (pgtest1's disk 2000 of ``--disk-mib``: 3/8 of it data, 2/8 written zeroes,
3/8 holes; its disk 2001 kept small, ``--second-mib``, so the full's time is the big
disk's), a hub and a node on a private folder under /var/tmp. Each round (after a
``sync``, so that no job pays for the writeback of the one before; with ``--cold`` the
page cache is dropped too, so that each job reads its source from the disk as a backup
of a datastore does, not from the memory the lab just wrote it through; with
``--max-rate-mib`` both jobs read at most that fast, as from a vSphere host over NBD):

- ``full``: ``POST /api/v1/backups`` with ``backup_type=full`` until completed;
- the guest writes: ``--percent`` of disk 2000 in 64 KiB runs at distinct random
  64 KiB-aligned offsets (the lab's ``write``: new data at each), untimed;
- ``incremental``: ``backup_type=auto`` until completed; it must come out incremental
  on the round's full, and its disk 2000 must compare identical to the flat file.

A job's time is from just before its POST to the ``completed_at`` of its hub row (all of
it: the plan, the qcow2 files and exports, the node's client, the snapshot, the copy, the
end); the row's ``started_at`` → ``completed_at`` (the node's part) is printed beside it.
Printed: the machine; per round each job's time, the incremental's disk 2000
``bytes_total`` (what the copy covers: the changed areas grown to whole digest chunks;
the client reads exactly that) and the growth of its qcow2 overlay, each over the changed
bytes; the best and median of every ratio (goals: copied <= 1.1 x, time <= 0.10); and the
median time of each job's phases (before the client, the client, after it) and the
client's log of the last incremental, step by step: where the fixed costs show.

    .venv/bin/python -m bench incremental [--disk-mib 4096] [--repeat 3] [--cold] [--max-rate-mib N]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.lab.launcher import LabInfo

MiB = 1024 * 1024
RUN = 64 * 1024  # one guest write
DISK = 2000
FINISHED = ("completed", "failed", "cancelled")


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    qemu = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True).stdout
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 30
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {ram} GiB RAM, kernel {platform.release()}, "
        f"python {sys.version.split()[0]}, {qemu.splitlines()[0]}"
    )


def stamp(text: str) -> float:
    """The hub's times are UTC, with or without their offset."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def drop_caches() -> None:
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3")
    except OSError as exc:
        raise SystemExit(f"cannot drop the page cache ({exc.strerror}): run as root") from None


def backup(
    api: Any, repository_id: int, backup_type: str, args: argparse.Namespace
) -> tuple[dict[str, Any], float, float]:
    """One job of pgtest1 to its end; its view, when it was asked for and its time from
    then to its end. Polled gently: a quick poll would take the CPU the job needs (the end
    is the row's ``completed_at``, not when the poll saw it)."""
    os.sync()
    if args.cold:
        drop_caches()
    request = {"vm_name": "pgtest1", "repository_id": repository_id, "backup_type": backup_type}
    if args.max_rate_mib:
        request["max_rate_mib"] = args.max_rate_mib
    t0 = time.time()
    answer = api.post("/api/v1/backups", json=request)
    if answer.is_error:
        raise SystemExit(f"the {backup_type} backup was refused: {answer.text}")
    path = f"/api/v1/backups/{answer.json()['backup_id']}"
    deadline = time.monotonic() + 3600
    while (job := api.get(path).json())["status"] not in FINISHED:
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} still {job['status']} after an hour")
        time.sleep(0.5)
    if job["status"] != "completed":
        raise SystemExit(f"the {backup_type} backup {job['status']}: {job['error_message']}")
    return job, t0, stamp(job["completed_at"]) - t0


def phases(logs: Path, job: dict[str, Any], t0: float) -> tuple[float, float, float]:
    """Where a job's time goes: from the POST to the client's first log line (the hub's
    plan, qcow2 files and exports, the node starting the client and the client's own
    start), the client's first to last line (vCenter, the snapshot, the changed areas,
    the sources, the copy), and from then to the row's end (the client's exit, the
    node's relay, the hub's end of the job)."""
    times = [moment.timestamp() for moment, _ in client_log(logs, job["backup_id"])]
    end = stamp(job["completed_at"])
    return times[0] - t0, times[-1] - times[0], end - times[-1]


def node_seconds(job: dict[str, Any]) -> float:
    return stamp(job["completed_at"]) - stamp(job["started_at"])


def guest_writes(info: LabInfo, capacity: int, percent: float, seed: int) -> int:
    """``percent`` of the disk in 64 KiB runs at distinct random aligned offsets; the
    bytes written."""
    from engine.lab.client import write

    runs = round(capacity * percent / 100 / RUN)
    for slot in sorted(random.Random(seed).sample(range(capacity // RUN), runs)):
        write(info, "pgtest1", DISK, slot * RUN, RUN)
    return runs * RUN


def disk_of(job: dict[str, Any]) -> dict[str, Any]:
    return next(d for d in job["disks"] if d["disk_key"] == DISK)


def check_incremental(job: dict[str, Any], full: dict[str, Any], flat: Path) -> None:
    """It built on the round's full, and its chain reads as the source's flat file."""
    disk = disk_of(job)
    if job["backup_type"] != "incremental" or disk["mode"] != "incremental":
        raise SystemExit(
            f"the auto backup was {job['backup_type']} (disk {DISK}: {disk['mode']}, "
            f"{disk['fallback_reason']}), not an incremental"
        )
    if job["parent_backup_id"] != full["backup_id"]:
        raise SystemExit(f"the incremental built on {job['parent_backup_id']}, not the full")
    same = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", disk["qcow2_path"], str(flat)],
        capture_output=True,
        text=True,
    )
    if same.returncode != 0:
        raise SystemExit(f"the incremental differs from its source: {same.stdout}{same.stderr}")


def client_log(logs: Path, backup_id: str) -> list[tuple[datetime, str]]:
    """The client's log of a job: each line's time (local, as logging writes it) and text."""
    lines = []
    for line in (logs / f"backup-{backup_id}.log").read_text().splitlines():
        parts = line.split(maxsplit=2)
        try:
            day, clock, text = parts
            lines.append((datetime.fromisoformat(f"{day} {clock.replace(',', '.')}"), text))
        except ValueError:
            continue
    return lines


def client_steps(logs: Path, backup_id: str) -> list[str]:
    """The client's log of a job, each line with its time since the first."""
    lines = client_log(logs, backup_id)
    return [f"  +{(m - lines[0][0]).total_seconds():6.2f} s  {t[:150]}" for m, t in lines]


def ratios(label: str, values: list[float], goal: str) -> str:
    return (
        f"{label:<38} best {min(values):6.3f}  median {statistics.median(values):6.3f}  "
        f"(goal {goal})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--disk-mib", type=int, default=4096, help="pgtest1's disk 2000")
    parser.add_argument("--second-mib", type=int, default=64, help="pgtest1's disk 2001")
    parser.add_argument("--percent", type=float, default=1.0, help="of disk 2000 changed")
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the page cache before each job (root): the source read from the disk",
    )
    parser.add_argument(
        "--max-rate-mib",
        type=int,
        help="both jobs' max_rate_mib: a source as slow as vSphere's (NBD: ~100-300 MiB/s)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-incremental-", dir="/var/tmp") as tmp:
        home = Path(tmp) / "home"
        os.environ.update(SENDENSE_HOME=str(home), SENDENSE_CONFIG="")
        run(home, args)


def run(home: Path, args: argparse.Namespace) -> None:
    from engine.config import get_settings
    from engine.db.session import session_scope, upgrade
    from engine.lab.launcher import start, stop
    from engine.lab.setup import register
    from engine.node.sources import flat_extent
    from engine.vcenter import connect, datastore_file_path, find_vm, vm_info
    from tests.conftest import free_port
    from tests.fixtures.lab import BUILD_CACHE
    from tests.fixtures.services import make_services

    get_settings.cache_clear()
    settings = get_settings()
    lab_dir = home / "lab"
    t0 = time.monotonic()
    info = start(
        lab_dir,
        port=free_port(),
        disk_mib=args.disk_mib,
        second_disk_mib=args.second_mib,
        bin_dir=BUILD_CACHE,
        timeout=1800,
    )
    lab_seconds = time.monotonic() - t0
    svc = None
    try:
        upgrade(settings.db_url)
        with session_scope(settings.db_url) as s:
            reg = register(s, settings, info)
        with connect(info.host, info.user, info.password, thumbprint=info.thumbprint) as vc:
            disk = next(
                d for d in vm_info(vc, find_vm(vc, "/DatabanxDC/vm/pgtest1")).disks if d.key == DISK
            )
            flat = flat_extent(datastore_file_path(vc, disk.file_name))
        # The product's own pace of database writes, not the tests' quicker one.
        svc = make_services(home, extra_env={"SENDENSE_HUB__PROGRESS_FLUSH_SECONDS": "2"})
        svc.start(svc.hub, svc.node)
        print(machine())
        print(
            f"pgtest1 disk {DISK}: {disk.capacity_bytes / MiB:.0f} MiB, "
            f"{flat.stat().st_blocks * 512 / MiB:.0f} MiB allocated (the lab wrote it in "
            f"{lab_seconds:.1f} s); disk 2001: {args.second_mib} MiB; {args.percent:g} % "
            f"changed in 64 KiB runs; {args.repeat} rounds; page cache "
            f"{'dropped before each job' if args.cold else 'kept (the source warm)'}; "
            f"source rate {f'{args.max_rate_mib} MiB/s' if args.max_rate_mib else 'unlimited'}",
            flush=True,
        )
        rows: dict[str, list[float]] = {k: [] for k in ("copied", "qcow2", "time", "node")}
        spent: dict[str, list[tuple[float, float, float]]] = {"full": [], "incremental": []}
        last = ""
        with svc.client(timeout=600.0) as api:
            for r in range(args.repeat):
                full, t_full, full_s = backup(api, reg.repository_id, "full", args)
                w0 = time.monotonic()
                changed = guest_writes(info, disk.capacity_bytes, args.percent, seed=r)
                write_s = time.monotonic() - w0
                incr, t_incr, incr_s = backup(api, reg.repository_id, "auto", args)
                check_incremental(incr, full, flat)
                spent["full"].append(phases(settings.logs, full, t_full))
                spent["incremental"].append(phases(settings.logs, incr, t_incr))
                d = disk_of(incr)
                rows["copied"].append(d["bytes_total"] / changed)
                rows["qcow2"].append(d["qcow2_size_bytes"] / changed)
                rows["time"].append(incr_s / full_s)
                rows["node"].append(node_seconds(incr) / node_seconds(full))
                print(
                    f"round {r + 1}: full {full_s:6.2f} s (node {node_seconds(full):6.2f} s, "
                    f"{disk_of(full)['bytes_done'] / MiB:.0f} MiB settled); "
                    f"{changed // RUN} writes in {write_s:.1f} s; incremental {incr_s:5.2f} s "
                    f"(node {node_seconds(incr):5.2f} s), copied "
                    f"{d['bytes_total'] / MiB:.2f} MiB of {changed / MiB:.2f} MiB changed, "
                    f"qcow2 {d['qcow2_size_bytes'] / MiB:.2f} MiB",
                    flush=True,
                )
                last = incr["backup_id"]
        print(ratios("copied (bytes_total) / changed", rows["copied"], "<= 1.1"))
        print(ratios("qcow2 overlay size / changed", rows["qcow2"], "none"))
        print(ratios("incremental / full time (POST->end)", rows["time"], "<= 0.10"))
        print(ratios("incremental / full time (started->end)", rows["node"], "none"))
        for kind, runs in spent.items():
            before, client, after = (statistics.median(p) for p in zip(*runs, strict=True))
            print(
                f"median {kind:<11}: POST -> client's first line {before:5.2f} s, "
                f"client {client:5.2f} s, its last line -> job end {after:5.2f} s"
            )
        print(f"the client's log of the last incremental ({last}):")
        print("\n".join(client_steps(settings.logs, last)))
    finally:
        if svc is not None:
            svc.stop()
        stop(lab_dir)


if __name__ == "__main__":
    main()
