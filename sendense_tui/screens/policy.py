"""One policy: its settings, then three panes: its recent runs with each VM's result
(state, bytes, time taken, error), the VMs it covers if it ran now (the hub resolves
its paths in vCenter's inventory: what matched each, and what is left out), and what
retention would expire now and why.

A run's VMs are the run as the hub last told it, with each open job's state and bytes
from the console's live store, so a run being watched moves without asking; when a job
of the policy changes state, the runs are asked for again (and every few seconds while
one is on: a run ends after its last job, without an event). The preview and the plan
may fail on their own (a vCenter down): each says so in its pane.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from engine.contract.policy import (
    Policy,
    PolicyPreview,
    PolicyRun,
    PolicyRunVM,
    PolicyVM,
    RetentionDecision,
    RetentionPlan,
)
from engine.contract.status import BackupType, PolicyRunStatus
from sendense_tui import fmt, policy_text
from sendense_tui.keymap import bindings
from sendense_tui.screens.policy_keys import PolicyKeys
from sendense_tui.state import ConsoleState
from sendense_tui.widgets.header import HubHeader
from sendense_tui.widgets.tables import refill

RUNS_SHOWN = 20
PATHS_SHOWN = 4  # of a policy's includes and excludes, in its title
RUN_COLUMNS = {"run": 5, "for": 11, "trigger": 8, "state": 14, "took": 7, "why": None}
RUN_VM_COLUMNS = {
    "VM": 14,
    "state": 11,
    "type": 4,
    "bytes": 10,
    "took": 7,
    "error": None,
    "backup id": None,
}
VM_COLUMNS = {"VM": 14, "covered": 8, "by path": None, "vCenter": None, "path": None}
RETENTION_COLUMNS = {
    "VM": 14,
    "taken": 11,
    "type": 4,
    "action": 6,
    "why": None,
    "point": None,
}
PANES = ("pane-runs", "pane-vms", "pane-retention")
TYPE_SHORT = {BackupType.FULL: "full", BackupType.INCREMENTAL: "incr", BackupType.AUTO: "auto"}
ACTION_STYLE = {"keep": "green", "delete": "bold red", "merge": "yellow"}
RETENTION_LINES = 3


def policy_jobs(state: ConsoleState, name: str | None) -> tuple[tuple[Any, ...], ...]:
    """The jobs of policy ``name`` (None: of any policy) as their states and places: when
    this changes, a run moved."""
    return tuple(
        (job.backup_id, job.status, job.queue_position)
        for job in state.store.jobs.values()
        if job.policy_name is not None and name in (None, job.policy_name)
    )


class PolicyScreen(PolicyKeys):
    BINDINGS = bindings(
        "policies.edit",
        "policies.run",
        "policies.toggle",
        "policies.delete",
        "policies.refresh",
        "policy.pane",
        "policy.back",
    )

    def __init__(self, state: ConsoleState, policy: Policy, run_id: int | None = None) -> None:
        super().__init__(state)
        self.policy = policy
        self.runs: list[PolicyRun] = []
        self.run_id = run_id  # the run shown below the runs
        self._jobs_seen = policy_jobs(state, policy.name)

    def compose(self) -> ComposeResult:
        yield HubHeader(self.state)
        yield Static(id="policy-title")
        with TabbedContent(id="policy-panes"):
            with TabPane("runs", id="pane-runs"):
                yield DataTable(id="runs-table", cursor_type="row", classes="runs-table")
                yield Static(id="run-title")
                yield DataTable(id="run-vms", cursor_type="row", classes="pane-table")
            with TabPane("VMs now", id="pane-vms"):
                yield Static(id="vms-status", classes="pane-status")
                yield DataTable(id="vms-table", cursor_type="row", classes="pane-table")
            with TabPane("retention", id="pane-retention"):
                yield Static(id="retention-status", classes="pane-status")
                yield DataTable(id="retention-table", cursor_type="row", classes="pane-table")
        yield Footer()

    def on_mount(self) -> None:
        self._show_policy(self.policy)
        self.query_one("#runs-table", DataTable).focus()
        self.action_refresh()

    # -- asking the hub -----------------------------------------------------------------------

    def action_refresh(self) -> None:
        name = self.policy.name
        client = self.state.client
        self.call_hub(client.policy(name), self._show_policy, name="policy")
        self._load_runs()
        self.query_one("#vms-status", Static).update(Text("resolving its paths…", style="dim"))
        self.call_hub(
            client.policy_vms(name),
            self._show_vms,
            name="vms",
            on_error=lambda words: self._pane_error("vms", words),
        )
        self.call_hub(
            client.retention_plan(name),
            self._show_plan,
            name="plan",
            on_error=lambda words: self._pane_error("retention", words),
        )

    def reload(self) -> None:
        self._load_runs()

    def _load_runs(self) -> None:
        self.call_hub(
            self.state.client.policy_runs(self.policy.name, RUNS_SHOWN), self._show_runs, "runs"
        )

    def _pane_error(self, pane: str, words: str) -> None:
        self.query_one(f"#{pane}-status", Static).update(Text(words, style="bold red"))

    # -- the policy ---------------------------------------------------------------------------

    def _show_policy(self, policy: Policy) -> None:
        self.policy = policy
        self.query_one("#policy-title", Static).update(self._title(policy))

    def _title(self, policy: Policy) -> Text:
        zone = policy.timezone
        text = Text()
        text.append(f"{policy.name} ", style="bold")
        text.append_text(policy_text.enabled_text(policy.enabled))
        text.append(f"  {policy.schedule}  {zone}")
        next_run = policy_text.when(policy.next_run_at, zone)
        text.append(f" · next {next_run}" if next_run else " · no next run", style="bold")
        repo = next((r for r in self.state.repositories if r.id == policy.repository_id), None)
        text.append(f"\ninto {repo.name if repo else f'repository {policy.repository_id}'}")
        text.append(f" · {policy.backup_type.value}")
        text.append(f" · {policy_text.retention_words(policy.retention)}")
        text.append(f"\ntakes {listed(policy.include)}")
        if policy.exclude:
            text.append(f" · leaves out {listed(policy.exclude)}")
        if policy.notify:
            when = "failure and success" if policy.notify_on_success else "failure"
            text.append(f"\nnotifies {', '.join(policy.notify)} on {when}", style="dim")
        else:
            text.append("\nno notification", style="dim")
        return text

    def chosen_policy(self) -> Policy | None:
        return self.policy

    def policy_changed(self, policy: Policy | None) -> None:
        if policy is None:
            self.app.pop_screen()
            return
        self._show_policy(policy)
        self.action_refresh()

    def run_started(self, run: PolicyRun) -> None:
        self.run_id = run.id
        self.query_one(TabbedContent).active = "pane-runs"
        self._show_runs([run, *(r for r in self.runs if r.id != run.id)])
        self._load_runs()

    # -- runs -----------------------------------------------------------------------------

    def _show_runs(self, runs: list[PolicyRun]) -> None:
        self.runs = runs
        ids = [str(run.id) for run in runs]
        if self.run_id is None or str(self.run_id) not in ids:
            self.run_id = runs[0].id if runs else None
        zone = self.policy.timezone
        rows = [
            (
                f"#{run.id}",
                policy_text.when(run.scheduled_for or run.started_at, zone),
                run.trigger.value,
                policy_text.run_state(run),
                took(run),
                run.error or "",
            )
            for run in runs
        ]
        cursor = ids.index(str(self.run_id)) if self.run_id is not None else 0
        refill(self.query_one("#runs-table", DataTable), RUN_COLUMNS, rows, ids, cursor)
        self._show_run()
        self.again_while(any(run.status is PolicyRunStatus.RUNNING for run in runs))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "runs-table" or event.row_key.value is None:
            return
        if event.row_key.value != str(self.run_id):
            self.run_id = int(event.row_key.value)
            self._show_run()

    def _run(self) -> PolicyRun | None:
        return next((run for run in self.runs if run.id == self.run_id), None)

    def _show_run(self) -> None:
        run = self._run()
        title = self.query_one("#run-title", Static)
        table = self.query_one("#run-vms", DataTable)
        if run is None:
            title.update(Text("No run yet: r runs it now.", style="dim"))
            refill(table, RUN_VM_COLUMNS, [])
            return
        title.update(self._run_title(run))
        vms = [self._live(vm) for vm in run.vms]
        rows = [
            (
                vm.vm_name,
                policy_text.vm_state(vm),
                TYPE_SHORT[vm.backup_type] if vm.backup_type else "",
                fmt.size(vm.bytes_transferred) if vm.bytes_transferred else "",
                fmt.duration(vm.duration_seconds) if vm.duration_seconds is not None else "",
                Text(vm.error or "", style="red"),
                vm.backup_id or "",
            )
            for vm in vms
        ]
        refill(table, RUN_VM_COLUMNS, rows, [vm.vm_path for vm in vms])

    def _live(self, vm: PolicyRunVM) -> PolicyRunVM:
        """The run's VM with its job's state and bytes from the live store, while open."""
        job = self.state.store.jobs.get(vm.backup_id or "")
        if job is None:
            return vm
        update: dict[str, Any] = {"status": job.status, "queue_position": job.queue_position}
        if not job.finished:
            update["bytes_transferred"] = job.bytes_done
        if job.error_message and not vm.error:
            update["error"] = job.error_message
        return vm.model_copy(update=update)

    def _run_title(self, run: PolicyRun) -> Text:
        text = Text()
        text.append(f"run #{run.id} ", style="bold")
        text.append_text(policy_text.run_state(run))
        done, total = policy_text.backed_up(run)
        zone = self.policy.timezone
        text.append(f" · {run.trigger.value}")
        if run.scheduled_for:
            text.append(f" for {policy_text.when(run.scheduled_for, zone)}")
        if run.started_at:
            text.append(f" · began {policy_text.when(run.started_at, zone)}")
        if total:
            text.append(f" · {done} of {total} VMs backed up")
        if run.error:
            text.append(f"\n{run.error}", style="bold red")
        if run.notify_error:
            text.append(f"\nnotification not sent: {run.notify_error}", style="yellow")
        for line in run.retention[:RETENTION_LINES]:
            text.append(f"\nretention: {line}", style="dim")
        if len(run.retention) > RETENTION_LINES:
            more = len(run.retention) - RETENTION_LINES
            text.append(f"\nretention: and {more} more", style="dim")
        return text

    def redraw_live(self) -> None:
        """A job of this policy changed state: its runs again; a running run's bytes move."""
        seen = policy_jobs(self.state, self.policy.name)
        if seen != self._jobs_seen:
            self._jobs_seen = seen
            self._load_runs()
        run = self._run()
        if run is not None and run.status is PolicyRunStatus.RUNNING:
            self._show_run()

    # -- the VMs it covers now --------------------------------------------------------------

    def _show_vms(self, preview: PolicyPreview) -> None:
        rows = [vm_row(vm, True) for vm in preview.vms]
        rows += [vm_row(vm, False) for vm in preview.excluded]
        keys = [f"{vm.vcenter_host}:{vm.vm_path}" for vm in (*preview.vms, *preview.excluded)]
        refill(self.query_one("#vms-table", DataTable), VM_COLUMNS, rows, keys)
        counted = f"{len(preview.vms)} VM(s) now"
        if preview.excluded:
            counted += f", {len(preview.excluded)} left out"
        status = Text(counted, style="bold")
        status.append(" · its paths resolved in vCenter's inventory now; a run resolves them then")
        self.query_one("#vms-status", Static).update(status)
        self.query_one(TabbedContent).get_tab("pane-vms").label = f"VMs now ({len(preview.vms)})"

    # -- retention --------------------------------------------------------------------------

    def _show_plan(self, plan: RetentionPlan) -> None:
        zone = self.policy.timezone
        rows = [decision_row(d, zone) for d in plan.points]
        keys = [d.point_id for d in plan.points]
        refill(self.query_one("#retention-table", DataTable), RETENTION_COLUMNS, rows, keys)
        going = len(plan.expiring)
        kept = len(plan.points) - going
        status = Text(f"{kept} point(s) kept, {going} would go", style="bold")
        status.append(" · what retention would do now (nothing is done here)")
        self.query_one("#retention-status", Static).update(status)
        label = f"retention ({going} go)" if going else "retention"
        self.query_one(TabbedContent).get_tab("pane-retention").label = label

    # -- keys -------------------------------------------------------------------------------

    def action_next_pane(self) -> None:
        panes = self.query_one(TabbedContent)
        pane = PANES[(PANES.index(panes.active) + 1) % len(PANES)] if panes.active else PANES[0]
        panes.active = pane
        table_of = {"pane-runs": "#runs-table", "pane-vms": "#vms-table"}
        self.query_one(table_of.get(pane, "#retention-table"), DataTable).focus()

    def action_back(self) -> None:
        self.app.pop_screen()


def listed(paths: list[str]) -> str:
    """A few paths, and how many more (the VMs now pane shows what they match)."""
    shown = ", ".join(paths[:PATHS_SHOWN])
    return shown + (f" and {len(paths) - PATHS_SHOWN} more" if len(paths) > PATHS_SHOWN else "")


def took(run: PolicyRun) -> str:
    if run.started_at is None or run.finished_at is None:
        return ""
    return fmt.duration((run.finished_at - run.started_at).total_seconds())


def vm_row(vm: PolicyVM, covered: bool) -> tuple[Any, ...]:
    """A VM the policy covers now, or one its excludes leave out, and the path why."""
    return (
        Text(vm.vm_name, style="" if covered else "dim"),
        Text("yes", style="green") if covered else Text("left out", style="yellow"),
        vm.matched_by,
        vm.vcenter_host,
        vm.vm_path,
    )


def decision_row(decision: RetentionDecision, zone: str) -> tuple[Any, ...]:
    """A point, what retention does with it and why (the rules that keep it, the child
    it is merged into, what it waits for)."""
    why = list(decision.reasons)
    if decision.action == "merge" and decision.into_point_id:
        why.append(f"merged into {decision.into_point_id}")
    if decision.blocked:
        why.append(f"waits: {decision.blocked}")
    return (
        decision.vm_name,
        policy_text.when(decision.taken_at, zone),
        TYPE_SHORT[decision.backup_type],
        Text(decision.action, style=ACTION_STYLE[decision.action]),
        "; ".join(why),
        decision.point_id,
    )
