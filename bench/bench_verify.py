"""``verify`` of a point (engine/hub/verify: ``qemu-img check``, ``qemu-img map``, then every
chunk read from the chain's files where the map places it, or through a private qemu-nbd
export where it cannot, and compared with its digest table) against ``qemu-img compare``
of the same qcow2 with a raw copy of its disk, same run.

The point: a qcow2 of ``--disk-mib`` whose first half holds random data in 64 MiB runs
with 32 MiB holes between them, its digest table made from the raw file as the copier
makes it. Both read with the files in the page cache (a first unmeasured round warms
it): the work measured is the reading and comparing. ``qemu-img compare`` reads the
qcow2 and the raw copy and compares bytes; ours reads the qcow2 once and hashes it.
Printed: the best and median times, the ratio (qemu-img time / ours: above 1 is ours
faster; the goal is 0.8 or more), and the machine.

    .venv/bin/python -m bench bench_verify                      # 1 GiB disk, 512 MiB data
    .venv/bin/python -m bench bench_verify --disk-mib 256 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MiB = 1024 * 1024


def make_point(folder: Path, size: int, chunk: int) -> Path:
    """The raw disk, its qcow2, and the qcow2's table beside it."""
    import xxhash

    from engine.hub.verify.table import TableWriter, table_path

    raw = folder / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(size)
        for off in range(0, size // 2, 96 * MiB):
            f.seek(off)
            for _ in range(min(64 * MiB, size // 2 - off) // MiB):
                f.write(os.urandom(MiB))
    qcow2 = folder / "point.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
        check=True,
    )
    writer = TableWriter(table_path(qcow2), size)
    with raw.open("rb") as f:
        for off in range(0, size, chunk):
            writer.put(chunk, off, xxhash.xxh3_128(f.read(chunk)).digest())
    writer.close(sync=True)
    return qcow2


def ours(qcow2: Path, run: Path) -> float:
    from engine.contract.verify import DiskVerification
    from engine.hub.verify.checker import check_structure, damaged_ranges, read_disk
    from engine.hub.verify.disk import DiskCheck
    from engine.hub.verify.table import read_table, table_path

    table = read_table(table_path(qcow2))
    disk = DiskCheck(2000, qcow2, [qcow2], table, DiskVerification(disk_key=2000))
    t0 = time.perf_counter()
    assert check_structure("qemu-img", disk) is None
    read_disk("qemu-img", "qemu-nbd", run, disk, threading.Event())
    elapsed = time.perf_counter() - t0
    if damaged_ranges(disk) or disk.state.chunks != table.header.chunks:
        raise SystemExit(f"verify found damage on a good point: {damaged_ranges(disk)}")
    return elapsed


def qemu_compare(qcow2: Path, raw: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", str(qcow2), str(raw)],
        check=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--disk-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    args = parser.parse_args()
    from engine.config import CopySettings

    chunk = CopySettings().chunk_size
    size = args.disk_mib * MiB
    with tempfile.TemporaryDirectory(prefix="bench-verify-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        qcow2 = make_point(tmp, size, chunk)
        raw = tmp / "disk.raw"
        ours(qcow2, tmp / "run")
        qemu_compare(qcow2, raw)  # both warm the page cache
        times: dict[str, list[float]] = {"verify": [], "qemu-img compare": []}
        for i in range(args.repeat):
            runs = [
                ("verify", lambda: ours(qcow2, tmp / "run")),
                ("qemu-img compare", lambda: qemu_compare(qcow2, raw)),
            ]
            for name, fn in runs if i % 2 == 0 else runs[::-1]:
                times[name].append(fn())
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.repeat} rounds; "
        f"{args.disk_mib} MiB disk, {args.disk_mib // 2} MiB of it data with holes, "
        f"{chunk >> 10} KiB chunks, warm page cache"
    )
    for name in times:
        print(
            f"{name:16} best {best[name]:6.2f}s ({size / best[name] / MiB:5.0f} MiB/s)"
            f"  median {median[name]:6.2f}s"
        )
    ratio = best["qemu-img compare"] / best["verify"]
    ratio_med = median["qemu-img compare"] / median["verify"]
    print(f"ratio qemu-img compare / verify: best {ratio:.2f} median {ratio_med:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
