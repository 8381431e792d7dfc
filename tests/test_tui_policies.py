"""The console's policies, queue and nodes against the stand-in hub (tests/tui_standin_hub.py
with tests/tui_standin_policies.py): the policies list with next and last runs, one
policy's runs, VMs now and retention, the add and edit form (what it sends, a refusal
in place), run now, enable/disable, delete, queued jobs and their cancel, a selection
of VMs queued, and the nodes' state and load.

The stand-in answers with the contract's models, so these check what the console shows
and sends; the hub's own decisions are tested against the real hub (one flow here runs
on it: a policy's VMs now and a run from the console to its end). The fleet's frozen
data is ``tui_standin_policies.fleet``: nightly-db (failed 2/3 last night), hourly-web
(running, two VMs queued), weekly-all (disabled), and nodes local, node-b and node-c
(down).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static, TextArea

from engine.contract.policy import PolicyIn, Retention
from engine.contract.status import BackupType, JobStatus
from sendense_tui import policy_text
from sendense_tui.app import SendenseApp
from sendense_tui.screens.backup import BackupModal
from sendense_tui.screens.jobs import JobsScreen
from sendense_tui.screens.modals import ConfirmModal
from sendense_tui.screens.policies import PoliciesScreen
from sendense_tui.screens.policy import PolicyScreen
from sendense_tui.screens.policy_modal import PolicyModal
from sendense_tui.widgets.header import HubHeader
from tests.fixtures.services import Services
from tests.test_tui_pilot import console, hub, until
from tests.test_tui_snapshots import fleet_state, frozen_app, settle, steps
from tests.tui_standin_hub import StandinState, lab_inventory

SIZE = (120, 40)
PG = "/DatabanxDC/vm/pgtest1"
SECRET_URL = "json://hook:s3cr3t-t0ken@127.0.0.1:9/notify"


def rows(app: SendenseApp, table_id: str | None = None) -> list[list[str]]:
    """Each row of the screen's table (its only one, or ``table_id``) as its cells' text."""
    query = f"#{table_id}" if table_id else DataTable
    table = app.screen.query_one(query, DataTable)  # type: ignore[call-overload]
    return [[str(cell) for cell in table.get_row_at(n)] for n in range(table.row_count)]


def column(app: SendenseApp, table_id: str, name: str) -> list[str]:
    table = app.screen.query_one(f"#{table_id}", DataTable)
    return [str(table.get_cell(key, name)) for key in table.rows]


def text_of(app: SendenseApp, widget_id: str) -> str:
    return str(app.screen.query_one(f"#{widget_id}", Static).render())


def words_shown(app: SendenseApp) -> str:
    """Every line of text on the screen and its header (labels, titles, notes)."""
    header = [str(h.render()) for h in app.screen.query(HubHeader).results()]
    return "\n".join([*header, *(str(s.render()) for s in app.screen.query(Static).results())])


async def fill(pilot: Pilot[None], widget: Widget, *keys: str) -> None:
    """The keys typed into this box of the form (its text cleared first)."""
    if isinstance(widget, Input):
        widget.value = ""
    elif isinstance(widget, TextArea):
        widget.text = ""
    pilot.app.set_focus(widget)
    await pilot.press(*keys)


async def open_form(app: SendenseApp, pilot: Pilot[None], key: str) -> PolicyModal:
    await steps("8")(pilot)
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, PolicyModal))
    await settle(pilot)
    assert isinstance(app.screen, PolicyModal)
    return app.screen


# -- the list and one policy ---------------------------------------------------------------


async def test_the_list_shows_each_policys_schedule_next_and_last_run(tmp_path: Path) -> None:
    app = frozen_app(tmp_path, fleet_state())
    async with app.run_test(size=SIZE) as pilot:
        await steps("8")(pilot)
        assert isinstance(app.screen, PoliciesScreen)
        shown = {row[0]: row[1:] for row in rows(app)}
    # Times in each policy's zone: nightly-db's 22:00 in Berlin is 21:00 UTC.
    assert shown["nightly-db"] == [
        "on",
        "0 22 * * *  Europe/Berlin",
        "11-29 22:00",
        "failed 2/3 11-28 22:00",
        "last 7 · 14d 8w 12m",
        "/DatabanxDC/vm/pgtest1 +1, 1 out",
    ]
    assert shown["hourly-web"][2:4] == ["11-29 10:00", "running 0/3 11-29 09:00"]
    assert shown["weekly-all"][:5] == ["off", "30 3 * * 0  UTC", "—", "never", "keeps all"]


async def test_enter_opens_a_policy_its_runs_with_each_vms_result(tmp_path: Path) -> None:
    app = frozen_app(tmp_path, fleet_state())
    async with app.run_test(size=SIZE) as pilot:
        await steps("8", "enter")(pilot)
        assert isinstance(app.screen, PolicyScreen)
        title = text_of(app, "policy-title")
        assert "0 22 * * *  Europe/Berlin · next 11-29 22:00" in title
        assert "takes /DatabanxDC/vm/pgtest1, /DC0/vm/db · leaves out /DC0/vm/db/DC0_VM4" in title
        assert "notifies json://hooks.example.com/**** on failure" in title
        assert column(app, "runs-table", "state") == ["failed 2/3", "completed 3/3", "missed"]
        # The newest run's VMs: state, bytes, time taken, and why one failed.
        vms = {row[0]: row[1:6] for row in rows(app, "run-vms")}
        assert vms["pgtest1"] == ["completed", "incr", "96.0 MiB", "5m12s", ""]
        assert vms["DC0_VM2"][0] == "failed"
        assert vms["DC0_VM2"][4].startswith("vCenter refused the snapshot")
        run_title = text_of(app, "run-title")
        assert "2 of 3 VMs backed up" in run_title
        assert "retention: merged backup-DC0_VM0-1794900000" in run_title
        # The run under the cursor is the one shown; a missed run says why.
        await pilot.press("j", "j")
        await settle(pilot)
        assert "past the grace window" in text_of(app, "run-title")
        assert rows(app, "run-vms") == []


async def test_a_policys_vms_now_and_what_retention_would_do(tmp_path: Path) -> None:
    app = frozen_app(tmp_path, fleet_state())
    async with app.run_test(size=SIZE) as pilot:
        await steps("8", "enter", "p")(pilot)
        covered = {row[0]: row[1:3] for row in rows(app, "vms-table")}
        assert covered == {
            "pgtest1": ["yes", PG],
            "DC0_VM0": ["yes", "/DC0/vm/db"],
            "DC0_VM2": ["yes", "/DC0/vm/db"],
            "DC0_VM4": ["left out", "/DC0/vm/db/DC0_VM4"],
        }
        assert text_of(app, "vms-status").startswith("3 VM(s) now, 1 left out")
        await steps("p")(pilot)
        actions = [(row[0], row[3], row[4]) for row in rows(app, "retention-table")]
        assert actions[2] == (
            "DC0_VM0",
            "merge",
            "outside every rule; merged into backup-DC0_VM0-1794986400",
        )
        assert actions[3][1:] == (
            "delete",
            "outside every rule; waits: being read (an instant export)",
        )
        assert text_of(app, "retention-status").startswith("3 point(s) kept, 2 would go")


async def test_a_preview_the_hub_cannot_make_says_why_in_its_pane(tmp_path: Path) -> None:
    state = fleet_state()
    state.policies.vms_refused = (503, "vCenter 127.0.0.1:8989 does not answer")
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=SIZE) as pilot:
        await steps("8", "enter", "p")(pilot)
        assert "vCenter 127.0.0.1:8989 does not answer" in text_of(app, "vms-status")
        assert column(app, "runs-table", "state")[0] == "failed 2/3"  # the rest is there


# -- the form ---------------------------------------------------------------------------


async def test_add_sends_what_was_typed_and_a_refusal_stays_in_the_form(tmp_path: Path) -> None:
    state = fleet_state()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=SIZE) as pilot:
        app.state.marks.add((1, PG))  # marked in the inventory: the new policy's first path
        form = await open_form(app, pilot, "a")
        assert form.query_one("#pf-include", TextArea).text == PG
        await fill(pilot, form.query_one("#pf-name", Input), *"pg-nightly")
        await fill(pilot, form.query_one("#pf-schedule", Input), *"every night")
        await fill(pilot, form.query_one("#pf-timezone", Input), *"Europe/Berlin")
        include = form.query_one("#pf-include", TextArea)
        await fill(pilot, include, *PG, "enter", *"/DC0/vm/db")
        await fill(pilot, form.query_one("#pf-exclude", TextArea), *"/DC0/vm/db/DC0_VM4")
        await fill(pilot, form.query_one("#pf-keep-last", Input), "7")
        await fill(pilot, form.query_one("#pf-keep-weekly", Input), "4")
        await fill(pilot, form.query_one("#pf-notify", Input), *SECRET_URL)
        await pilot.press("tab", "space")  # notify on success too
        await pilot.press("ctrl+s")
        error = form.query_one("#form-error", Static)
        await until(pilot, lambda: "not a cron expression" in str(error.render()))
        assert isinstance(app.screen, PolicyModal)  # the form stays, as it was typed
        assert "pg-nightly" not in state.policies.policies
        await fill(pilot, form.query_one("#pf-schedule", Input), *"30 1 * * *", "enter")
        await until(pilot, lambda: isinstance(app.screen, PoliciesScreen))
        await settle(pilot)
        listed = {row[0]: row for row in rows(app)}
        assert listed["pg-nightly"][3] == "11-30 01:30"
        assert "s3cr3t" not in app.export_screenshot() + words_shown(app)
    sent = state.policies.added[-1]
    assert sent.model_dump(exclude={"notify"}) == {
        "name": "pg-nightly",
        "repository_id": 1,
        "schedule": "30 1 * * *",
        "timezone": "Europe/Berlin",
        "include": [PG, "/DC0/vm/db"],
        "exclude": ["/DC0/vm/db/DC0_VM4"],
        "backup_type": BackupType.AUTO,
        "retention": Retention(keep_last=7, keep_weekly=4).model_dump(),
        "notify_on_success": True,
        "enabled": True,
    }
    assert [url.get_secret_value() for url in sent.notify] == [SECRET_URL]
    assert state.policies.policies["pg-nightly"].notify == ["json://127.0.0.1:9/****"]


async def test_a_form_the_models_refuse_says_so_before_asking_the_hub(tmp_path: Path) -> None:
    state = fleet_state()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot, "a")
        await fill(pilot, form.query_one("#pf-name", Input), *"empty")
        await fill(pilot, form.query_one("#pf-schedule", Input), *"0 1 * * *")
        await pilot.press("ctrl+s")
        assert "include: at least one inventory path" in text_of(app, "form-error")
    assert state.policies.added == []


async def test_edit_is_filled_in_and_sends_only_what_changed(tmp_path: Path) -> None:
    state = fleet_state()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(app, pilot, "e")
        values = {w.id: w.value for w in form.query(Input).results() if w.value}
        assert values == {
            "pf-name": "nightly-db",
            "pf-schedule": "0 22 * * *",
            "pf-timezone": "Europe/Berlin",
            "pf-keep-last": "7",
            "pf-keep-daily": "14",
            "pf-keep-weekly": "8",
            "pf-keep-monthly": "12",
        }
        assert form.query_one("#pf-include", TextArea).text == f"{PG}\n/DC0/vm/db"
        assert form.query_one("#pf-exclude", TextArea).text == "/DC0/vm/db/DC0_VM4"
        assert "now json://hooks.example.com/****; empty keeps" in words_shown(app)
        await pilot.press("ctrl+s")
        assert "nothing changed" in text_of(app, "form-error")
        await fill(pilot, form.query_one("#pf-keep-daily", Input), *"30", "enter")
        await until(pilot, lambda: isinstance(app.screen, PoliciesScreen))
        await settle(pilot)
        assert rows(app)[0][5] == "last 7 · 30d 8w 12m"
    name, edit = state.policies.edits[-1]
    assert (name, edit.model_fields_set) == ("nightly-db", {"retention"})
    assert edit.retention == Retention(keep_last=7, keep_daily=30, keep_weekly=8, keep_monthly=12)


# -- run now, enable, delete ------------------------------------------------------------------


async def test_run_now_asks_first_then_shows_the_run_queued(tmp_path: Path) -> None:
    state = fleet_state()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=SIZE) as pilot:
        await steps("8", "r")(pilot)
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("enter")  # No, the default
        await settle(pilot)
        assert state.policies.runs_asked == []
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("tab", "enter")
        await until(pilot, lambda: isinstance(app.screen, PolicyScreen))
        await settle(pilot)
        assert column(app, "runs-table", "run")[0] == "#32"
        assert text_of(app, "run-title").startswith("run #32 running 0/3 · manual")
        # Queued behind hourly-web's two; pgtest1 is backing up already: never twice.
        vms = {row[0]: (row[1], row[5]) for row in rows(app, "run-vms")}
        assert vms == {
            "pgtest1": ("not queued", "a backup of pgtest1 is queued or running already"),
            "DC0_VM0": ("queued #3", ""),
            "DC0_VM2": ("queued #4", ""),
        }
    assert state.policies.runs_asked == ["nightly-db"]


async def test_space_disables_and_delete_asks_then_removes(tmp_path: Path) -> None:
    state = fleet_state()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=SIZE) as pilot:
        await steps("8", "space")(pilot)
        assert rows(app)[0][:2] == ["nightly-db", "off"]
        assert rows(app)[0][3] == "—"  # no next run while disabled
        await steps("t")(pilot)
        assert rows(app)[0][1] == "on"
        await steps("enter", "d")(pilot)  # from the policy's own screen
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("tab", "enter")
        await until(pilot, lambda: isinstance(app.screen, PoliciesScreen))
        await settle(pilot)
        assert [row[0] for row in rows(app)] == ["hourly-web", "weekly-all"]
    assert state.policies.toggles == [("nightly-db", False), ("nightly-db", True)]
    assert state.policies.deleted == ["nightly-db"]


# -- the queue ----------------------------------------------------------------------------


async def test_queued_jobs_show_their_place_and_cancel_takes_one_out(tmp_path: Path) -> None:
    state = fleet_state()
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=SIZE) as pilot:
        await steps("2")(pilot)
        table = "jobs-table"
        assert column(app, table, "state") == [
            "running",
            "running",
            "queued #1",
            "queued #2",
            "completed",
        ]
        assert column(app, table, "node") == ["local", "local", "", "", "local"]
        assert column(app, table, "policy")[:4] == ["hourly-web", "", "hourly-web", "hourly-web"]
        await steps("j", "j")(pilot)
        assert isinstance(app.screen, JobsScreen)
        assert app.screen.selected == "backup-DC0_VM3-1795942801"
        assert "waits: ESXi host host-11 has its limit of 2 disk(s) running" in (
            text_of(app, "job-title")
        )
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        assert "out of the queue" in str(app.screen.query_one("Label").render())
        await pilot.press("tab", "enter")
        jobs = app.state.store.jobs
        await until(pilot, lambda: jobs["backup-DC0_VM3-1795942801"].status is JobStatus.CANCELLED)
        await steps("r")(pilot)  # the queue as the hub has it now: DC0_VM5 moved up
        await until(pilot, lambda: column(app, table, "state")[2:4] == ["queued #1", "cancelled"])
    assert state.backups.cancelled == ["backup-DC0_VM3-1795942801"]


async def test_several_marked_vms_are_queued_one_job_each(tmp_path: Path) -> None:
    state = StandinState(lab_inventory())
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await until(pilot, lambda: app.state.inventories)
        app.state.marks.update({(1, "/DC0/vm/db/DC0_VM0"), (1, "/DC0/vm/db/DC0_VM2")})
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, BackupModal))
        await settle(pilot)
        shown = words_shown(app)
        assert "Will queue 2 VMs, one job each" in shown and "enter queues the backups" in shown
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen))
        await settle(pilot)
        vms, states = column(app, "jobs-table", "VM"), column(app, "jobs-table", "state")
        by_vm = dict(zip(vms, states, strict=True))
        assert by_vm["DC0_VM0"] == "queued #1" and by_vm["DC0_VM2"] == "queued #2"
    assert [len(q.backups) for q in state.backups.queued] == [2]
    assert [r.vm_context_id for r in state.backups.requests] == ["ctx-DC0_VM0", "ctx-DC0_VM2"]


async def test_a_queue_the_hub_refuses_stays_in_the_modal_and_nothing_is_queued(
    tmp_path: Path,
) -> None:
    state = StandinState(lab_inventory())
    app = frozen_app(tmp_path, state)  # pgtest1 is backing up
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await until(pilot, lambda: app.state.inventories)
        app.state.marks.update({(1, PG), (1, "/DC0/vm/db/DC0_VM0")})
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, BackupModal))
        await settle(pilot)
        await pilot.press("enter")
        error = app.screen.query_one("#backup-error", Static)
        await until(pilot, lambda: "nothing queued" in str(error.render()))
        assert "a backup of pgtest1 is queued or running already" in str(error.render())
        assert isinstance(app.screen, BackupModal)
    assert state.backups.queued == []


async def test_one_vm_still_starts_at_once(tmp_path: Path) -> None:
    state = StandinState(lab_inventory())
    app = frozen_app(tmp_path, state)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await until(pilot, lambda: app.state.inventories)
        app.state.marks.add((1, "/DC0/vm/db/DC0_VM0"))
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, BackupModal))
        await settle(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen))
    assert state.backups.queued == []
    assert [r.vm_context_id for r in state.backups.requests] == ["ctx-DC0_VM0"]


# -- nodes ---------------------------------------------------------------------------------


async def test_nodes_show_state_load_throughput_and_why_one_is_down(tmp_path: Path) -> None:
    app = frozen_app(tmp_path, fleet_state())
    async with app.run_test(size=SIZE) as pilot:
        await steps("5")(pilot)
        shown = {row[0]: row[1:8] for row in rows(app)}
        why = text_of(app, "nodes-why")
        header = words_shown(app)
    assert shown["local"] == [
        "up",
        "1/4",
        "2/8",
        "144.0 MiB/s",
        "5.5 GiB",
        "127.0.0.1:8989",
        "11-29 09:00:00",
    ]
    assert shown["node-b"][5] == "every vCenter"
    assert shown["node-c"][:3] == ["down", "0/2", "0/4"]
    assert why == (
        "node-c is down: no heartbeat for 95s (down after 60s); its queued work goes to other nodes"
    )
    assert "nodes ● 2 up ○ 1 down" in header


# -- on the real hub ------------------------------------------------------------------------


async def test_a_policy_on_the_real_hub_resolved_run_and_watched_to_its_end(
    services: Services, tmp_path: Path
) -> None:
    cluster = "/DC0/host/DC0_C0"
    async with hub(services) as api:
        await api.add_policy(
            PolicyIn(
                name="cluster",
                repository_id=1,
                schedule="0 22 * * *",
                timezone="Europe/Berlin",
                include=[cluster],
                exclude=["/DC0/host/DC0_C0/DC0_C0_H1"],  # where DC0_C0_RP0_VM0 runs
                retention=Retention(keep_last=2),
            )
        )
    app = console(services, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8")
        await until(pilot, lambda: isinstance(app.screen, PoliciesScreen) and rows(app))
        assert rows(app)[0][:2] == ["cluster", "on"] and rows(app)[0][4] == "never"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, PolicyScreen))
        await pilot.press("p")
        await until(pilot, lambda: rows(app, "vms-table"))
        covered = {row[0]: row[1:3] for row in rows(app, "vms-table")}
        assert covered == {
            "DC0_C0_RP0_VM1": ["yes", cluster],
            "DC0_C0_RP0_VM0": ["left out", "/DC0/host/DC0_C0/DC0_C0_H1"],
        }
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("tab", "enter")
        # The run's job moves on the event stream; its end brings the run's own end.
        await until(pilot, lambda: "completed 1/1" in column(app, "runs-table", "state"))
        (vm,) = rows(app, "run-vms")
        assert vm[:3] == ["DC0_C0_RP0_VM1", "completed", "full"] and vm[3].endswith("MiB")
    async with hub(services) as api:
        (run,) = await api.policy_runs("cluster")
    assert [v.status for v in run.vms] == [JobStatus.COMPLETED]


# -- words -----------------------------------------------------------------------------------


def test_policy_times_are_in_its_zone_across_daylight_saving() -> None:
    assert policy_text.when(datetime(2026, 7, 1, 20, 0), "Europe/Berlin") == "07-01 22:00"
    assert policy_text.when(datetime(2026, 11, 29, 21, 0), "Europe/Berlin") == "11-29 22:00"
    assert policy_text.when(datetime(2026, 11, 29, 21, 0), "Not/AZone") == "11-29 21:00"
    assert policy_text.when(None, "UTC") == ""


def test_retention_in_one_short_line() -> None:
    assert policy_text.retention_words(Retention()) == "keeps all"
    assert policy_text.retention_words(Retention(keep_last=3)) == "last 3"
    assert policy_text.retention_words(Retention(keep_daily=7, keep_yearly=2)) == "7d 2y"
    full = Retention(keep_last=1, keep_daily=2, keep_weekly=3, keep_monthly=4, keep_yearly=5)
    assert policy_text.retention_words(full) == "last 1 · 2d 3w 4m 5y"
