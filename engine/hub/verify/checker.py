"""Checking one point: ``qemu-img check`` on its files (what catches broken metadata),
then every chunk of every disk read back as qemu would read it and compared with its
table. Adjacent bad chunks merge into one ``DamagedRange``.

The reading goes straight to the chain's files where ``qemu-img map`` places the data
(engine/hub/verify/direct.py); only what the map cannot place is read through a private
qemu-nbd export (engine/hub/verify/over_nbd.py): through NBD the reading cost three
times what the files' own reading costs, and the hashing was never the cost.
"""

from __future__ import annotations

import threading
from pathlib import Path

from engine.contract.verify import DamagedRange
from engine.errors import SendenseError
from engine.hub.jobs.ending import qcow2_check
from engine.hub.verify.direct import read_direct
from engine.hub.verify.disk import DiskCheck
from engine.hub.verify.layout import map_disk
from engine.hub.verify.over_nbd import read_over_nbd


def check_structure(qemu_img: str, disk: DiskCheck) -> DamagedRange | None:
    """``qemu-img check`` on each file of the disk's chain; the first refusal, if any."""
    for path in disk.files:
        problem = qcow2_check(qemu_img, path)
        if problem:
            disk.state.check = f"{path.name}: {problem}"
            return DamagedRange(disk_key=disk.disk_key, reason=disk.state.check)
    disk.state.check = "ok"
    return None


def read_disk(
    qemu_img: str, qemu_nbd: str, runtime: Path, disk: DiskCheck, stop: threading.Event
) -> None:
    """Read the disk whole through its chain and compare each chunk (when it has a table);
    bad chunks go to ``disk.bad``. Raises SendenseError when it cannot read."""
    try:
        layout = map_disk(qemu_img, disk.qcow2)
    except SendenseError:  # qemu's own reading says what is wrong
        read_over_nbd(qemu_nbd, runtime, disk, None, stop)
        return
    disk.sized(layout.size)
    left = read_direct(layout, disk, stop)
    if left:
        read_over_nbd(qemu_nbd, runtime, disk, left, stop)


def damaged_ranges(disk: DiskCheck) -> list[DamagedRange]:
    """The disk's bad chunks as byte ranges, neighbours with the same reason merged."""
    if disk.table is None or not disk.bad:
        return []
    chunk, size = disk.table.header.chunk_size, disk.table.header.capacity
    out: list[DamagedRange] = []
    for i in sorted(disk.bad):
        start, end, reason = i * chunk, min(size, (i + 1) * chunk), disk.bad[i]
        last = out[-1] if out else None
        if (
            last is not None
            and last.reason == reason
            and (last.offset or 0) + (last.length or 0) == start
        ):
            last.length = end - (last.offset or 0)
        else:
            out.append(
                DamagedRange(
                    disk_key=disk.disk_key, offset=start, length=end - start, reason=reason
                )
            )
    return out
