"""Small modals: a yes/no confirmation that defaults to No, and adding a vCenter."""

from __future__ import annotations

from pydantic import SecretStr, ValidationError
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from engine.contract.hub import VCenterIn
from engine.errors import SendenseError
from engine.hub_client import HubClient
from sendense_tui.calls import plain
from sendense_tui.keymap import bindings


def spaced(thumbprint: str) -> str:
    """64 hex digits in groups of eight: readable aloud, and fits an 80-column modal."""
    digits = thumbprint.replace(":", "").lower()
    return " ".join(digits[i : i + 8] for i in range(0, len(digits), 8))


class ConfirmModal(ModalScreen[bool]):
    """Destructive actions pass through here; the focused answer is No."""

    BINDINGS = bindings("modal.cancel")

    def __init__(self, question: str, yes: str = "Yes, cancel it") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal", id="confirm-modal"):
            yield Label(self.question)
            with Horizontal(classes="buttons"):
                yield Button("No", id="no", variant="primary")
                yield Button(self.yes, id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def answered(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_dismiss_modal(self) -> None:
        self.dismiss(False)


class AddVCenterModal(ModalScreen[bool]):
    """Host and user, then the thumbprint the hub sees, which the operator must accept.

    The password Input is masked and cleared as soon as the hub has it: it is never shown
    again, and the console keeps no copy.
    """

    BINDINGS = bindings("modal.cancel")

    def __init__(self, client: HubClient) -> None:
        super().__init__()
        self.client = client
        self.thumbprint: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal", id="vcenter-modal"):
            yield Label(Text("Add a vCenter", style="bold"))
            yield Input(placeholder="host (name or address, optional :port)", id="vc-host")
            yield Input(placeholder="user", id="vc-user")
            yield Input(placeholder="password", password=True, id="vc-password")
            yield Static(id="vc-thumbprint")
            yield Static(id="vc-error")
            with Horizontal(classes="buttons"):
                yield Button("Check thumbprint", id="vc-probe", variant="primary")
                yield Button("Trust and add", id="vc-add", variant="success", disabled=True)
                yield Button("Back", id="vc-back")

    def on_mount(self) -> None:
        self.query_one("#vc-host", Input).focus()

    def _value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value.strip()

    def _error(self, message: str) -> None:
        self.query_one("#vc-error", Static).update(Text(message, style="bold red"))

    @on(Button.Pressed, "#vc-back")
    def back(self) -> None:
        self.dismiss(False)

    def action_dismiss_modal(self) -> None:
        self.dismiss(False)

    @on(Input.Changed, "#vc-host")
    def host_changed(self) -> None:
        self.thumbprint = None
        self.query_one("#vc-add", Button).disabled = True
        self.query_one("#vc-thumbprint", Static).update("")

    @on(Button.Pressed, "#vc-probe")
    def probe(self) -> None:
        host = self._value("vc-host")
        if not host:
            self._error("enter the vCenter's host first")
            return
        self.run_worker(self._probe(host), exclusive=True)

    async def _probe(self, host: str) -> None:
        try:
            self.thumbprint = (await self.client.probe_vcenter(host)).thumbprint
        except SendenseError as exc:
            self._error(plain(exc))
            return
        self._error("")
        self.query_one("#vc-thumbprint", Static).update(
            Text(
                f"SHA-256 thumbprint seen by the hub:\n{spaced(self.thumbprint)}\n"
                "Compare it with the vCenter's own before trusting it.",
                style="yellow",
            )
        )
        self.query_one("#vc-add", Button).disabled = False

    @on(Button.Pressed, "#vc-add")
    def add(self) -> None:
        if self.thumbprint is None:
            return
        password_box = self.query_one("#vc-password", Input)
        password = SecretStr(password_box.value)
        password_box.value = ""
        try:
            request = VCenterIn(
                host=self._value("vc-host"),
                username=self._value("vc-user"),
                password=password,
                thumbprint=self.thumbprint,
            )
        except ValidationError as exc:
            self._error(f"{first_problem(exc)} (enter the password again)")
            return
        self.run_worker(self._add(request))

    async def _add(self, request: VCenterIn) -> None:
        try:
            await self.client.add_vcenter(request)
        except SendenseError as exc:
            self._error(f"{plain(exc)} (enter the password again)")
            return
        self.dismiss(True)


def first_problem(exc: ValidationError) -> str:
    """What is wrong with the form, as the field's name and pydantic's sentence."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}"
