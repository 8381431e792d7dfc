"""The console's real flows, driven with Textual's pilot against a real hub and node
on the lab (tests/fixtures/services.py): nothing here is a stand-in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from engine.contract.hub import BackupRequest
from engine.contract.status import JobStatus
from engine.hub_client import HubClient
from sendense_tui.app import SendenseApp
from sendense_tui.config import ConsoleConfig
from sendense_tui.screens.backup import BackupModal
from sendense_tui.screens.inventory import InventoryScreen
from sendense_tui.screens.jobs import JobsScreen
from sendense_tui.screens.lists import VCentersScreen
from sendense_tui.screens.modals import AddVCenterModal, ConfirmModal
from tests.fixtures.services import Services

SIZE = (120, 40)


def hub(services: Services) -> HubClient:
    """The typed hub client on the test's hub, to check what the console did."""
    return HubClient(services.hub.url, services.token)


def console(services: Services, tmp_path: Path) -> SendenseApp:
    config = ConsoleConfig(
        hub_url=services.hub.url,
        token=services.token,
        home=services.home,
        explicit=True,
        keymap_file=tmp_path / "keymap.toml",
    )
    return SendenseApp(config)


async def until(pilot: Pilot[None], check: Callable[[], Any], timeout: float = 60.0) -> None:
    """Let the app run until ``check()`` holds (never a fixed sleep)."""
    loop_time = 0.0
    while not check():
        if loop_time > timeout:
            raise AssertionError(f"condition not met in {timeout}s: {check}")
        await pilot.pause(0.05)
        loop_time += 0.05


def cursor_vm(app: SendenseApp) -> str | None:
    screen = app.screen
    assert isinstance(screen, InventoryScreen)
    node = screen.vm_tree.cursor_node
    return node.data.vm.name if node and node.data and node.data.vm else None


def disk_cells(app: SendenseApp, column: str) -> list[str]:
    table = app.screen.query_one("#disks-table", DataTable)
    return [str(table.get_cell(row, column)) for row in table.rows]


async def slow_backup(services: Services, vm: str = "pgtest1", max_rate_mib: float = 0.25) -> str:
    """A backup throttled by the hub's max_rate_mib, so it is still running when we act."""
    request = BackupRequest(vm_name=vm, repository_id=1, max_rate_mib=max_rate_mib)
    async with hub(services) as api:
        return (await api.start_backup(request)).backup_id


async def test_browse_filter_mark_two_and_back_up(services: Services, tmp_path: Path) -> None:
    app = console(services, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.inventories)
        # The tree: vCenter (expanded on its own) → DatabanxDC → Prod folder, fstest1,
        # pgtest1.
        await pilot.press("j")
        assert app.screen.vm_tree.cursor_node.data.group.name == "DatabanxDC"
        await pilot.press("enter", "j", "j")
        assert cursor_vm(app) == "fstest1"
        await pilot.press("j")
        assert cursor_vm(app) == "pgtest1"
        detail = str(app.screen.query_one("#vm-detail", Static).render())
        assert "/DatabanxDC/vm/pgtest1" in detail and "2000" in detail and "2001" in detail
        await pilot.press("space")
        # Filter by name, mark the match, clear the filter: both marks stay.
        await pilot.press("slash", *"web 0", "enter")
        assert app.screen.query_one("#filter", Input).value == "web 0"
        await pilot.press("j")
        assert cursor_vm(app) == "web 01"
        await pilot.press("space", "escape")
        assert {path for _, path in app.state.marks} == {
            "/DatabanxDC/vm/pgtest1",
            "/DatabanxDC/vm/Prod/Web Tier/web 01",
        }
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, BackupModal))
        # Each VM's preview, as the hub decides it: no point yet, so a full for both.
        lines = app.screen.query(".preview").results(Static)
        await until(pilot, lambda: all("…" not in str(s.render()) for s in lines))
        shown = [str(s.render()) for s in app.screen.query(".preview").results(Static)]
        assert [line.split(" — ")[0] for line in shown] == ["web 01: full", "pgtest1: full"]
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen))
        jobs = app.state.store.jobs
        await until(pilot, lambda: len(jobs) == 2)
        await until(pilot, lambda: all(j.status is JobStatus.COMPLETED for j in jobs.values()))
        await until(
            pilot,
            lambda: disk_cells(app, "state") and set(disk_cells(app, "state")) == {"completed"},
        )
        assert all("100%" in cell for cell in disk_cells(app, "progress"))
        jobs_table = app.screen.query_one("#jobs-table", DataTable)
        await until(
            pilot,
            lambda: (
                [str(jobs_table.get_cell(r, "state")) for r in jobs_table.rows]
                == ["completed", "completed"]
            ),
        )
        assert not app.state.marks
    async with hub(services) as api:
        jobs = await api.jobs()
    assert sorted(j.vm_name for j in jobs) == ["pgtest1", "web 01"]
    assert {j.status for j in jobs} == {JobStatus.COMPLETED}


async def test_live_rows_busy_error_and_cancel_with_confirmation(
    services: Services, tmp_path: Path
) -> None:
    backup_id = await slow_backup(services)
    app = console(services, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen))
        await until(pilot, lambda: app.screen.selected == backup_id and disk_cells(app, "progress"))
        first = disk_cells(app, "progress")
        await until(pilot, lambda: disk_cells(app, "progress") != first)  # rows update live
        # A second backup of the running VM: the hub's 409, in the modal, in plain words.
        await pilot.press("1")
        await until(pilot, lambda: app.state.inventories)
        await pilot.press("slash", *"pgtest1", "enter", "j", "b")
        await until(pilot, lambda: isinstance(app.screen, BackupModal))
        await pilot.press("enter")
        error = app.screen.query_one("#backup-error", Static)
        await until(pilot, lambda: "busy" in str(error.render()))
        await pilot.press("escape", "2")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen))
        # Cancel asks first, and the default answer is No.
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen))
        assert app.state.store.jobs[backup_id].status is JobStatus.RUNNING
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("tab", "enter")
        await until(pilot, lambda: app.state.store.jobs[backup_id].status is JobStatus.CANCELLED)
    assert services.wait_job(backup_id)["status"] == "cancelled"


async def test_node_down_shows_the_hubs_503_in_the_modal(
    services_factory: Callable[..., Services], lab_registered: Any, tmp_path: Path
) -> None:
    services = services_factory(node=False)
    app = console(services, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.inventories)
        await pilot.press("slash", *"pgtest1", "enter", "j", "b")
        await until(pilot, lambda: isinstance(app.screen, BackupModal))
        await pilot.press("enter")
        error = app.screen.query_one("#backup-error", Static)
        await until(pilot, lambda: "node is not reachable" in str(error.render()))
        assert isinstance(app.screen, BackupModal)  # the choice stays for another try
    async with hub(services) as api:
        assert await api.jobs() == []


async def test_list_screens_show_what_the_hub_says(services: Services, tmp_path: Path) -> None:
    async with hub(services) as api:
        expected = {
            "3": (await api.repositories())[0].path,
            "4": (await api.vcenters())[0].host,
            "5": (await api.nodes())[0].url,
        }
    app = console(services, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        for key, value in expected.items():
            await pilot.press(key)
            await until(pilot, lambda: app.screen.query(DataTable) and first_row(app))
            assert value in first_row(app)


def first_row(app: SendenseApp) -> list[str]:
    table = app.screen.query_one(DataTable)
    return [str(cell) for cell in table.get_row_at(0)] if table.row_count else []


async def test_add_a_vcenter_with_its_thumbprint_and_test_it(
    services: Services, lab: Any, tmp_path: Path
) -> None:
    app = console(services, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: app.screen.query(DataTable) and first_row(app))
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, AddVCenterModal))
        await pilot.press(*lab.host, "tab", *lab.user, "tab", *lab.password, "tab", "enter")
        shown = app.screen.query_one("#vc-thumbprint", Static)
        await until(pilot, lambda: "thumbprint" in str(shown.render()))
        assert (
            str(shown.render()).split("\n")[1].replace(" ", "")
            == lab.thumbprint.replace(":", "").lower()
        )
        await pilot.press("tab", "enter")  # "Trust and add"
        await until(pilot, lambda: isinstance(app.screen, VCentersScreen))
        table = app.screen.query_one(DataTable)
        await until(pilot, lambda: table.row_count == 2)
        assert lab.password not in app.export_screenshot()
        await pilot.press("G", "t")
        await until(pilot, lambda: "ok" in [str(c) for c in table.get_row_at(1)])
    with services.client() as api:
        listed = api.get("/api/v1/vcenters").text
    assert lab.password not in listed and f"{lab.user}@{lab.host}" in listed


async def test_quitting_the_console_stops_no_backup(services: Services, tmp_path: Path) -> None:
    backup_id = await slow_backup(services, max_rate_mib=2)
    app = console(services, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        jobs = app.state.store.jobs
        await until(pilot, lambda: backup_id in jobs and jobs[backup_id].bytes_done)
        await pilot.press("q")
    assert app.return_code == 0
    async with hub(services) as api:  # still copying after the console is gone
        assert (await api.job(backup_id)).status is JobStatus.RUNNING
    assert services.wait_job(backup_id)["status"] == "completed"
