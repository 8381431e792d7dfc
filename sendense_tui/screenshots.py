"""Make the console's SVG screenshots from the lab: ``python -m sendense_tui.screenshots``.

Everything runs on a private data folder and free ports: ``sendense lab up`` (which
registers the lab's vCenter, a repository and pgtest1), ``sendense hub`` and
``sendense node``; the console is driven headless with Textual's pilot. A backup is
throttled (the hub's ``max_rate_mib``) so that it is still running, with some history,
when its picture is taken. All started processes are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from textual.pilot import Pilot

from sendense_tui.app import SendenseApp
from sendense_tui.config import ConsoleConfig
from sendense_tui.launcher import hub_answers

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
    """Lab, hub and node on ``home``; stopped (by their pids) whatever happens."""
    env = lab_env(home)
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    subprocess.run(
        [SENDENSE, "lab", "up", "--disk-mib", str(disk_mib), "--vms", str(vms)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        for service in ("hub", "node"):
            with (logs / f"{service}.log").open("ab") as log:
                procs.append(
                    subprocess.Popen(
                        [SENDENSE, service],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        hub_url = f"http://127.0.0.1:{env['SENDENSE_HUB__PORT']}"
        deadline = time.monotonic() + 60
        while not hub_answers(hub_url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the hub did not start; see {logs / 'hub.log'}")
            time.sleep(0.1)
        yield env
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        subprocess.run([SENDENSE, "lab", "down"], env=env, check=False, stdout=subprocess.DEVNULL)


def console_for(env: dict[str, str]) -> SendenseApp:
    home = Path(env["SENDENSE_HOME"])
    config = ConsoleConfig(
        hub_url=f"http://127.0.0.1:{env['SENDENSE_HUB__PORT']}",
        token=(home / "api-token").read_text().strip(),
        home=home,
        explicit=True,
        keymap_file=home / "keymap.toml",
    )
    return SendenseApp(config)


async def until(pilot: Pilot[None], check: Callable[[], Any], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {check}")
        await pilot.pause(0.1)


def hub_post(env: dict[str, str], path: str, body: dict[str, Any]) -> dict[str, Any]:
    token = (Path(env["SENDENSE_HOME"]) / "api-token").read_text().strip()
    answer = httpx.post(
        f"http://127.0.0.1:{env['SENDENSE_HUB__PORT']}/api/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def start_backup(env: dict[str, str], vm: str, max_rate_mib: float | None = None) -> str:
    body: dict[str, Any] = {"vm_name": vm, "repository_id": 1, "backup_type": "full"}
    if max_rate_mib:
        body["max_rate_mib"] = max_rate_mib
    return str(hub_post(env, "/backups", body)["backup_id"])


async def shoot(env: dict[str, str], out: Path) -> list[Path]:
    made: list[Path] = []

    def save(app: SendenseApp, name: str) -> None:
        made.append(Path(app.save_screenshot(filename=f"{name}.svg", path=str(out))))

    async def inventory(app: SendenseApp, pilot: Pilot[None]) -> None:
        await until(pilot, lambda: app.inventories)
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
        await pilot.press("b")
        await pilot.pause(0.5)
        save(app, "backup-modal")
        await pilot.press("escape", "question_mark")
        await pilot.pause(0.3)
        save(app, "help")
        await pilot.press("escape")

        backup_id = start_backup(env, "pgtest1", max_rate_mib=4)
        app.open_job(backup_id)
        started = time.monotonic()
        await until(pilot, lambda: backup_id in app.store.jobs)
        await until(pilot, lambda: time.monotonic() - started > RUNNING_SECONDS)
        save(app, "job-running")
        await until(pilot, lambda: app.store.jobs[backup_id]["status"] != "running")
        hub_post(env, "/vms", {"vcenter_id": 1, "path": "/DatabanxDC/vm/Prod/Web Tier/web 01"})
        second = start_backup(env, "web 01")
        await until(pilot, lambda: app.store.jobs.get(second, {}).get("status") == "completed")
        await pilot.pause(1.0)
        save(app, "job-history")
    return made


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
