"""The console's incremental backups against the stand-in hub (tests/tui_standin_hub.py
and tests/tui_standin_backups.py): the backup modal's type and per-VM preview, a running
incremental's disks, CBT switched on from the inventory, a point merged into its child.

The stand-in answers with the contract's models, so these check what the console shows
and sends; the hub's own decisions are tested against the real hub (test_hub_*).
"""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Static

from engine.contract.hub import BackupPreview, DiskPreview
from engine.contract.status import BackupType
from sendense_tui.app import SendenseApp
from sendense_tui.screens.backup import BackupModal
from sendense_tui.screens.inventory import InventoryScreen
from sendense_tui.screens.jobs import JobsScreen
from sendense_tui.screens.modals import ConfirmModal
from sendense_tui.screens.restore_point import RestorePointScreen
from tests.test_tui_pilot import until
from tests.test_tui_restore import FULL, INCREMENTAL, cells, frozen_app, standin, text_of
from tests.test_tui_snapshots import settle, steps
from tests.tui_standin_backups import incremental_job
from tests.tui_standin_hub import MiB, StandinState, lab_inventory

PG = "/DatabanxDC/vm/pgtest1"
OTHER = "/DC0/vm/web/DC0_VM1"
SECOND = "backup-pgtest1-1790078400"


def chain_state() -> StandinState:
    """pgtest1 (CBT on) with a chain of three points, nothing read; DC0_VM1 with CBT off."""
    state = StandinState(lab_inventory())
    pg = state.vm("pgtest1")
    assert pg is not None
    state.restore.add_point(pg, FULL, hours_ago=26)
    state.restore.add_point(pg, INCREMENTAL, hours_ago=2, parent=FULL)
    state.restore.add_point(pg, SECOND, hours_ago=1, parent=INCREMENTAL)
    return state


def previews(app: SendenseApp) -> list[str]:
    return [str(s.render()) for s in app.screen.query(".preview").results(Static)]


async def open_backup_modal(app: SendenseApp, pilot: Pilot[None], *paths: str) -> None:
    await until(pilot, lambda: app.state.inventories)
    app.state.marks.update((1, path) for path in paths)
    await pilot.press("b")
    await until(pilot, lambda: isinstance(app.screen, BackupModal))
    await settle(pilot)


async def test_backup_modal_previews_each_vm_and_sends_the_chosen_type(tmp_path: Path) -> None:
    state = chain_state()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_backup_modal(app, pilot, PG, OTHER)
        # auto, the default: what the hub's preview says for each VM, and why.
        assert previews(app) == [  # marked VMs in path order
            "DC0_VM1: full — CBT is off on DC0_VM1 (press c on the VM to enable it)",
            f"pgtest1: incremental on {SECOND} (2 disks)",
        ]
        await pilot.press("tab", "down", "space")  # the type: full
        await settle(pilot)
        assert previews(app) == [
            "DC0_VM1: full — a full was asked for",
            "pgtest1: full — a full was asked for",
        ]
        await pilot.press("down", "space")  # incremental
        await settle(pilot)
        assert previews(app)[1] == f"pgtest1: incremental on {SECOND} (2 disks)"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen))
    sent = [(r.vm_context_id, r.backup_type) for r in state.backups.requests]
    assert sent == [
        ("ctx-DC0_VM1", BackupType.INCREMENTAL),
        ("ctx-pgtest1", BackupType.INCREMENTAL),
    ]


async def test_backup_modal_says_per_disk_reasons_and_a_refused_preview(tmp_path: Path) -> None:
    state = chain_state()
    state.backups.previews["pgtest1"] = BackupPreview(
        vm_name="pgtest1",
        vm_context_id="ctx-pgtest1",
        requested_type=BackupType.AUTO,
        backup_type=BackupType.INCREMENTAL,
        parent_backup_id=SECOND,
        cbt_enabled=True,
        disks=[
            DiskPreview(disk_key=2000, capacity_bytes=64 * MiB, mode=BackupType.INCREMENTAL),
            DiskPreview(
                disk_key=2001,
                capacity_bytes=48 * MiB,
                mode=BackupType.FULL,
                reason="disk 2001 was resized since the parent point (32.0 MiB to 48.0 MiB)",
            ),
        ],
    )
    state.backups.previews["DC0_VM1"] = (409, "a backup of DC0_VM1 is running")
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_backup_modal(app, pilot, PG, OTHER)
        other, pg = previews(app)
        assert pg == (
            f"pgtest1: incremental on {SECOND} (1 of 2 disks)\n"
            "  disk 2001: full — disk 2001 was resized since the parent point "
            "(32.0 MiB to 48.0 MiB)"
        )
        assert other.startswith("DC0_VM1: no preview — busy") and "\n" not in other


async def test_a_running_incremental_shows_changed_bytes_and_a_fallback(tmp_path: Path) -> None:
    state = chain_state()
    pg = state.vm("pgtest1")
    assert pg is not None
    job = state.add_job(pg, done_fraction=0.5, rate=20 * MiB, job_id="backup-pgtest1-1790000100")
    incremental_job(
        job, SECOND, {2000: 6 * MiB}, {2001: "vCenter no longer knows change id 52 …/7"}
    )
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=(120, 40)) as pilot:
        await steps("2")(pilot)
        assert cells(app, "disks-table", "copies") == [
            "changed 6.0 MiB of 64.0 MiB",
            "32.0 MiB full: fallback",
        ]
        title = text_of(app, "job-title")
        assert f"\nincremental on {SECOND}\n" in title
        assert "disk 2001 copied whole: vCenter no longer knows change id 52 …/7" in title


async def test_c_enables_cbt_on_the_vm_and_refreshes(tmp_path: Path) -> None:
    state = chain_state()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.state.inventories)
        await pilot.press("slash", *"DC0_VM1", "enter", "j")
        assert isinstance(app.screen, InventoryScreen)
        assert "CBT off (full backups only; c enables it)" in text_of(app, "vm-detail")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("tab", "enter")
        await until(pilot, lambda: state.backups.cbt_calls == ["ctx-DC0_VM1"])
        await until(pilot, lambda: app.state.contexts.get(OTHER) is not None)
        assert app.state.contexts[OTHER].cbt_enabled  # added first: it had no context
        await settle(pilot)
        await pilot.press("slash", *"DC0_VM1", "enter", "j")
        await until(pilot, lambda: "CBT enabled" in text_of(app, "vm-detail"))


async def test_m_merges_the_point_into_its_child_after_asking(tmp_path: Path) -> None:
    state = chain_state()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        app.push_screen(RestorePointScreen(app.state, state.restore.points[INCREMENTAL]))
        await settle(pilot)
        title = text_of(app, "point-title")
        assert f"incremental on {FULL}, chain of 2" in title
        assert f"chain {FULL} → {INCREMENTAL}" in title
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        question = str(app.screen.query_one("Label", Static).render())
        assert f"{INCREMENTAL} is folded into {SECOND}; {SECOND} reads exactly as before" in (
            question.replace("\n", " ")
        )
        await pilot.press("tab", "enter")
        await until(pilot, lambda: state.backups.merges == [INCREMENTAL])
        await until(pilot, lambda: not isinstance(app.screen, RestorePointScreen))
    assert state.restore.points[SECOND].chain == [FULL, SECOND]


async def test_a_merge_refused_while_read_is_one_line(tmp_path: Path) -> None:
    state = standin()  # INCREMENTAL, FULL's child, has a live export
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        app.push_screen(RestorePointScreen(app.state, state.restore.points[FULL]))
        await settle(pilot)
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("tab", "enter")
        said = app._notifications
        await until(pilot, lambda: any("being read" in n.message for n in said))
        (refusal,) = [n.message for n in said if "being read" in n.message]
        assert "\n" not in refusal and "busy" in refusal
        assert isinstance(app.screen, RestorePointScreen)
    assert FULL in state.restore.points
