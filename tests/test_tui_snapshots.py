"""SVG snapshots of every screen at 80x24 and 120x40, with clocks and rates frozen.

The data comes from the stand-in hub (tests/tui_standin_hub.py), served in-process over
httpx's ASGI transport: a real FastAPI app, but no port and no clock, so every run
draws the same picture; on a fleet's data (policies, their runs, a queue, three nodes)
also the policies, one policy's panes and form, queued jobs and the nodes. Flows against
the real hub live in test_tui_pilot.py.
Update after an intended change: ``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from textual.pilot import Pilot

from engine.contract.status import JobStatus
from engine.hub_client import HubClient
from sendense_tui.app import SendenseApp
from sendense_tui.config import ConsoleConfig
from tests.tui_standin_hub import TOKEN, MiB, StandinState, build_app, lab_inventory
from tests.tui_standin_policies import fleet

SIZES = [(80, 24), (120, 40)]
FROZEN_CLOCK = 1_790_000_000.0


def fleet_state() -> StandinState:
    """The lab's inventory with three policies, their runs, a queue and three nodes, one
    of them down (``tui_standin_policies.fleet``)."""
    state = StandinState(lab_inventory())
    fleet(state.policies)
    return state


def frozen_app(tmp_path: Path, state: StandinState | None = None) -> SendenseApp:
    """The console on the stand-in's data (``state``, or the lab's inventory alone), with
    pgtest1 backing up and DC0_VM1 backed up."""
    state = state or StandinState(lab_inventory())
    pg = state.vm("pgtest1")
    other = state.vm("DC0_VM1")
    assert pg is not None and other is not None
    state.add_job(other, JobStatus.COMPLETED, done_fraction=1.0, job_id="backup-DC0_VM1-1790000000")
    state.add_job(pg, done_fraction=0.4, rate=48 * MiB, job_id="backup-pgtest1-1790000100")
    config = ConsoleConfig(
        hub_url="http://hub.test",
        token=TOKEN,
        home=tmp_path,
        explicit=True,
        keymap_file=Path("/nonexistent/sendense/keymap.toml"),  # shown in help: fixed
    )
    client = HubClient(config.hub_url, TOKEN, transport=httpx.ASGITransport(build_app(state)))
    return SendenseApp(config, clock=lambda: FROZEN_CLOCK, live=False, client=client)


STATUS_WAIT_STEPS = 600  # x 0.05 s: a loaded machine may take a while to answer


async def settle(pilot: Pilot[None]) -> None:
    """Wait until the header's first status poll answered (the stand-in hub is up: on a
    loaded machine the poll's worker may not even have started yet), then until every
    hub request has been answered and drawn."""
    app = pilot.app
    for _ in range(STATUS_WAIT_STEPS):
        if app.state.status.hub_ok:
            break
        await pilot.pause(0.05)
    else:  # never answered: ask once more here, so the test fails with the reason
        await app.state.client.health()
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


def steps(*keys: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)

    return run


SCREENS = {
    "inventory": steps("down", "enter", "down"),
    "backup_modal": steps("down", "enter", "down", "b"),
    "jobs": steps("2"),
    "repositories": steps("3"),
    "vcenters": steps("4"),
    "nodes": steps("5"),
    "help": steps("question_mark"),
}


# On the fleet's data: policies, a queue, several nodes.
FLEET_SCREENS = {
    "policies": steps("8"),
    "policy": steps("8", "enter"),
    "policy_vms_now": steps("8", "enter", "p"),
    "policy_retention": steps("8", "enter", "p", "p"),
    "policy_edit": steps("8", "e"),
    "jobs_queued": steps("2", "j", "j"),
    "nodes_fleet": steps("5"),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", SCREENS)
def test_screen_snapshot(snap_compare, tmp_path: Path, screen: str, size: tuple[int, int]) -> None:
    assert snap_compare(frozen_app(tmp_path), terminal_size=size, run_before=SCREENS[screen])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", FLEET_SCREENS)
def test_fleet_snapshot(snap_compare, tmp_path: Path, screen: str, size: tuple[int, int]) -> None:
    app = frozen_app(tmp_path, fleet_state())
    assert snap_compare(app, terminal_size=size, run_before=FLEET_SCREENS[screen])
