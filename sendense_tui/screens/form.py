"""Forms that make one hub request, and their lines.

Every form builds the contract's request model, so what the hub would refuse as bad
input is mostly refused here first, in the same words; what the hub refuses stays in
the form as one line, and the operator can change the form and try again.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import ClassVar, TypeVar

from pydantic import ValidationError
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Input, Label, Static

from engine.errors import BadInput, SendenseError
from sendense_tui.calls import plain
from sendense_tui.keymap import bindings
from sendense_tui.screens.modals import first_problem
from sendense_tui.state import ConsoleState

T = TypeVar("T")


def row(label: str, widget: Widget, gap: bool = False) -> Horizontal:
    """One line of a form: its name on the left, what is filled in on the right;
    ``gap``: a blank line above, between groups."""
    classes = "form-row form-gap" if gap else "form-row"
    return Horizontal(Label(label, classes="form-label"), widget, classes=classes)


def heading(title: str, sub: str) -> ComposeResult:
    yield Label(Text(title, style="bold"))
    yield Static(sub, classes="form-sub")


class FormModal(ModalScreen[T | None]):
    """Dismissed with the hub's answer, or None when left. A subclass binds the key that
    sends it (Textual merges a class's bindings with its bases')."""

    BINDINGS = bindings("modal.cancel")
    HINT = "space picks · tab moves · enter {what} · esc goes back"
    ACTION = "starts it"  # what enter does, in the hint line
    BOX: ClassVar[type[Widget]] = Vertical  # a long form scrolls (VerticalScroll)
    BOX_CLASSES = "modal"

    def __init__(self, state: ConsoleState) -> None:
        super().__init__()
        self.state = state
        self._busy = False

    def form(self) -> ComposeResult:
        raise NotImplementedError

    def request(self) -> Awaitable[T]:
        """The hub call the form asks for; raises ``BadInput`` (or the model's
        ``ValidationError``) when the form cannot make one."""
        raise NotImplementedError

    def compose(self) -> ComposeResult:
        with self.BOX(classes=self.BOX_CLASSES):
            yield from self.form()
            yield Static(id="form-error")
            yield Static(Text(self.HINT.format(what=self.ACTION), style="dim"), id="form-hint")

    def error(self, message: str, style: str = "bold red") -> None:
        self.query_one("#form-error", Static).update(Text(message, style=style))

    def value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value.strip()

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)

    def action_confirm(self) -> None:
        if self._busy:
            return
        try:
            call = self.request()
        except ValidationError as exc:
            self.error(first_problem(exc))
            return
        except BadInput as exc:
            self.error(str(exc))
            return
        self._busy = True
        self.error("asking the hub…", style="dim")
        self.run_worker(self._send(call), exclusive=True)

    async def _send(self, call: Awaitable[T]) -> None:
        try:
            answer = await call
        except SendenseError as exc:
            self._busy = False
            self.error(plain(exc))
            return
        self.done(answer)

    def done(self, answer: T) -> None:
        self.dismiss(answer)
