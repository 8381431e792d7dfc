"""The engine's inventory retrieval against a straightforward pyVmomi walk, same lab, same run.

A lab with 5,000 generated VMs (plus the seed site) is started in a private folder. The
engine reads the whole inventory (engine.vcenter.get_inventory: one paged property-
collector retrieval over a container view). The reference walks VMs the obvious way:
for each VM of a container view, ``vm.name``, ``vm.runtime.powerState``, ``vm.config``
(once; CPUs, memory, guest, CBT and ``hardware.device`` come from it), ``vm.rootSnapshot``
and the inventory path through ``vm.parent`` / ``.name`` up to the root. The walk is timed
over a sample of VMs and extrapolated to all of them (the print says so); both read the
same facts, and the sample is checked to agree with the engine's answer.

Goal: the engine at least 50x faster than the walk, and under 5 s for 5,000 VMs.

    .venv/bin/python -m bench.bench_inventory [--vms 5000] [--sample 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pyVmomi import vim

from engine.lab.launcher import start, stop
from engine.vcenter import VCenter, connect, get_inventory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def walk_vm(vc: VCenter, vm: Any) -> dict[str, Any]:
    """What a straightforward script does for one VM."""
    name = vm.name
    power = str(vm.runtime.powerState)
    config = vm.config
    disks = [
        (d.key, d.capacityInBytes)
        for d in config.hardware.device
        if isinstance(d, vim.vm.device.VirtualDisk)
    ]
    snapshots = bool(vm.rootSnapshot)
    names = [name]
    parent = vm.parent
    while parent is not None and parent != vc.content.rootFolder:
        names.append(parent.name)
        parent = parent.parent
    return {
        "path": "/" + "/".join(reversed(names)),
        "power": power,
        "cpus": config.hardware.numCPU,
        "memory_mb": config.hardware.memoryMB,
        "guest": config.guestFullName,
        "cbt": bool(config.changeTrackingEnabled),
        "snapshots": snapshots,
        "disks": sorted(disks),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=5000, help="generated VMs in the lab")
    ap.add_argument("--sample", type=int, default=200, help="VMs the walk visits")
    ap.add_argument("--rounds", type=int, default=3, help="engine retrievals (best is kept)")
    args = ap.parse_args()

    build_cache = Path(tempfile.gettempdir()) / f"sendense-lab-build-{os.getuid()}"
    with tempfile.TemporaryDirectory(prefix="bench-inventory-") as tmp:
        lab_dir = Path(tmp)
        t0 = time.perf_counter()
        info = start(lab_dir, port=free_port(), vms=args.vms, disk_mib=8, bin_dir=build_cache)
        print(f"lab with {args.vms} generated VMs up in {time.perf_counter() - t0:.1f} s")
        try:
            with connect(info.host, info.user, info.password, thumbprint=info.thumbprint) as vc:
                run(vc, args)
        finally:
            stop(lab_dir)


def run(vc: VCenter, args: argparse.Namespace) -> None:
    times = []
    inv = None
    for _ in range(args.rounds):
        t = time.perf_counter()
        inv = get_inventory(vc)
        times.append(time.perf_counter() - t)
    assert inv is not None
    engine_s = min(times)
    total = len(inv.vms)

    view = vc.content.viewManager.CreateContainerView(
        vc.content.rootFolder, [vim.VirtualMachine], True
    )
    try:
        sample = list(view.view)[: args.sample]
    finally:
        view.Destroy()
    t = time.perf_counter()
    walked = {vm._moId: walk_vm(vc, vm) for vm in sample}
    walk_sample_s = time.perf_counter() - t
    walk_s = walk_sample_s * total / len(sample)

    by_moref = {v.moref: v for v in inv.vms}
    for moref, w in walked.items():
        e = by_moref[moref]
        mine = {
            "path": e.path,
            "power": e.power_state,
            "cpus": e.cpus,
            "memory_mb": e.memory_mb,
            "guest": e.guest_os,
            "cbt": e.cbt_enabled,
            "snapshots": e.has_snapshots,
            "disks": sorted((d.key, d.capacity_bytes) for d in e.disks),
        }
        if mine != w:
            sys.exit(f"error: engine and walk disagree on {moref}: {mine} != {w}")

    ratio = walk_s / engine_s
    print(f"VMs in inventory:        {total} (+ {len(inv.entities)} other objects)")
    print(
        f"engine inventory:        {engine_s:.2f} s (best of {args.rounds}: "
        + ", ".join(f"{x:.2f}" for x in times)
        + ")"
    )
    print(
        f"pyVmomi walk:            {walk_sample_s:.2f} s for a sample of {len(sample)} VMs, "
        f"extrapolated to {total}: {walk_s:.1f} s"
    )
    print(f"ratio (walk / engine):   {ratio:.0f}x   (goal >= 50x)")
    print(f"engine under 5 s:        {'yes' if engine_s < 5 else 'NO'} ({engine_s:.2f} s)")
    print(f"sample agrees:           yes ({len(walked)} VMs compared field by field)")


if __name__ == "__main__":
    main()
