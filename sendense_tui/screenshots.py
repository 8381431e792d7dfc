"""Make the console's SVG screenshots from the lab: ``python -m sendense_tui.screenshots``.

Everything runs on a private data folder and free ports: ``sendense lab up`` (which
registers the lab's vCenter, a repository and pgtest1), then hub and node as the console
itself starts them (``sendense run --no-console --no-lab``); the console is driven
headless with Textual's pilot. A backup is throttled (the hub's ``max_rate_mib``) so
that it is still running, with some history, when its picture is taken; so is the VM
restore behind the restore job's picture. fstest1, the lab's VM with real file
systems, is backed up last for the file browser's picture and a verified point's.
Everything started is stopped at the end (``sendense stop``, ``sendense lab down``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Static

from engine.contract.hub import BackupRequest, VMIn
from engine.contract.restore import VMRestoreRequest
from engine.contract.status import BackupType, JobStatus, Verification
from engine.hub_client import HubClient
from sendense_tui.app import SendenseApp
from sendense_tui.config import ConsoleConfig
from sendense_tui.messages import OpenJob, OpenRestore, OpenRestorePoints
from sendense_tui.screens.backup import WAITING, BackupModal
from sendense_tui.screens.files import FilesScreen
from sendense_tui.screens.restore_modals import ExportModal
from sendense_tui.screens.restore_point import RestorePointScreen
from sendense_tui.screens.restore_points import RestorePointsScreen
from sendense_tui.widgets.verification import VerificationLine

SENDENSE = str(Path(sys.executable).parent / "sendense")
WIDE, SMALL = (120, 40), (80, 24)
RUNNING_SECONDS = 12.0  # of live rates behind the "job running" picture


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lab_env(home: Path) -> dict[str, str]:
    hub, node = _free_port(), _free_port()
    nbd = 20000 + hub % 10000
    return {
        **os.environ,
        "SENDENSE_HOME": str(home),
        "SENDENSE_CONFIG": "",
        "SENDENSE_HUB__PORT": str(hub),
        "SENDENSE_NODE__PORT": str(node),
        "SENDENSE_NODE__HUB_URL": f"http://127.0.0.1:{hub}",
        "SENDENSE_NBD__PORT_MIN": str(nbd),
        "SENDENSE_NBD__PORT_MAX": str(nbd + 20),
        "SENDENSE_LAB__PORT": str(_free_port()),
    }


@contextmanager
def lab_services(home: Path, disk_mib: int, vms: int = 4) -> Iterator[dict[str, str]]:
    """Lab, hub and node on ``home``; stopped whatever happens."""
    env = lab_env(home)

    def sendense(*args: str, check: bool = True) -> None:
        subprocess.run([SENDENSE, *args], env=env, check=check, stdout=subprocess.DEVNULL)

    sendense("lab", "up", "--disk-mib", str(disk_mib), "--vms", str(vms))
    try:
        sendense("run", "--no-console", "--no-lab")
        yield env
    finally:
        sendense("stop", "--force", check=False)
        sendense("lab", "down", check=False)


def console_config(env: dict[str, str]) -> ConsoleConfig:
    home = Path(env["SENDENSE_HOME"])
    return ConsoleConfig(
        hub_url=f"http://127.0.0.1:{env['SENDENSE_HUB__PORT']}",
        token=(home / "api-token").read_text().strip(),
        home=home,
        explicit=True,
        keymap_file=home / "keymap.toml",
    )


def console_for(env: dict[str, str]) -> SendenseApp:
    return SendenseApp(console_config(env))


async def until(pilot: Pilot[None], check: Callable[[], Any], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {check}")
        await pilot.pause(0.1)


async def start_backup(
    hub: HubClient,
    vm: str,
    max_rate_mib: float | None = None,
    kind: BackupType = BackupType.FULL,
) -> str:
    request = BackupRequest(
        vm_name=vm, repository_id=1, max_rate_mib=max_rate_mib, backup_type=kind
    )
    return (await hub.start_backup(request)).backup_id


async def shoot(env: dict[str, str], out: Path) -> list[Path]:
    config = console_config(env)
    async with HubClient(config.hub_url, config.token) as hub:
        return await _shoot(env, hub, out)


async def _shoot(env: dict[str, str], hub: HubClient, out: Path) -> list[Path]:
    made: list[Path] = []

    def save(app: SendenseApp, name: str) -> None:
        made.append(Path(app.save_screenshot(filename=f"{name}.svg", path=str(out))))

    async def inventory(app: SendenseApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.state.inventories)
        await pilot.press("j", "enter", "j", "j")  # DatabanxDC, open it, Prod, pgtest1
        await pilot.pause(0.3)

    app = console_for(env)
    async with app.run_test(size=SMALL) as pilot:
        await inventory(app, pilot)
        save(app, "inventory-80x24")

    app = console_for(env)
    async with app.run_test(size=WIDE) as pilot:
        await inventory(app, pilot)
        await pilot.press("space", "k")
        save(app, "inventory")
        await pilot.press("question_mark")
        await pilot.pause(0.3)
        save(app, "help")
        await pilot.press("escape")

        jobs = app.state.store.jobs
        backup_id = await start_backup(hub, "pgtest1", max_rate_mib=4)
        app.post_message(OpenJob(backup_id))
        started = time.monotonic()
        await until(pilot, lambda: backup_id in jobs)
        await until(pilot, lambda: time.monotonic() - started > RUNNING_SECONDS)
        save(app, "job-running")
        await until(pilot, lambda: jobs[backup_id].status is not JobStatus.RUNNING)
        await hub.add_vm(VMIn(vcenter_id=1, path="/DatabanxDC/vm/Prod/Web Tier/web 01"))
        second = await start_backup(hub, "web 01")
        await until(pilot, lambda: second in jobs and jobs[second].status is JobStatus.COMPLETED)
        await pilot.pause(1.0)
        save(app, "job-history")
        await _shoot_restores(app, pilot, hub, save)
        await _shoot_files(app, pilot, hub, save)
        await _shoot_incremental(env, app, pilot, hub, save)
    return made


async def _shoot_incremental(
    env: dict[str, str],
    app: SendenseApp,
    pilot: Pilot[None],
    hub: HubClient,
    save: Callable[[SendenseApp, str], None],
) -> None:
    """Once pgtest1 has a point: the backup modal's preview (pgtest1 incremental on it,
    web 01 full and why), then a throttled incremental of 24 MiB written by the guest."""
    await pilot.press("1")
    inventory = app.state.inventories[1]
    chosen = [vm for vm in inventory.vms if vm.name in ("pgtest1", "web 01")]
    app.push_screen(BackupModal(app.state, [(1, vm) for vm in chosen]))
    await until(
        pilot,
        lambda: all(
            WAITING not in str(s.render()) for s in app.screen.query(".preview").results(Static)
        ),
    )
    await pilot.pause(0.3)
    save(app, "backup-modal")
    await pilot.press("escape")
    subprocess.run(
        [
            SENDENSE,
            "lab",
            "write",
            "pgtest1",
            "--disk",
            "2000",
            "--offset",
            str(8 * 2**20),
            "--length",
            str(24 * 2**20),
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    jobs = app.state.store.jobs
    backup_id = await start_backup(hub, "pgtest1", max_rate_mib=2, kind=BackupType.AUTO)
    app.post_message(OpenJob(backup_id))
    started = time.monotonic()
    await until(pilot, lambda: backup_id in jobs and jobs[backup_id].bytes_done > 0)
    await until(pilot, lambda: time.monotonic() - started > RUNNING_SECONDS / 2)
    save(app, "job-incremental")
    await until(pilot, lambda: jobs[backup_id].finished)


async def _shoot_restores(
    app: SendenseApp, pilot: Pilot[None], hub: HubClient, save: Callable[[SendenseApp, str], None]
) -> None:
    """The points of both backups above, pgtest1's point with a live export, the VM
    restore modal with its overwrite asked, and a VM restore running."""
    await pilot.press("6")
    screen = app.screen
    await until(pilot, lambda: isinstance(screen, RestorePointsScreen) and len(screen.points) == 2)
    await pilot.pause(0.3)
    save(app, "restore-points")
    await pilot.press("G", "enter")  # the oldest: pgtest1's
    await until(pilot, lambda: isinstance(app.screen, RestorePointScreen))
    await pilot.pause(0.5)
    await pilot.press("x")
    await until(pilot, lambda: isinstance(app.screen, ExportModal))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ExportModal) and app.screen.export)
    save(app, "restore-export")
    await pilot.press("escape")
    point = app.screen
    assert isinstance(point, RestorePointScreen)
    await until(pilot, lambda: point.exports)
    await pilot.pause(0.3)
    save(app, "restore-point")
    await pilot.press("v", "tab", "tab", "tab", "tab", "tab", "space", "tab", *"pgtest1")
    await pilot.pause(0.3)
    save(app, "restore-vm-modal")
    await pilot.press("escape")
    request = VMRestoreRequest(
        point_id=point.point.point_id, name="pgtest1-restored", max_rate_mib=2
    )
    restore_id = (await hub.restore_vm(request)).restore_id
    app.post_message(OpenRestore(restore_id))
    restores = app.state.store.restores
    started = time.monotonic()
    await until(pilot, lambda: restore_id in restores and restores[restore_id].bytes_done)
    await until(pilot, lambda: time.monotonic() - started > RUNNING_SECONDS)
    save(app, "restore-job")
    await until(pilot, lambda: restores[restore_id].finished)
    for export in point.exports:
        await hub.unexport(export.name)


async def _shoot_files(
    app: SendenseApp, pilot: Pilot[None], hub: HubClient, save: Callable[[SendenseApp, str], None]
) -> None:
    """fstest1 (the lab's VM with real file systems) backed up; its ext4's root in the
    file browser with two files marked; then the point verified."""
    await hub.add_vm(VMIn(vcenter_id=1, path="/DatabanxDC/vm/fstest1"))
    backup_id = await start_backup(hub, "fstest1")
    jobs = app.state.store.jobs
    await until(pilot, lambda: backup_id in jobs and jobs[backup_id].status is JobStatus.COMPLETED)
    app.post_message(OpenRestorePoints("fstest1"))
    await until(pilot, lambda: isinstance(app.screen, RestorePointsScreen) and app.screen.points)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, RestorePointScreen))
    point = app.screen
    assert isinstance(point, RestorePointScreen)
    await until(pilot, lambda: point.point.disks)
    await pilot.press("b")  # disk 2000: GPT, ext4 and NTFS
    await until(pilot, lambda: isinstance(app.screen, FilesScreen) and app.screen.partitions)
    files = app.screen
    assert isinstance(files, FilesScreen)
    await pilot.press("enter")
    await until(pilot, lambda: files.entries)
    for name in ("hello.txt", "name with spaces.txt"):
        files.table.move_cursor(row=[e.name for e in files.entries].index(name))
        await pilot.press("space")
    await pilot.pause(0.3)
    save(app, "restore-files")
    await pilot.press("escape")
    await until(pilot, lambda: app.screen is point)
    await pilot.press("V")
    line = point.query_one("#point-verify", VerificationLine)
    await until(pilot, lambda: line.report is not None and line.report.finished_at is not None)
    await until(pilot, lambda: point.point.verification is not Verification.UNVERIFIED)
    await pilot.pause(0.3)
    save(app, "restore-verified")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--disk-mib", type=int, default=96, help="pgtest1's first disk")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="sendense-shots-") as tmp,
        lab_services(Path(tmp), args.disk_mib) as env,
    ):
        for path in asyncio.run(shoot(env, args.out)):
            print(path)


if __name__ == "__main__":
    main()
