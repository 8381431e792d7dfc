"""The console's parts on their own: settings, keymap, inventory index, live store,
hub error words, text shapes; and keys that need no real hub (palette, help, rebinding,
header), driven against the stand-in hub in-process (tests/tui_standin_hub.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx
import pytest
from textual.command import CommandPalette
from textual.widgets import DataTable

from engine.contract.hub import DiskEvent, Job, JobDisk
from engine.contract.status import BackupType, DiskStatus, JobStatus
from engine.errors import BadInput, Conflict, SendenseError, Unavailable
from engine.hub_client import HubClient, HubUnreachable
from sendense_tui import fmt
from sendense_tui.app import SendenseApp
from sendense_tui.calls import plain
from sendense_tui.config import ConsoleConfig, load_config
from sendense_tui.inventory import InventoryIndex
from sendense_tui.keymap import KEYS, KeymapError, load_keymap
from sendense_tui.launcher import ensure_hub
from sendense_tui.live import LiveStore
from sendense_tui.screens.backup import BackupModal
from sendense_tui.screens.help import HelpScreen, pretty
from sendense_tui.screens.inventory import InventoryScreen
from sendense_tui.widgets.header import HubHeader
from tests.tui_standin_hub import TOKEN, MiB, StandinState, build_app, lab_inventory

# -- settings --------------------------------------------------------------------------


def test_config_reads_env_over_toml_and_the_token_file(tmp_path: Path) -> None:
    toml = tmp_path / "sendense.toml"
    toml.write_text('[hub]\nurl = "http://hub.example:9000/"\n')
    (tmp_path / "api-token").write_text("secret-token\n")
    env = {"SENDENSE_CONFIG": str(toml), "SENDENSE_HOME": str(tmp_path)}
    config = load_config(env)
    assert (config.hub_url, config.token, config.explicit) == (
        "http://hub.example:9000",
        "secret-token",
        True,
    )
    config = load_config({**env, "SENDENSE_HUB__URL": "http://other:1"})
    assert config.hub_url == "http://other:1"


def test_config_with_only_a_port_is_a_local_hub_it_may_start(tmp_path: Path) -> None:
    config = load_config(
        {
            "SENDENSE_HOME": str(tmp_path),
            "SENDENSE_HUB__PORT": "18123",
            "SENDENSE_CONFIG": str(tmp_path / "none.toml"),
        }
    )
    assert config.hub_url == "http://127.0.0.1:18123"
    assert not config.explicit and config.token == ""


def test_a_named_hub_that_does_not_answer_is_never_started(tmp_path: Path) -> None:
    config = ConsoleConfig("http://127.0.0.1:9", "", tmp_path, True, tmp_path / "k.toml")
    assert ensure_hub(config) is None
    assert not (tmp_path / "run").exists()


def test_services_that_cannot_start_leave_a_note_that_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.write_text("a file where the data folder should be\n")
    monkeypatch.setenv("SENDENSE_HOME", str(home))
    config = ConsoleConfig("http://127.0.0.1:9", "", home, False, tmp_path / "k.toml")
    note = ensure_hub(config)
    assert note is not None and note.failed
    assert "no hub was running, and `sendense run --no-console --no-lab` failed (exit" in note.text
    assert "\n" not in note.text  # one line, not a traceback


# -- keymap ----------------------------------------------------------------------------


def test_keymap_file_rejects_unknown_ids(tmp_path: Path) -> None:
    path = tmp_path / "keymap.toml"
    assert load_keymap(path) == {}
    path.write_text('"inventory.backup" = "x"\n"no.such" = "y"\n')
    with pytest.raises(KeymapError, match=r"no\.such"):
        load_keymap(path)


def test_every_binding_has_a_description_and_a_scope_in_help() -> None:
    from sendense_tui.screens.help import SCOPES

    for binding_id, key in KEYS.items():
        assert key.description and binding_id.split(".")[0] in SCOPES


# -- inventory index -------------------------------------------------------------------


def test_inventory_places_folders_clusters_hosts_and_vms() -> None:
    inv = InventoryIndex(lab_inventory(extra_vms=4))
    assert list(inv.datacenters) == ["DatabanxDC", "DC0"]
    dc0 = inv.datacenters["DC0"]
    assert sorted(name for kind, name in dc0.groups if kind == "folder") == ["db", "web"]
    cluster = dc0.groups[("cluster", "DC0_C0")]
    hosts = {name: group for (kind, name), group in cluster.groups.items()}
    assert sorted(hosts) == ["DC0_C0_H0", "DC0_C0_H1"]
    assert [vm.name for vm in hosts["DC0_C0_H1"].vms] == ["DC0_VM1", "DC0_VM3"]
    databanx = inv.datacenters["DatabanxDC"]
    assert [vm.name for vm in databanx.vms] == ["pgtest1"]
    assert ("host", "DB_H0") in databanx.groups  # a standalone host sits under its DC
    pg = inv.by_path["/DatabanxDC/vm/pgtest1"]
    assert [(d.key, d.capacity_bytes) for d in pg.disks] == [(2000, 64 * MiB), (2001, 32 * MiB)]
    assert [vm.name for vm in inv.matching("VM2")] == ["DC0_VM2"]


# -- live store ------------------------------------------------------------------------


def _job(backup_id: str, status: JobStatus, created: str) -> Job:
    return Job(
        backup_id=backup_id,
        vm_name="pgtest1",
        vm_context_id="ctx-pgtest1",
        repository_id=1,
        node_id=1,
        backup_type=BackupType.FULL,
        status=status,
        created_at=datetime.fromisoformat(created),
        started_at=None,
        completed_at=None,
        disks=[
            JobDisk(
                disk_key=key,
                nbd_port=None,
                nbd_export_name=f"pgtest1-{key}",
                qcow2_path=f"/repo/{key}.qcow2",
                status=DiskStatus.QEMU_STARTED,
                bytes_total=total,
            )
            for key, total in ((2000, 100), (2001, 300))
        ],
    )


def _disk_event(backup_id: str, disk_key: int) -> DiskEvent:
    return DiskEvent(
        backup_id=backup_id,
        disk_key=disk_key,
        bytes_done=150,
        bytes_total=300,
        bytes_zero=50,
        rate_bps=10.0,
        status=DiskStatus.COPYING,
    )


def test_store_applies_disk_events_and_orders_running_first() -> None:
    now = [100.0]
    store = LiveStore(lambda: now[0])
    store.load(
        [
            _job("old", JobStatus.COMPLETED, "2026-01-02"),
            _job("new", JobStatus.RUNNING, "2026-01-01"),
        ]
    )
    assert [j.backup_id for j in store.ordered()] == ["new", "old"]
    store.apply(_disk_event("new", 2001))
    job = store.jobs["new"]
    assert (job.bytes_done, job.bytes_zero, job.rate_bps) == (150, 50, 10.0)
    now[0] = 101.0
    store.sample()
    assert list(store.disk_history[("new", 2001)]) == [0.0, 10.0]
    assert store.job_history["new"][-1] == (1.0, 10.0)
    store.apply(_disk_event("unknown", 1))  # ignored, no error
    store.apply(job.model_copy(update={"status": JobStatus.COMPLETED}))
    assert store.running_count() == 0
    # Published before the end, came after:
    store.apply(job.model_copy(update={"status": JobStatus.RUNNING}))
    assert store.jobs["new"].status is JobStatus.COMPLETED


# -- words and shapes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "detail", "words"),
    [
        (BadInput, "VM context missing credential_id", "no vCenter credential"),
        (Conflict, "VM pgtest1 already has a backup running", "busy"),
        (Unavailable, "node local unreachable", "node is not reachable"),
        (HubUnreachable, "the hub at x does not answer", "does not answer"),
    ],
)
def test_hub_errors_in_plain_words(error: type[SendenseError], detail: str, words: str) -> None:
    said = plain(error(detail))
    assert words in said and (error is HubUnreachable or detail in said)


def test_text_shapes() -> None:
    assert fmt.size(1536) == "1.5 KiB" and fmt.size(None) == "—"
    assert fmt.rate(3 * MiB) == "3.0 MiB/s" and fmt.rate(0) == "—"
    assert fmt.eta(120 * MiB, 1 * MiB) == "2m00s" and fmt.eta(0, 0) == "0s"
    assert fmt.sparkline([0, 5, 10]) == "▁▅█"
    assert fmt.bar(1, 4, 8).plain == "██░░░░░░  25%"
    # Nothing to copy: empty while it runs, full once done (an incremental, no change).
    assert fmt.bar(0, 0, 4).plain == "░░░░   0%"
    assert fmt.bar(0, 0, 4, finished=True).plain == "████ 100%"


# -- keys, against the stand-in hub ----------------------------------------------------


def standin_app(tmp_path: Path, keymap: str = "") -> SendenseApp:
    state = StandinState(lab_inventory())
    pg = state.vm("pgtest1")
    assert pg is not None
    state.add_job(pg, JobStatus.COMPLETED, done_fraction=1.0, job_id="backup-pgtest1-1")
    other = state.vm("DC0_VM1")
    assert other is not None
    state.add_job(other, done_fraction=0.5, rate=MiB, job_id="backup-DC0_VM1-2")
    (tmp_path / "keymap.toml").write_text(keymap)
    config = ConsoleConfig("http://hub.test", TOKEN, tmp_path, True, tmp_path / "keymap.toml")
    client = HubClient(config.hub_url, TOKEN, transport=httpx.ASGITransport(build_app(state)))
    return SendenseApp(config, live=False, client=client)


async def test_palette_jumps_to_a_vm(tmp_path: Path) -> None:
    app = standin_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.press("2")
        await pilot.press("colon")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"vm pgtest1")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, InventoryScreen)
        node = screen.vm_tree.cursor_node
        assert node is not None and node.data is not None and node.data.vm is not None
        assert node.data.vm.name == "pgtest1"


async def test_rebound_key_works_and_help_shows_it(tmp_path: Path) -> None:
    app = standin_app(tmp_path, keymap='"inventory.backup" = "x"\n')
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.press("j", "enter", "j")  # DatabanxDC, open, pgtest1
        await pilot.press("b")
        assert not isinstance(app.screen, BackupModal)
        await pilot.press("x")
        assert isinstance(app.screen, BackupModal)
        await pilot.press("escape", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("Static").render())
        for binding_id, key in KEYS.items():
            if binding_id != "inventory.backup":
                assert pretty(key.keys) in text
        assert "x          Back up marked VMs" in text


async def test_header_collapses_to_one_line_on_a_small_terminal(tmp_path: Path) -> None:
    app = standin_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen.query_one(HubHeader).size.height == 2
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert app.screen.query_one(HubHeader).size.height == 1


async def test_vim_keys_move_through_the_jobs_table(tmp_path: Path) -> None:
    app = standin_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.press("2")
        await pilot.pause()
        table = app.screen.query_one("#jobs-table", DataTable)
        assert table.row_count == 2 and table.cursor_row == 0
        moves = []
        for key in ("G", "k", "G", "g", "j"):
            await pilot.press(key)
            moves.append(table.cursor_row)
        assert moves == [1, 0, 1, 0, 1]


async def test_help_scrolls_with_vim_keys_on_a_small_terminal(tmp_path: Path) -> None:
    app = standin_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.press("question_mark")
        scroller = app.screen.query_one("#help-modal")
        assert scroller.max_scroll_y > 0 and scroller.scroll_y == 0
        await pilot.press("G")
        await pilot.pause()
        assert scroller.scroll_y == scroller.max_scroll_y
        await pilot.press("g", "j")
        await pilot.pause()
        assert scroller.scroll_y == 1


async def test_a_hub_that_does_not_answer_is_said_once_and_shown_in_the_header(
    tmp_path: Path,
) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    config = ConsoleConfig("http://127.0.0.1:9", TOKEN, tmp_path, True, tmp_path / "k.toml")
    app = SendenseApp(config, live=False)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.2)
        first = len(app._notifications)
        await pilot.pause(2.5)  # the status poll has failed again meanwhile
        await pilot.app.workers.wait_for_complete()
        again = len(app._notifications)
        header = app.screen.query_one(HubHeader).render().plain
    assert first >= 1 and again == first
    assert "hub ○ down" in header
