"""The stand-in hub's policies, their runs, retention plans and nodes with their load
(tests/tui_standin_hub.py serves them), built from the contract's models so the console
meets the shapes the real hub sends.

A policy's paths are resolved in the stand-in's inventory as the hub resolves them: a
VM's own path, a folder's VMs, a cluster's or host's VMs. A run queues one job per VM
(``add_job``, queued) and stays running; what a test needs beyond that it sets in
``runs``, ``plans`` and ``vms_refused``. What the console sent is kept (``added``, ``edits``,
``toggles``, ``deleted``, ``runs_asked``) for the tests to check. ``fleet`` fills the
frozen data of the snapshots: three policies, their runs, a queue and three nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from engine.contract.hub import Job, NodeInfo
from engine.contract.inventory import Inventory, VMInfo
from engine.contract.policy import (
    Policy,
    PolicyEdit,
    PolicyIn,
    PolicyPreview,
    PolicyRun,
    PolicyRunVM,
    PolicyVM,
    Retention,
    RetentionDecision,
    RetentionPlan,
)
from engine.contract.status import (
    OPEN_JOB,
    BackupType,
    JobStatus,
    NodeState,
    PolicyRunStatus,
    RunTrigger,
)
from tests.tui_standin_restores import _refused

GiB, MiB = 2**30, 2**20
Refusal = tuple[int, str]


def redact(url: str) -> str:
    """As the hub shows a notification URL: its scheme and host, the rest hidden."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/****"


def local_node(at: datetime) -> NodeInfo:
    """The one node of the stand-in, running the frozen data's jobs."""
    return NodeInfo(
        id=1,
        name="local",
        url="http://127.0.0.1:8081",
        enabled=True,
        state=NodeState.UP,
        vcenters=["127.0.0.1:8989"],
        max_jobs=4,
        max_disks=8,
        jobs_active=1,
        disks_active=2,
        throughput_bps=144 * MiB,
        bytes_last_hour=int(5.5 * GiB),
        last_seen_at=at,
    )


class StandinPolicies:
    def __init__(
        self,
        inventory: Inventory,
        jobs: dict[str, Job],
        add_job: Callable[..., Job],
        at: datetime,
    ) -> None:
        self.inventory = inventory
        self.jobs = jobs  # the stand-in's backup jobs, by id
        self.add_job = add_job  # StandinState.add_job: queues a run's VMs
        self.at = at
        self.policies: dict[str, Policy] = {}
        self.runs: dict[int, PolicyRun] = {}
        self.plans: dict[str, RetentionPlan] = {}  # by policy name
        self.nodes: list[NodeInfo] = [local_node(at)]
        self.vms_refused: Refusal | None = None  # the preview's answer, when a test sets it
        self.added: list[PolicyIn] = []
        self.edits: list[tuple[str, PolicyEdit]] = []
        self.toggles: list[tuple[str, bool]] = []
        self.deleted: list[str] = []
        self.runs_asked: list[str] = []

    # -- paths ----------------------------------------------------------------------------

    def _hosts_under(self, path: str) -> set[str]:
        """The morefs of the hosts at or under a cluster's or host's path."""
        return {
            e.moref
            for e in self.inventory.entities
            if e.kind == "HostSystem" and (e.path == path or e.path.startswith(path + "/"))
        }

    def _match(self, vm: VMInfo, paths: list[str]) -> str | None:
        for path in paths:
            if vm.path == path or vm.path.startswith(path.rstrip("/") + "/"):
                return path
            if vm.host in self._hosts_under(path):
                return path
        return None

    def resolve(self, policy: Policy) -> PolicyPreview:
        covered: list[PolicyVM] = []
        excluded: list[PolicyVM] = []
        for vm in self.inventory.vms:
            by = self._match(vm, policy.include)
            if by is None:
                continue
            out = self._match(vm, policy.exclude)
            (excluded if out else covered).append(
                PolicyVM(
                    vm_name=vm.name,
                    vm_path=vm.path,
                    vcenter_host=self.inventory.vcenter,
                    matched_by=out or by,
                )
            )
        return PolicyPreview(policy=policy.name, vms=covered, excluded=excluded)

    def _unknown_path(self, paths: list[str]) -> str | None:
        known = {e.path for e in self.inventory.entities}
        for path in paths:
            if path in known:
                continue
            if not any(self._match(vm, [path]) for vm in self.inventory.vms):
                return path
        return None

    # -- policies ---------------------------------------------------------------------------

    def next_run(self, schedule: str, zone: str) -> datetime:
        start = self.at.astimezone(ZoneInfo(zone))
        return croniter(schedule, start).get_next(datetime).astimezone(UTC)

    def check(self, fields: dict[str, Any]) -> Refusal | None:
        """The hub's refusals of a policy's fields, in its words."""
        if fields["repository_id"] != 1:
            return 404, f"no repository {fields['repository_id']}"
        if not croniter.is_valid(fields["schedule"]):
            return 422, (
                f"schedule {fields['schedule']!r}: not a cron expression "
                "(five fields: minute hour day month weekday)"
            )
        try:
            ZoneInfo(fields["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            return 422, f"timezone {fields['timezone']!r}: not a known zone (as Europe/Berlin)"
        unknown = self._unknown_path(fields["include"] + fields["exclude"])
        if unknown:
            return 422, f"path {unknown!r}: no VM, folder, cluster, host or pool there"
        return None

    def store(self, fields: dict[str, Any], policy_id: int) -> Policy:
        policy = Policy.model_validate(
            {
                **fields,
                "id": policy_id,
                "next_run_at": (
                    self.next_run(fields["schedule"], fields["timezone"])
                    if fields["enabled"]
                    else None
                ),
                "created_at": fields.get("created_at") or self.at,
                "updated_at": self.at,
            }
        )
        self.policies[policy.name] = policy
        return policy

    def add(self, request: PolicyIn) -> Policy | Refusal:
        self.added.append(request)
        if request.name in self.policies:
            return 409, f"policy {request.name} exists already"
        fields = request.model_dump()
        fields["notify"] = [redact(url.get_secret_value()) for url in request.notify]
        refused = self.check(fields)
        if refused:
            return refused
        return self.store(fields, max((p.id for p in self.policies.values()), default=0) + 1)

    def edit(self, name: str, request: PolicyEdit) -> Policy | Refusal:
        self.edits.append((name, request))
        policy = self.policies.get(name)
        if policy is None:
            return 404, f"no policy {name}"
        fields = {**policy.model_dump(), **request.model_dump(exclude_unset=True)}
        if request.notify is not None:
            fields["notify"] = [redact(url.get_secret_value()) for url in request.notify]
        refused = self.check(fields)
        if refused:
            return refused
        del self.policies[name]
        return self.store(fields, policy.id)

    def set_enabled(self, name: str, enabled: bool) -> Policy | Refusal:
        self.toggles.append((name, enabled))
        policy = self.policies.get(name)
        if policy is None:
            return 404, f"no policy {name}"
        return self.store({**policy.model_dump(), "enabled": enabled}, policy.id)

    def run(self, name: str) -> PolicyRun | Refusal:
        self.runs_asked.append(name)
        policy = self.policies.get(name)
        if policy is None:
            return 404, f"no policy {name}"
        preview = self.resolve(policy)
        if not preview.vms:
            return 422, f"policy {name} covers no VM now: nothing to run"
        run_id = max(self.runs, default=0) + 1
        vms = []
        for covered in preview.vms:
            vm = next(v for v in self.inventory.vms if v.path == covered.vm_path)
            entry = PolicyRunVM(vm_name=vm.name, vm_path=vm.path, vcenter_host=covered.vcenter_host)
            if any(j.vm_name == vm.name and j.status in OPEN_JOB for j in self.jobs.values()):
                entry.error = f"a backup of {vm.name} is queued or running already"
            else:
                job = self.add_job(vm, JobStatus.QUEUED, policy=name, run_id=run_id)
                entry.backup_id, entry.status = job.backup_id, job.status
                entry.queue_position = job.queue_position
            vms.append(entry)
        run = PolicyRun(
            id=run_id,
            policy_id=policy.id,
            policy_name=name,
            trigger=RunTrigger.MANUAL,
            started_at=self.at,
            status=PolicyRunStatus.RUNNING,
            vms=vms,
        )
        self.runs[run_id] = run
        self.policies[name] = policy.model_copy(update={"last_run": run})
        return run

    def runs_of(self, name: str, limit: int) -> list[PolicyRun]:
        runs = [r for r in self.runs.values() if r.policy_name == name]
        return sorted(runs, key=lambda r: r.id, reverse=True)[:limit]


def policy_routes(data: StandinPolicies) -> APIRouter:
    router = APIRouter()

    def answer(result: Any) -> Any:
        return _refused(*result) if isinstance(result, tuple) else result

    @router.get("/policies")
    async def policies() -> list[Policy]:
        return sorted(data.policies.values(), key=lambda p: p.id)

    @router.post("/policies", status_code=201, response_model=None)
    async def add(request: PolicyIn) -> Policy | JSONResponse:
        return answer(data.add(request))

    @router.get("/policies/{name}", response_model=None)
    async def show(name: str) -> Policy | JSONResponse:
        return data.policies.get(name) or _refused(404, f"no policy {name}")

    @router.patch("/policies/{name}", response_model=None)
    async def edit(name: str, request: PolicyEdit) -> Policy | JSONResponse:
        return answer(data.edit(name, request))

    @router.delete("/policies/{name}", response_model=None)
    async def delete(name: str) -> Response:
        if data.policies.pop(name, None) is None:
            return _refused(404, f"no policy {name}")
        data.deleted.append(name)
        return Response(status_code=204)

    @router.post("/policies/{name}/enable", response_model=None)
    async def enable(name: str) -> Policy | JSONResponse:
        return answer(data.set_enabled(name, True))

    @router.post("/policies/{name}/disable", response_model=None)
    async def disable(name: str) -> Policy | JSONResponse:
        return answer(data.set_enabled(name, False))

    @router.get("/policies/{name}/vms", response_model=None)
    async def vms(name: str) -> PolicyPreview | JSONResponse:
        policy = data.policies.get(name)
        if policy is None:
            return _refused(404, f"no policy {name}")
        return _refused(*data.vms_refused) if data.vms_refused else data.resolve(policy)

    @router.post("/policies/{name}/run", response_model=None)
    async def run(name: str) -> PolicyRun | JSONResponse:
        return answer(data.run(name))

    @router.get("/policies/{name}/runs")
    async def runs(name: str, limit: int = 20) -> list[PolicyRun]:
        return data.runs_of(name, limit)

    @router.get("/policy-runs/{run_id}", response_model=None)
    async def policy_run(run_id: int) -> PolicyRun | JSONResponse:
        return data.runs.get(run_id) or _refused(404, f"no policy run {run_id}")

    @router.get("/retention/plan")
    async def plan(policy: str | None = None) -> RetentionPlan:
        return data.plans.get(policy or "", RetentionPlan(policy=policy))

    @router.get("/nodes")
    async def nodes() -> list[NodeInfo]:
        return data.nodes

    return router


# -- the frozen fleet of the snapshots ------------------------------------------------------

NIGHTLY, HOURLY, WEEKLY = "nightly-db", "hourly-web", "weekly-all"
PG = "/DatabanxDC/vm/pgtest1"


def fleet(data: StandinPolicies) -> None:
    """Three policies (one with a failed night, one running with a queue, one disabled),
    their runs, a retention plan, and three nodes, one of them down."""
    at = data.at
    nightly = data.store(
        {
            "name": NIGHTLY,
            "repository_id": 1,
            "schedule": "0 22 * * *",
            "timezone": "Europe/Berlin",
            "include": [PG, "/DC0/vm/db"],
            "exclude": ["/DC0/vm/db/DC0_VM4"],
            "backup_type": BackupType.AUTO,
            "retention": Retention(keep_last=7, keep_daily=14, keep_weekly=8, keep_monthly=12),
            "notify": ["json://hooks.example.com/****"],
            "notify_on_success": False,
            "enabled": True,
        },
        1,
    )
    night = at.replace(hour=21) - timedelta(days=1)  # 22:00 in Berlin, the night before
    _night_runs(data, nightly, night)
    hourly = data.store(
        {
            "name": HOURLY,
            "repository_id": 1,
            "schedule": "0 * * * *",
            "timezone": "UTC",
            "include": ["/DC0/vm/web"],
            "exclude": [],
            "backup_type": BackupType.INCREMENTAL,
            "retention": Retention(keep_last=24),
            "notify": [],
            "notify_on_success": False,
            "enabled": True,
        },
        2,
    )
    _hourly_run(data, hourly)
    data.store(
        {
            "name": WEEKLY,
            "repository_id": 1,
            "schedule": "30 3 * * 0",
            "timezone": "UTC",
            "include": ["/DC0/host/DC0_C0"],
            "exclude": [],
            "backup_type": BackupType.FULL,
            "retention": Retention(),
            "notify": [],
            "notify_on_success": False,
            "enabled": False,
        },
        3,
    )
    data.plans[NIGHTLY] = _plan(night)
    data.nodes = [
        local_node(at),
        NodeInfo(
            id=2,
            name="node-b",
            url="http://10.0.0.12:8081",
            enabled=True,
            state=NodeState.UP,
            max_jobs=4,
            max_disks=8,
            bytes_last_hour=int(1.2 * GiB),
            last_seen_at=at - timedelta(seconds=5),
        ),
        NodeInfo(
            id=3,
            name="node-c",
            url="http://10.0.0.13:8081",
            enabled=True,
            state=NodeState.DOWN,
            error="no heartbeat for 95s (down after 60s); its queued work goes to other nodes",
            vcenters=["vc2.example.com"],
            max_jobs=2,
            max_disks=4,
            last_seen_at=at - timedelta(seconds=95),
        ),
    ]


def _vm(name: str, status: JobStatus | None, **fields: Any) -> PolicyRunVM:
    path = PG if name == "pgtest1" else f"/DC0/vm/db/{name}"
    return PolicyRunVM(
        vm_name=name, vm_path=path, vcenter_host="127.0.0.1:8989", status=status, **fields
    )


def _night_runs(data: StandinPolicies, policy: Policy, night: datetime) -> None:
    ok = JobStatus.COMPLETED
    failed = _vm(
        "DC0_VM2",
        JobStatus.FAILED,
        backup_id="backup-DC0_VM2-1795900000",
        backup_type=BackupType.FULL,
        bytes_transferred=0,
        duration_seconds=12,
        error="vCenter refused the snapshot: the VM's disks are locked by another task",
    )
    runs = [
        PolicyRun(
            id=10,
            policy_id=policy.id,
            policy_name=policy.name,
            trigger=RunTrigger.SCHEDULE,
            scheduled_for=night - timedelta(days=2),
            status=PolicyRunStatus.MISSED,
            error="the hub was down at its time and came back past the grace window (1h)",
        ),
        PolicyRun(
            id=11,
            policy_id=policy.id,
            policy_name=policy.name,
            trigger=RunTrigger.SCHEDULE,
            scheduled_for=night - timedelta(days=1),
            started_at=night - timedelta(days=1),
            finished_at=night - timedelta(days=1) + timedelta(minutes=38, seconds=20),
            status=PolicyRunStatus.COMPLETED,
            vms=[
                _vm(n, ok, backup_type=BackupType.INCREMENTAL, bytes_transferred=40 * MiB)
                for n in ("pgtest1", "DC0_VM0", "DC0_VM2")
            ],
        ),
        PolicyRun(
            id=12,
            policy_id=policy.id,
            policy_name=policy.name,
            trigger=RunTrigger.SCHEDULE,
            scheduled_for=night,
            started_at=night + timedelta(seconds=5),
            finished_at=night + timedelta(minutes=41, seconds=10),
            status=PolicyRunStatus.FAILED,
            vms=[
                _vm(
                    "pgtest1",
                    ok,
                    backup_id="backup-pgtest1-1795899605",
                    backup_type=BackupType.INCREMENTAL,
                    bytes_transferred=96 * MiB,
                    duration_seconds=312,
                ),
                _vm(
                    "DC0_VM0",
                    ok,
                    backup_id="backup-DC0_VM0-1795899700",
                    backup_type=BackupType.FULL,
                    bytes_transferred=48 * MiB,
                    duration_seconds=95,
                ),
                failed,
            ],
            retention=[
                "merged backup-DC0_VM0-1794900000 into backup-DC0_VM0-1794986400",
                "kept backup-DC0_VM2-1794700000 for now: it is being read (an instant export)",
            ],
        ),
    ]
    for run in runs:
        data.runs[run.id] = run
    data.policies[policy.name] = policy.model_copy(update={"last_run": runs[-1]})


def _hourly_run(data: StandinPolicies, policy: Policy) -> None:
    """The 09:00 run: DC0_VM1 copying, DC0_VM3 and DC0_VM5 queued behind it."""
    run_id = 31
    entries = []
    for n, name in enumerate(("DC0_VM1", "DC0_VM3", "DC0_VM5")):
        vm = next(v for v in data.inventory.vms if v.name == name)
        status = JobStatus.RUNNING if n == 0 else JobStatus.QUEUED
        job = data.add_job(
            vm,
            status,
            done_fraction=0.3 if n == 0 else 0.0,
            rate=32 * MiB,
            job_id=f"backup-{name}-{1795942800 + n}",
            policy=policy.name,
            run_id=run_id,
        )
        if status is JobStatus.QUEUED:
            job.waiting_reason = "ESXi host host-11 has its limit of 2 disk(s) running"
        entries.append(
            PolicyRunVM(
                vm_name=name,
                vm_path=vm.path,
                vcenter_host="127.0.0.1:8989",
                backup_id=job.backup_id,
                status=job.status,
                queue_position=job.queue_position,
                backup_type=BackupType.INCREMENTAL,
            )
        )
    run = PolicyRun(
        id=run_id,
        policy_id=policy.id,
        policy_name=policy.name,
        trigger=RunTrigger.SCHEDULE,
        scheduled_for=data.at,
        started_at=data.at,
        status=PolicyRunStatus.RUNNING,
        vms=entries,
    )
    data.runs[run_id] = run
    data.policies[policy.name] = policy.model_copy(update={"last_run": run})


def _plan(night: datetime) -> RetentionPlan:
    def decision(vm: str, days: int, **fields: Any) -> RetentionDecision:
        taken = night - timedelta(days=days)
        point = f"backup-{vm}-{int(taken.timestamp())}"
        return RetentionDecision(
            point_id=point, vm_name=vm, policy=NIGHTLY, taken_at=taken, **fields
        )

    incr, full = BackupType.INCREMENTAL, BackupType.FULL
    return RetentionPlan(
        policy=NIGHTLY,
        points=[
            decision("pgtest1", 0, backup_type=incr, action="keep", reasons=["last 7", "daily"]),
            decision("pgtest1", 9, backup_type=full, action="keep", reasons=["weekly 2026-W47"]),
            decision(
                "DC0_VM0",
                19,
                backup_type=incr,
                action="merge",
                reasons=["outside every rule"],
                into_point_id="backup-DC0_VM0-1794986400",
            ),
            decision(
                "DC0_VM2",
                28,
                backup_type=full,
                action="delete",
                reasons=["outside every rule"],
                blocked="being read (an instant export)",
            ),
            decision(
                "DC0_VM2",
                1,
                backup_type=full,
                action="keep",
                reasons=["the VM's last good point"],
            ),
        ],
    )
