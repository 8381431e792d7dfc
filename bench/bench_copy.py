"""``sendense nbd copy`` against libnbd's own ``nbdcopy``, same run, same source.

Sources (nbdkit's file plugin on a unix socket): a file of random data, and a file that
is mostly holes. Targets: a fresh qcow2 per run, exported by the product's own export
manager (qemu-nbd), on disk and on tmpfs (/dev/shm, to take the disk out). Each copy
runs as a child process; its peak resident memory comes from ``wait4``'s rusage.

    .venv/bin/python -m bench.bench_copy                       # 2 GiB random, 8 GiB sparse
    .venv/bin/python -m bench.bench_copy --random-mib 256 --sparse-mib 1024 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import NbdSettings

if TYPE_CHECKING:
    from engine.nbd.exports import ExportManager

MiB = 1024 * 1024


@dataclass
class Run:
    tool: str
    seconds: float
    rss_kib: int

    def rate(self, size: int) -> float:
        return size / self.seconds / MiB


def make_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for _ in range(size // (8 * MiB)):
            f.write(os.urandom(8 * MiB))
        f.write(os.urandom(size % (8 * MiB)))


def make_sparse(path: Path, size: int) -> None:
    """10 % data: 1 MiB of random data at the start of every 10 MiB, holes elsewhere."""
    with path.open("wb") as f:
        f.truncate(size)
        for off in range(0, size, 10 * MiB):
            f.seek(off)
            f.write(os.urandom(min(MiB, size - off)))


def timed(argv: list[str]) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed with exit status {proc.returncode}")
    return seconds, usage.ru_maxrss


def commands(src: str, dst: str) -> dict[str, list[str]]:
    """The copier runs in a child that imports only it: the ``sendense`` command itself
    loads every command group (the database, the tunnel) first, a fixed start-up cost
    that says nothing about copying."""
    child = "import sys; from bench.bench_copy import child; child(*sys.argv[1:])"
    return {
        "sendense": [sys.executable, "-c", child, src, dst],
        "nbdcopy": ["nbdcopy", "--target-is-zero", src, dst],
    }


def child(src: str, dst: str) -> None:
    """What ``sendense nbd copy --target-is-zero`` does; CopyOptions' defaults are the
    settings' defaults (4 connections, 64 requests of 256 KiB), as nbdcopy's are."""
    from engine.nbd.copier import CopyOptions, copy

    copy(src, dst, options=CopyOptions(target_is_zero=True))


def bench_case(
    name: str, source: Path, size: int, target_dir: Path, manager: ExportManager, repeat: int
) -> dict[str, Run]:
    from tests.nbd_servers import nbdkit

    best: dict[str, Run] = {}
    with nbdkit("file", f"file={source}") as src:
        for i in range(repeat):
            for tool in ("nbdcopy", "sendense") if i % 2 else ("sendense", "nbdcopy"):
                image = target_dir / f"bench-{tool}.qcow2"
                manager.create_image(image, size)
                export = manager.start(f"bench-{tool}", image)
                try:
                    seconds, rss = timed(commands(src, export.uri)[tool])
                finally:
                    manager.stop(f"bench-{tool}")
                    image.unlink()
                if tool not in best or seconds < best[tool].seconds:
                    best[tool] = Run(tool, seconds, rss)
    ours, ref = best["sendense"], best["nbdcopy"]
    print(
        f"{name:<28} sendense {ours.rate(size):8.0f} MiB/s  nbdcopy {ref.rate(size):8.0f} MiB/s"
        f"  ratio {ref.seconds / ours.seconds:5.2f}"
        f"  peak RSS sendense {ours.rss_kib >> 10:4d} MiB  nbdcopy {ref.rss_kib >> 10:4d} MiB",
        flush=True,
    )
    return best


def main() -> None:
    from engine.nbd.exports import ExportManager

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random-mib", type=int, default=2048)
    parser.add_argument("--sparse-mib", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=2, help="runs per tool; the best counts")
    parser.add_argument("--no-tmpfs", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-copy-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        shm = Path(tempfile.mkdtemp(prefix="bench-copy-", dir="/dev/shm"))
        try:
            manager = ExportManager(
                NbdSettings(port_min=10700, port_max=10720), tmp / "run", tmp / "logs"
            )
            sources = {
                "random": (tmp / "random.img", args.random_mib * MiB, make_random),
                "90% holes": (tmp / "sparse.img", args.sparse_mib * MiB, make_sparse),
            }
            for path, size, make in sources.values():
                make(path, size)
            targets = {"disk": tmp} if args.no_tmpfs else {"disk": tmp, "tmpfs": shm}
            print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; best of {args.repeat}")
            for label, (path, size, _) in sources.items():
                for where, folder in targets.items():
                    case = f"{label} {size // MiB} MiB -> {where}"
                    bench_case(case, path, size, folder, manager, args.repeat)
            manager.stop_all()
        finally:
            shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
