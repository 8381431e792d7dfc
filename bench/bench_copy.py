"""``sendense nbd copy`` against libnbd's own ``nbdcopy``, same run, same source.

Sources (nbdkit's file plugin on a unix socket): a file of random data, and a file that
is 90 % holes. Targets: a fresh qcow2 per run, exported by the product's own export
manager (qemu-nbd), on disk and on tmpfs (/dev/shm, to take the disk out). Each copy
runs as a child process; its peak resident memory comes from ``wait4``'s rusage.

Three tools, interleaved round by round (the order turns each round, so a machine busy
with other work penalises none of them more than the others):

- ``nbdcopy --target-is-zero`` at its own defaults (on this machine: connections =
  min(4, CPUs), 64 requests of 256 KiB each), or with ``--match`` at ours (as many
  threads as connections, since nbdcopy opens no more connections than threads);
- ``sendense nbd copy --target-is-zero --progress json``: the command as shipped, with
  the settings' defaults (``[copier]``), start-up included;
- ``copier``: the same copy (the settings' defaults, progress reported, chunk digests taken
  as a backup takes them) in a child that imports only the copier: the engine without
  the command's start-up.

Printed per case: throughputs of the best run, the ratio nbdcopy time / our time for
the best runs and for the median runs, and the largest peak RSS.

    .venv/bin/python -m bench.bench_copy                       # 2 GiB random, 8 GiB sparse
    .venv/bin/python -m bench.bench_copy --random-mib 256 --sparse-mib 1024 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import CopySettings
    from engine.hub.exports.manager import ExportManager

MiB = 1024 * 1024
CHUNK_SIZE = 64 * 1024  # copier.chunk_size


@dataclass
class Runs:
    """Every run of one tool in one case."""

    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


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


def commands(src: str, dst: str, match: CopySettings | None) -> dict[str, list[str]]:
    nbdcopy = ["nbdcopy", "--target-is-zero"]
    if match is not None:
        # nbdcopy opens at most one connection per thread, one thread per CPU by default.
        nbdcopy += [
            f"--threads={match.connections}",
            f"--connections={match.connections}",
            f"--requests={match.requests_in_flight}",
            f"--request-size={match.request_size}",
        ]
    child = "import sys; from bench.bench_copy import child; child(*sys.argv[1:])"
    sendense = str(Path(sys.executable).with_name("sendense"))
    return {
        "nbdcopy": [*nbdcopy, src, dst],
        "sendense": [sendense, "nbd", "copy", "--target-is-zero", "--progress", "json", src, dst],
        "copier": [sys.executable, "-c", child, src, dst],
    }


def child(src: str, dst: str) -> None:
    """The copy ``sendense nbd copy --target-is-zero`` makes, progress reported, without
    the command's start-up: ``CopyOptions``' defaults are the settings' defaults (``main``
    checks), so the child need not load the settings (pydantic) at all."""
    from engine.node.copier import CopyOptions, copy

    # A backup's copy: chunk digests taken (``main`` checks the size is the settings').
    copy(
        src,
        dst,
        options=CopyOptions(target_is_zero=True, chunk_size=CHUNK_SIZE),
        progress=lambda p: None,
        digests=lambda offset, digests: None,
    )


def bench_case(
    name: str,
    source: Path,
    size: int,
    target_dir: Path,
    manager: ExportManager,
    repeat: int,
    match: CopySettings | None,
) -> dict[str, Runs]:
    from tests.nbd_servers import nbdkit

    tools = ["nbdcopy", "sendense", "copier"]
    runs = {tool: Runs() for tool in tools}
    with nbdkit("file", f"file={source}") as src:
        for i in range(repeat):
            for tool in tools[i % 3 :] + tools[: i % 3]:
                image = target_dir / f"bench-{tool}.qcow2"
                manager.create_image(image, size)
                export = manager.start(f"bench-{tool}", image)
                try:
                    seconds, rss = timed(commands(src, export.uri, match)[tool])
                finally:
                    manager.stop(f"bench-{tool}")
                    image.unlink()
                runs[tool].seconds.append(seconds)
                runs[tool].rss_kib.append(rss)
    ref = runs["nbdcopy"]
    parts = [f"{name:<26}", f"nbdcopy {size / ref.best / MiB:5.0f} MiB/s"]
    for tool in tools[1:]:
        ours = runs[tool]
        parts.append(
            f"{tool} {size / ours.best / MiB:5.0f} MiB/s ratio best {ref.best / ours.best:4.2f}"
            f" median {ref.median / ours.median:4.2f}"
        )
    parts.append("peak RSS " + " ".join(f"{t} {max(runs[t].rss_kib) >> 10} MiB" for t in tools))
    print(" | ".join(parts), flush=True)
    return runs


def main() -> None:
    from engine.config import CopySettings, NbdSettings
    from engine.hub.exports.manager import ExportManager
    from engine.node.copier import CopyOptions

    if CopyOptions.from_settings(CopySettings()) != CopyOptions():
        raise SystemExit("CopyOptions' defaults differ from CopySettings': the copier row lies")
    if CopySettings().chunk_size != CHUNK_SIZE:
        raise SystemExit("CHUNK_SIZE differs from CopySettings.chunk_size: the copier row lies")

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random-mib", type=int, default=2048)
    parser.add_argument("--sparse-mib", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool and case")
    parser.add_argument("--no-tmpfs", action="store_true")
    parser.add_argument(
        "--match", action="store_true", help="run nbdcopy with our connections and requests"
    )
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
            ours = CopySettings()
            print(
                f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.repeat} rounds; "
                f"sendense: {ours.connections} connections x {ours.requests_in_flight} requests"
                f" x {ours.request_size >> 10} KiB; nbdcopy: "
                + ("the same" if args.match else "its defaults (4 connections at most one per"
                   " CPU, 64 requests x 256 KiB)")
            )  # fmt: skip
            for label, (path, size, _) in sources.items():
                for where, folder in targets.items():
                    case = f"{label} {size // MiB} MiB -> {where}"
                    match = ours if args.match else None
                    bench_case(case, path, size, folder, manager, args.repeat, match)
            for export in manager.list():
                manager.stop(export.name)
        finally:
            shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
