"""Single files out of a point against raw reads of the same point, same run.

The point: a qcow2 of an ext4 image (``mke2fs -d``, no mounting) holding one file of
``--file-mib`` and a folder of ``--files`` empty files. Served by a private qemu-nbd as
the hub serves a point; the page cache stays warm (both sides read the same bytes).

- ``extract``: the file's bytes through the hub's path (the session's reader and block
  cache, the ext4 parser, the streaming thread and its bounded queue), against ``raw``:
  the same number of bytes read straight from the export with libnbd ``pread`` in 8 MiB
  requests. Ratio raw time / extract time; the goal is ≥ 0.5.
- ``list``: the folder's listing (names, kinds, sizes, modes, times) through the hub's
  path on a freshly opened file system, against ``debugfs -R "ls -l /dir"`` on the
  image. Ratio debugfs time / ours: above 1 is ours faster.

    .venv/bin/python -m bench.bench_files
    .venv/bin/python -m bench.bench_files --file-mib 100 --files 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import nbd

from engine.config import get_settings
from engine.contract.files import FileQuery
from engine.contract.restore import RestorePoint, RestorePointDisk
from engine.contract.status import BackupType
from engine.hub.files.service import FileService
from engine.hub.restores.reading import PrivateExport

MiB = 1024 * 1024
RAW_REQUEST = 8 * MiB


def build(folder: Path, file_mib: int, files: int) -> tuple[Path, Path]:
    tree = folder / "tree"
    (tree / "dir").mkdir(parents=True)
    with (tree / "big.bin").open("wb") as f:
        block = bytes(range(256)) * 4096
        for _ in range(file_mib):
            f.write(block)
    for n in range(files):
        (tree / "dir" / f"file-{n:05d}.txt").touch()
    image = folder / "ext4.img"
    size = file_mib + 64 + files // 100
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-N", str(files + 1000), "-d", str(tree),
         str(image), f"{size}M"],
        check=True,
    )  # fmt: skip
    qcow2 = folder / "point.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(image), str(qcow2)], check=True)
    return image, qcow2


def service_for(qcow2: Path) -> FileService:
    point = RestorePoint(
        point_id="bench",
        vm_name="bench",
        vm_context_id="bench",
        vm_path=None,
        backup_type=BackupType.FULL,
        snapshot_kind=None,
        created_at=None,
        completed_at=None,
        repository_id=0,
        node_id=None,
        disks=[RestorePointDisk(disk_key=1, capacity_bytes=0, qcow2_path=str(qcow2))],
    )
    return FileService(get_settings(), lambda _id: point)


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def extract(svc: FileService) -> int:
    async def run() -> int:
        _, _, stream = svc.content("bench", 1, FileQuery(path="/big.bin"), False)
        return sum([len(chunk) async for chunk in stream])

    return asyncio.run(run())


def raw(uri: str, length: int) -> int:
    h = nbd.NBD()
    h.connect_uri(uri)
    done = 0
    while done < length:
        done += len(h.pread(min(RAW_REQUEST, length - done), done))
    h.shutdown()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file-mib", type=int, default=100)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        folder = Path(tmp)
        image, qcow2 = build(folder, args.file_mib, args.files)
        settings = get_settings()
        times: dict[str, list[float]] = {"extract": [], "raw": [], "list": [], "debugfs": []}
        svc = service_for(qcow2)
        try:
            with PrivateExport(settings.nbd.qemu_nbd, qcow2, settings.run / "bench") as export:
                for _ in range(args.repeat):
                    times["extract"].append(timed(lambda: extract(svc)))
                    times["raw"].append(timed(lambda: raw(export.uri, args.file_mib * MiB)))
        finally:
            svc.close_all()
        for _ in range(args.repeat):
            fresh = service_for(qcow2)
            try:
                fresh.partitions("bench", 1)  # qemu-nbd up, the volume found
                times["list"].append(
                    timed(partial(fresh.listing, "bench", 1, FileQuery(path="/dir")))
                )
            finally:
                fresh.close_all()
            debugfs = ["debugfs", "-R", "ls -l /dir", str(image)]
            times["debugfs"].append(timed(partial(subprocess.run, debugfs, capture_output=True)))
    best = {k: min(v) for k, v in times.items()}
    for name, values in times.items():
        print(f"{name:8s} best {min(values):7.3f}s  median {statistics.median(values):7.3f}s")
    mib_s = args.file_mib / best["extract"]
    print(f"extract {args.file_mib} MiB: {mib_s:.0f} MiB/s; raw/extract ratio "
          f"{best['raw'] / best['extract']:.2f} (goal >= 0.5)")  # fmt: skip
    print(f"list {args.files} files: debugfs/ours ratio {best['debugfs'] / best['list']:.2f}")
    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
