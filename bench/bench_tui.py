"""The console's costs: CPU while a job with 8 disks streams progress, and the time from
opening to a full inventory tree on a 5,000-VM lab.

    .venv/bin/python -m bench.bench_tui [--hz 50] [--seconds 10] [--vms 5000] [--skip-tree]

1. CPU: the console (headless, in this process) shows the jobs screen of a job with 8
   disks while a stand-in hub in its own process streams disk events at ``--hz`` steps
   a second (8 events each). Reference, same run: the same console with no events.
   Goal: under 15 % of one core while streaming.
2. Tree: ``sendense lab up --vms N``, a real hub and node on a private data folder and
   free ports; time from opening the console to every node of the tree built. Reference,
   same run: the hub's own answer to GET /vcenters/1/inventory, read into the contract's
   model by the hub client (what the console must at least wait for). Measured with the
   hub's inventory cache cold (the hub reads vCenter: the engine's inventory speed, see
   bench_inventory) and warm. Goal: under 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.hub_client import HubClient
from sendense_tui.app import SendenseApp
from sendense_tui.config import ConsoleConfig
from sendense_tui.launcher import hub_answers
from sendense_tui.screens.inventory import InventoryScreen
from sendense_tui.screenshots import console_config, console_for, lab_services
from tests.tui_standin_hub import TOKEN

CPU_GOAL, TREE_GOAL = 15.0, 3.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def console_cpu(url: str, seconds: float) -> tuple[float, int]:
    """% of one core the console used on the jobs screen, and the events it took in."""
    config = ConsoleConfig(
        hub_url=url,
        token=TOKEN,
        home=Path(tempfile.gettempdir()),
        explicit=True,
        keymap_file=Path("/nonexistent"),
    )
    app = SendenseApp(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        store = app.state.store
        while "backup-bench-1" not in store.jobs:
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # the stream is up and the screen drawn once
        version, cpu, wall = store.version, time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        used = time.process_time() - cpu
        elapsed = time.monotonic() - wall
        return 100.0 * used / elapsed, store.version - version


def measure_cpu(hz: float, seconds: float) -> tuple[float, int]:
    port = free_port()
    source = subprocess.Popen(
        [sys.executable, "-m", "tests.tui_standin_hub", "--port", str(port), "--hz", str(hz)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not hub_answers(url):
            if time.monotonic() > deadline or source.poll() is not None:
                raise RuntimeError("the stand-in event source did not start")
            time.sleep(0.05)
        return asyncio.run(console_cpu(url, seconds))
    finally:
        source.terminate()
        source.wait(10)


async def open_full_tree(app: SendenseApp) -> tuple[float, float]:
    """Seconds from opening to the first level of the tree (the inventory is in, lazy
    nodes shown), and to every node built (``e``: open all)."""
    started = time.monotonic()
    async with app.run_test(size=(120, 40)) as pilot:
        while not app.state.inventories:
            await asyncio.sleep(0.01)
        await pilot.pause()
        first = time.monotonic() - started
        screen = app.screen
        assert isinstance(screen, InventoryScreen)
        await pilot.press("e")
        await pilot.pause()
        full = time.monotonic() - started
        lines = screen.vm_tree.last_line + 1
    vms = sum(len(inv.vms) for inv in app.state.inventories.values())
    print(f"  tree: {lines} lines, {vms} VMs; first level after {first:.2f} s")
    return first, full


def measure_tree(vms: int) -> tuple[float, float, float]:
    """Seconds to a full tree with the hub's inventory cache cold (the hub reads vCenter),
    then warm, and the hub's warm answer alone."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp,
        lab_services(Path(tmp), disk_mib=1, vms=vms) as env,
    ):
        _, cold = asyncio.run(open_full_tree(console_for(env)))
        _, warm = asyncio.run(open_full_tree(console_for(env)))
        return cold, warm, asyncio.run(inventory_seconds(console_config(env)))


async def inventory_seconds(config: ConsoleConfig) -> float:
    """Seconds for the hub client alone to get vCenter 1's (warm) inventory."""
    async with HubClient(config.hub_url, config.token, timeout=300) as hub:
        started = time.monotonic()
        await hub.inventory(1)
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description="console CPU and tree benchmarks")
    parser.add_argument("--hz", type=float, default=50.0, help="steps a second (8 events each)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--vms", type=int, default=5000)
    parser.add_argument("--skip-tree", action="store_true")
    args = parser.parse_args()

    idle, _ = measure_cpu(0, args.seconds)
    busy, events = measure_cpu(args.hz, args.seconds)
    print(
        f"console CPU, jobs screen, 8 disks, {events / args.seconds:.0f} events/s: "
        f"{busy:.1f} % of one core (goal < {CPU_GOAL:.0f} %): "
        f"{'ok' if busy < CPU_GOAL else 'MISSED'}"
    )
    print(f"  reference, no events: {idle:.1f} %; ratio streaming/idle {busy / max(idle, 0.1):.2f}")

    if not args.skip_tree:
        cold, warm, raw = measure_tree(args.vms)
        for label, seconds in (("hub cache cold", cold), ("hub cache warm", warm)):
            verdict = "ok" if seconds < TREE_GOAL else "MISSED"
            print(
                f"open to full tree, {args.vms}-VM lab, {label}: {seconds:.2f} s "
                f"(goal < {TREE_GOAL:.0f} s): {verdict}"
            )
        print(
            f"  reference, the hub's warm inventory answer alone: {raw:.2f} s; "
            f"ratio console(warm)/hub {warm / max(raw, 0.001):.2f}"
        )


if __name__ == "__main__":
    main()
