"""Adding and editing a policy: name, repository, schedule and timezone, the inventory
paths it takes and leaves out, backup type, retention, notification targets, enabled.

Paths are one a line (enter makes a new line, so ctrl+s saves; enter in a one-line box
saves too). A new policy starts with the VMs marked in the inventory, the console's way
of picking paths. Notification URLs often hold a token: they are typed into a masked
box, and the hub shows them back only with their secrets hidden, so an edit cannot
show them: an empty box keeps them. An edit sends only the fields that changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Checkbox, Input, Label, RadioButton, RadioSet, TextArea

from engine.contract.hub import Repository
from engine.contract.policy import Policy, PolicyEdit, PolicyIn
from engine.contract.status import BackupType
from engine.errors import BadInput
from sendense_tui import fmt
from sendense_tui.keymap import bindings
from sendense_tui.screens.form import FormModal, heading, row
from sendense_tui.state import ConsoleState

TYPES = (BackupType.AUTO, BackupType.FULL, BackupType.INCREMENTAL)
KEEPS = ("last", "daily", "weekly", "monthly", "yearly")
INCLUDE_HINT = "inventory paths, one a line: VMs, folders, clusters, hosts, pools"


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def repository_choice(repositories: list[Repository], chosen: int | None) -> RadioSet:
    return RadioSet(
        *(
            RadioButton(
                f"{repo.name}  {fmt.size(repo.free_bytes)} free  ({repo.path})",
                value=repo.id == chosen or (chosen is None and i == 0),
                compact=True,
            )
            for i, repo in enumerate(repositories)
        ),
        id="pf-repository",
        compact=True,
    )


class PolicyModal(FormModal[Policy]):
    """A new policy (``policy`` None, ``include`` pre-filled), or the policy's edit."""

    BINDINGS = bindings("modal.save")
    HINT = "tab moves · space picks · ctrl+s {what} · esc goes back"
    ACTION = "saves"
    BOX = VerticalScroll
    BOX_CLASSES = "modal policy-modal"

    def __init__(
        self, state: ConsoleState, policy: Policy | None = None, include: Sequence[str] = ()
    ) -> None:
        super().__init__(state)
        self.policy = policy
        self.include = list(include)

    def form(self) -> ComposeResult:
        policy = self.policy
        if policy is None:
            yield from heading("Add a policy", "its VMs backed up on its schedule, kept as it says")
        else:
            yield from heading(f"Edit policy {policy.name}", "only what you change is sent")
        yield row("name", Input(policy.name if policy else "", id="pf-name", compact=True))
        chosen = policy.repository_id if policy else None
        yield row("repository", repository_choice(self.state.repositories, chosen), gap=True)
        schedule = Input(
            policy.schedule if policy else "",
            placeholder="cron: minute hour day month weekday, e.g. 0 22 * * *",
            id="pf-schedule",
            compact=True,
        )
        yield row("schedule", schedule, gap=True)
        zone = policy.timezone if policy else "UTC"
        yield row(
            "timezone", Input(zone, placeholder="Europe/Berlin", id="pf-timezone", compact=True)
        )
        include = policy.include if policy else self.include
        yield row("include", self._paths("pf-include", include, INCLUDE_HINT), gap=True)
        exclude = policy.exclude if policy else []
        yield row("exclude", self._paths("pf-exclude", exclude, "paths left out, one a line"))
        kind = policy.backup_type if policy else BackupType.AUTO
        types = RadioSet(
            *(RadioButton(t.value, value=t is kind, compact=True) for t in TYPES),
            id="pf-type",
            compact=True,
        )
        yield row("type", types, gap=True)
        yield row("keep", Horizontal(*self._keeps(), id="pf-keeps"))
        yield row(
            "notify",
            Input(
                placeholder="Apprise URLs, space between (json://…, mailto://…)",
                password=True,
                id="pf-notify",
                compact=True,
            ),
            gap=True,
        )
        if policy is not None and policy.notify:
            yield row("", Label(Text(f"now {', '.join(policy.notify)}; empty keeps", "dim")))
            yield row("", Checkbox("send no notification any more", id="pf-unnotify", compact=True))
        success = policy.notify_on_success if policy else False
        words = "on success too (always on failure)"
        yield row("", Checkbox(words, success, id="pf-success", compact=True))
        enabled = policy.enabled if policy else True
        words = "enabled: runs on its schedule"
        yield row("", Checkbox(words, enabled, id="pf-enabled", compact=True), gap=True)

    @staticmethod
    def _paths(widget_id: str, paths: list[str], hint: str) -> TextArea:
        return TextArea("\n".join(paths), id=widget_id, placeholder=hint, soft_wrap=False)

    def _keeps(self) -> ComposeResult:
        retention = self.policy.retention if self.policy else None
        for word in KEEPS:
            kept = getattr(retention, f"keep_{word}") if retention else None
            yield Label(word, classes="keep-label")
            yield Input(
                "" if kept is None else str(kept),
                type="integer",
                id=f"pf-keep-{word}",
                classes="keep",
                compact=True,
            )

    def on_mount(self) -> None:
        self.query_one("#pf-name", Input).focus()
        if not self.state.repositories:
            self.error("the hub has no repository: add one first (sendense repo add NAME PATH)")

    # -- what the form says ------------------------------------------------------------------

    def _fields(self) -> dict[str, Any]:
        """The form as ``PolicyIn``'s fields; ``notify`` only when typed (or removed)."""
        repositories = self.state.repositories
        if not repositories:
            raise BadInput("the hub has no repository to back up into")
        repo_index = max(self.query_one("#pf-repository", RadioSet).pressed_index, 0)
        type_index = max(self.query_one("#pf-type", RadioSet).pressed_index, 0)
        fields: dict[str, Any] = {
            "name": self.value("pf-name"),
            "repository_id": repositories[repo_index].id,
            "schedule": self.value("pf-schedule"),
            "timezone": self.value("pf-timezone") or "UTC",
            "include": lines(self.query_one("#pf-include", TextArea).text),
            "exclude": lines(self.query_one("#pf-exclude", TextArea).text),
            "backup_type": TYPES[type_index],
            "retention": {f"keep_{word}": self._keep(word) for word in KEEPS},
            "notify_on_success": self.query_one("#pf-success", Checkbox).value,
            "enabled": self.query_one("#pf-enabled", Checkbox).value,
        }
        if not fields["include"]:
            raise BadInput("include: at least one inventory path (a VM, folder, cluster, host…)")
        typed = self.value("pf-notify").split()
        if typed:
            fields["notify"] = typed
        elif self.query("#pf-unnotify") and self.query_one("#pf-unnotify", Checkbox).value:
            fields["notify"] = []
        return fields

    def _keep(self, word: str) -> int | None:
        text = self.value(f"pf-keep-{word}")
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise BadInput(f"keep {word}: a whole number, or empty") from None

    def request(self) -> Awaitable[Policy]:
        fields = self._fields()
        client = self.state.client
        policy = self.policy
        if policy is None:
            return client.add_policy(PolicyIn(**fields))
        now = policy.model_dump(include=set(fields) - {"notify", "retention"})
        now["retention"] = policy.retention.model_dump()
        changed = {k: v for k, v in fields.items() if k == "notify" or v != now[k]}
        if not changed:
            raise BadInput("nothing changed: change a field, or esc goes back")
        return client.edit_policy(policy.name, PolicyEdit(**changed))

    # -- keys --------------------------------------------------------------------------------

    def action_save(self) -> None:
        self.action_confirm()

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_confirm()
