"""The console's restore screens: restore points, one point and its ways back, restore jobs.

Three kinds of test, as for the rest of the console:
- pilot flows against the real hub and node on the lab, from a real completed backup
  (``point`` in tests/fixtures/points.py): open the points from the VM pane, export a
  disk and read it through the URI shown, restore a disk into a file and see the job end,
  restore the whole VM (on an 80x24 terminal), cancel a throttled restore on its key;
- SVG snapshots of every new screen at 80x24 and 120x40 from the stand-in hub
  (tests/tui_standin_hub.py), clocks and rates frozen; update after an intended change
  with ``pytest tests/test_tui_restore.py -k snapshot --snapshot-update``;
- keys whose answer needs no real hub (the overwrite's typed name, a refusal in one
  line, the live store's restores), against the stand-in in-process.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import httpx
import pytest
from textual.widgets import DataTable, Input, Static

from engine.contract.restore import (
    DiskRestoreRequest,
    ExportRequest,
    RestoreJob,
    RestoreJobDisk,
)
from engine.contract.status import DiskStatus, JobStatus, RestoreKind, Verification
from engine.errors import VMNotFound
from engine.hub_client import HubClient
from engine.vcenter import destroy_vm, find_vm, vm_info
from sendense_tui.app import SendenseApp
from sendense_tui.config import ConsoleConfig
from sendense_tui.live import LiveStore
from sendense_tui.screens.inventory import InventoryScreen
from sendense_tui.screens.modals import ConfirmModal
from sendense_tui.screens.restore_job import RestoresScreen
from sendense_tui.screens.restore_modals import DiskRestoreModal, ExportModal, VMRestoreModal
from sendense_tui.screens.restore_point import RestorePointScreen
from sendense_tui.screens.restore_points import RestorePointsScreen
from tests.fixtures.lab import Lab
from tests.fixtures.points import Point
from tests.test_tui_pilot import console, hub, until
from tests.test_tui_snapshots import settle, steps
from tests.tui_standin_hub import FROZEN_AT, TOKEN, MiB, StandinState, build_app, lab_inventory

SIZES = [(80, 24), (120, 40)]
FULL, INCREMENTAL, DAMAGED = (
    "backup-pgtest1-1789906400",
    "backup-pgtest1-1789992800",
    "backup-DC0_VM1-1789950000",
)


def cells(app: SendenseApp, table_id: str, column: str) -> list[str]:
    table = app.screen.query_one(f"#{table_id}", DataTable)
    return [str(table.get_cell(row, column)) for row in table.rows]


def text_of(app: SendenseApp, widget_id: str) -> str:
    return str(app.screen.query_one(f"#{widget_id}", Static).render())


# -- against the real hub and node on the lab ------------------------------------------


async def test_points_from_the_vm_pane_export_a_disk_and_end_the_export(
    point: Point, tmp_path: Path
) -> None:
    services = point.services
    app = console(services, tmp_path)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await until(pilot, lambda: app.state.inventories)
        await pilot.press("slash", *"pgtest1", "enter", "j")
        assert isinstance(app.screen, InventoryScreen)
        assert "p: restore points" in text_of(app, "vm-detail")
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, RestorePointsScreen))
        await until(pilot, lambda: cells(app, "points-table", "point id") == [point.point_id])
        assert "pgtest1's points" in text_of(app, "points-status")
        assert cells(app, "points-table", "state") == ["unverified"]
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RestorePointScreen))
        await until(pilot, lambda: cells(app, "point-disks", "disk") == ["2000", "2001"])
        assert str(point.disks[2000]) in cells(app, "point-disks", "qcow2")
        # Instant access to disk 2001 (the second row): the URI is shown in the modal.
        await pilot.press("j", "x")
        await until(pilot, lambda: isinstance(app.screen, ExportModal))
        await pilot.press("enter")
        shown = app.screen.query_one("#export-uri", Static)
        await until(pilot, lambda: "nbd://" in str(shown.render()))
        uri = str(shown.render()).split("\n")[0]
        async with hub(services) as api:
            (export,) = await api.restore_exports()
        assert (export.uri, export.disk_key, export.point_id) == (uri, 2001, point.point_id)
        # Any NBD client reads it, as the point holds it.
        subprocess.run(["qemu-img", "compare", "-q", uri, str(point.disks[2001])], check=True)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RestorePointScreen))
        await until(pilot, lambda: cells(app, "point-exports", "nbd URI") == [uri])
        # Deleting a point that is exported: refused by the hub, said in one line.
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("tab", "enter")
        said = app._notifications
        await until(pilot, lambda: any("export" in n.message for n in said))
        (refusal,) = [n.message for n in said if "export" in n.message]
        assert "\n" not in refusal and "busy" in refusal
        # u ends the export under the cursor.
        await pilot.press("tab", "u")
        await until(pilot, lambda: cells(app, "point-exports", "nbd URI") == [""])
    async with hub(services) as api:
        assert await api.restore_exports() == []
        assert [p.point_id for p in await api.restore_points()] == [point.point_id]


async def test_restore_a_disk_to_a_file_and_watch_it_complete(point: Point, tmp_path: Path) -> None:
    target = tmp_path / "pgtest1-2000.qcow2"
    app = console(point.services, tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await until(pilot, lambda: isinstance(app.screen, RestorePointsScreen))
        await until(pilot, lambda: cells(app, "points-table", "point id") == [point.point_id])
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RestorePointScreen))
        await until(pilot, lambda: cells(app, "point-disks", "disk"))
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, DiskRestoreModal))
        await pilot.press("enter")  # no path yet: said in the modal, nothing asked
        error = app.screen.query_one("#form-error", Static)
        assert "enter the path" in str(error.render())
        await pilot.press(*str(target), "tab", "right", "space", "enter")  # format qcow2
        await until(pilot, lambda: isinstance(app.screen, RestoresScreen))
        restores = app.state.store.restores
        await until(pilot, lambda: len(restores) == 1)
        (restore_id,) = restores
        await until(pilot, lambda: restores[restore_id].status is JobStatus.COMPLETED)
        await until(pilot, lambda: cells(app, "disks-table", "state") == ["completed"])
        assert "100%" in cells(app, "disks-table", "progress")[0]
        assert isinstance(app.screen, RestoresScreen) and app.screen.selected == restore_id
        assert str(target) in text_of(app, "job-title")
        assert cells(app, "restores-table", "state") == ["completed"]
    subprocess.run(["qemu-img", "compare", "-q", str(target), str(point.disks[2000])], check=True)
    info = subprocess.run(["qemu-img", "info", str(target)], capture_output=True, text=True)
    assert "file format: qcow2" in info.stdout and "backing file" not in info.stdout


async def test_a_running_restore_is_live_and_cancelled_on_its_key(
    point: Point, tmp_path: Path
) -> None:
    target = tmp_path / "slow.raw"
    request = DiskRestoreRequest(
        point_id=point.point_id, disk_key=2000, path=str(target), max_rate_mib=0.25
    )
    async with hub(point.services) as api:
        restore_id = (await api.restore_disk(request)).restore_id
    app = console(point.services, tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("7")
        await until(
            pilot,
            lambda: isinstance(app.screen, RestoresScreen) and app.screen.selected == restore_id,
        )
        await until(pilot, lambda: "%" in "".join(cells(app, "disks-table", "progress")))
        first = cells(app, "disks-table", "progress")
        await until(pilot, lambda: cells(app, "disks-table", "progress") != first)  # live
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("tab", "enter")
        restores = app.state.store.restores
        await until(pilot, lambda: restores[restore_id].status is JobStatus.CANCELLED)
        await until(pilot, lambda: cells(app, "restores-table", "state") == ["cancelled"])
    assert not target.exists()  # a cancelled restore leaves no partial file


async def test_restore_the_whole_vm_on_a_small_terminal(
    point: Point, lab: Lab, tmp_path: Path
) -> None:
    name, dc = "pgtest1-console", "/DatabanxDC/vm"
    app = console(point.services, tmp_path)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("6")
            await until(pilot, lambda: isinstance(app.screen, RestorePointsScreen))
            await until(pilot, lambda: cells(app, "points-table", "VM") == ["pgtest1"])
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, RestorePointScreen))
            await until(pilot, lambda: "configuration recorded" in text_of(app, "point-title"))
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, VMRestoreModal))
            await pilot.press(*name, "enter")  # the name box comes selected: typed over
            await until(pilot, lambda: isinstance(app.screen, RestoresScreen))
            restores = app.state.store.restores
            await until(pilot, lambda: len(restores) == 1)
            (job,) = restores.values()
            assert (job.kind, job.target, job.point_id) == (RestoreKind.VM, name, point.point_id)
            await until(pilot, lambda: restores[job.restore_id].status is JobStatus.COMPLETED)
            await until(pilot, lambda: cells(app, "disks-table", "state") == ["completed"] * 2)
            await until(pilot, lambda: f"{dc}/{name}" in text_of(app, "restore-info"))
            assert "read through export" not in text_of(app, "restore-info")  # ended with it
        with lab.connect() as vc:
            restored = vm_info(vc, find_vm(vc, f"{dc}/{name}"))
        assert sorted(d.key for d in restored.disks) == sorted(point.disks)
    finally:
        with lab.connect() as vc, contextlib.suppress(VMNotFound):
            destroy_vm(vc, find_vm(vc, f"{dc}/{name}")._moId)


# -- snapshots from the stand-in hub ---------------------------------------------------


def standin() -> StandinState:
    state = StandinState(lab_inventory())
    pg, other = state.vm("pgtest1"), state.vm("DC0_VM1")
    assert pg is not None and other is not None
    state.add_job(pg, done_fraction=0.4, rate=48 * MiB, job_id="backup-pgtest1-1790000100")
    state.restore.add_point(pg, FULL, hours_ago=26, verification=Verification.VERIFIED)
    state.restore.add_point(pg, INCREMENTAL, hours_ago=2, parent=FULL)
    state.restore.add_point(
        other,
        DAMAGED,
        hours_ago=14,
        verification=Verification.DAMAGED,
        detail="disk 2000: chunk 12 at 48.0 MiB does not match",
    )
    state.restore.export(INCREMENTAL, ExportRequest(disk_key=2000))
    state.restore.add_restore(
        INCREMENTAL,
        RestoreKind.DISK,
        "/srv/restore/pgtest1-2000.raw",
        done_fraction=0.4,
        rate=48 * MiB,
        disk_keys=[2000],
    )
    state.restore.add_restore(
        DAMAGED,
        RestoreKind.VM,
        "DC0_VM1-restored",
        status=JobStatus.FAILED,
        done_fraction=0.3,
        error="the node stopped answering mid-restore; VM DC0_VM1-restored was removed",
    )
    return state


def frozen_app(tmp_path: Path, state: StandinState | None = None) -> SendenseApp:
    config = ConsoleConfig(
        hub_url="http://hub.test",
        token=TOKEN,
        home=tmp_path,
        explicit=True,
        keymap_file=Path("/nonexistent/sendense/keymap.toml"),
    )
    transport = httpx.ASGITransport(build_app(state or standin()))
    client = HubClient(config.hub_url, TOKEN, transport=transport)
    clock = FROZEN_AT.timestamp() + 60
    return SendenseApp(config, clock=lambda: clock, live=False, client=client)


SCREENS = {
    "restore_points": steps("6"),
    "restore_points_of_a_vm": steps("down", "enter", "down", "p"),
    "restore_point": steps("6", "enter"),
    "export_modal_done": steps("6", "enter", "x", "enter"),
    "disk_restore_modal": steps("6", "enter", "f", *"/srv/restore/pg.vmdk", "tab", "right"),
    "vm_restore_modal_overwrite": steps(
        "6", "enter", "v", "tab", "tab", "tab", "tab", "tab", "space", "tab", *"pgtest1"
    ),
    "restores": steps("7"),
    "restore_failed": steps("7", "j"),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", SCREENS)
def test_restore_snapshot(snap_compare, tmp_path: Path, screen: str, size: tuple[int, int]) -> None:
    assert snap_compare(frozen_app(tmp_path), terminal_size=size, run_before=SCREENS[screen])


# -- keys, against the stand-in --------------------------------------------------------


async def test_overwrite_needs_the_vms_name_typed_again(tmp_path: Path) -> None:
    state = standin()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=(80, 24)) as pilot:
        await steps("6", "enter", "v")(pilot)
        assert isinstance(app.screen, VMRestoreModal)
        name = app.screen.query_one("#form-name", Input)
        assert name.value == "pgtest1-restored" and not name.disabled
        await pilot.press("tab", "tab", "tab", "tab", "tab", "space")  # overwrite ticked
        assert name.value == "pgtest1" and name.disabled
        await pilot.press("tab", *"pgtest", "enter")
        error = str(app.screen.query_one("#form-error", Static).render())
        assert "type the VM's name, pgtest1, exactly" in error
        assert isinstance(app.screen, VMRestoreModal) and len(state.restore.restores) == 2
        await pilot.press("1", "enter")
        await settle(pilot)
        assert isinstance(app.screen, RestoresScreen)
    restore = list(state.restore.restores.values())[-1]
    assert (restore.kind, restore.target, restore.point_id) == (
        RestoreKind.VM,
        "pgtest1",
        INCREMENTAL,
    )


async def test_unticking_the_overwrite_gives_the_new_name_back(tmp_path: Path) -> None:
    state = standin()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=(120, 40)) as pilot:
        await steps("6", "enter", "v")(pilot)
        await pilot.press(*"pg-copy", "tab", "tab", "tab", "tab", "tab", "space")
        await pilot.press("space", "enter")
        await settle(pilot)
        assert isinstance(app.screen, RestoresScreen)
    assert [r.target for r in state.restore.restores.values()][-1] == "pg-copy"


async def test_points_filter_and_escape_back_to_every_vm(tmp_path: Path) -> None:
    app = frozen_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await steps("down", "enter", "down", "p")(pilot)
        assert cells(app, "points-table", "point id") == [INCREMENTAL, FULL]
        await pilot.press("escape")
        await settle(pilot)
        assert cells(app, "points-table", "point id") == [INCREMENTAL, DAMAGED, FULL]
        assert cells(app, "points-table", "chain") == ["2 ← 11-28 07:00", "1", "1"]
        await pilot.press("slash", *"dc0", "enter")
        assert cells(app, "points-table", "point id") == [DAMAGED]
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, RestorePointScreen)
        assert "chunk 12 at 48.0 MiB" in text_of(app, "point-title")


async def test_palette_opens_a_restore_and_the_restore_points(tmp_path: Path) -> None:
    app = frozen_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for query, screen in (
            ("restore DC0_VM1", RestoresScreen),
            ("restore-points", RestorePointsScreen),
        ):
            await pilot.press("colon", *query)
            await pilot.pause(0.5)
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, screen)
        await pilot.press("7")
        assert isinstance(app.screen, RestoresScreen)
        assert app.screen.selected == "restore-DC0_VM1-1790000201"
        assert "node stopped answering" in text_of(app, "job-title")


def _restore(status: JobStatus, done: int, rate: float) -> RestoreJob:
    disk = RestoreJobDisk(
        disk_key=2000,
        status=DiskStatus.COPYING if status is JobStatus.RUNNING else DiskStatus.COMPLETED,
        bytes_done=done,
        bytes_total=100,
        rate_bps=rate,
        source_path="/repo/p.qcow2",
    )
    return RestoreJob(
        restore_id="restore-pgtest1-1",
        kind=RestoreKind.DISK,
        point_id="backup-pgtest1-1",
        vm_name="pgtest1",
        target="/tmp/p.raw",
        status=status,
        created_at=FROZEN_AT,
        started_at=FROZEN_AT,
        completed_at=None,
        bytes_done=done,
        bytes_total=100,
        rate_bps=rate,
        disks=[disk],
    )


def test_store_keeps_restores_their_rates_and_a_finished_end() -> None:
    now = [100.0]
    store = LiveStore(lambda: now[0])
    store.load_restores([_restore(JobStatus.RUNNING, 10, 5.0)])
    assert store.running_count() == 1
    store.apply(_restore(JobStatus.RUNNING, 50, 20.0))
    now[0] = 101.0
    store.sample()
    assert list(store.disk_history[("restore-pgtest1-1", 2000)]) == [5.0, 20.0]
    assert store.job_history["restore-pgtest1-1"][-1] == (1.0, 20.0)
    store.apply(_restore(JobStatus.COMPLETED, 100, 0.0))
    store.apply(_restore(JobStatus.RUNNING, 60, 1.0))  # published before the end, came after
    assert store.restores["restore-pgtest1-1"].status is JobStatus.COMPLETED
    assert store.running_count() == 0 and store.ordered_restores()[0].bytes_done == 100
