"""The one-line filter box of the lists (``/`` opens it, enter goes back to the list)."""

from __future__ import annotations

from textual.widget import Widget
from textual.widgets import Input

from sendense_tui.keymap import bindings


class FilterInput(Input):
    BINDINGS = bindings("filter.done")

    def __init__(self, back_to: Widget, placeholder: str, *, id: str | None = None) -> None:
        super().__init__(placeholder=placeholder, compact=True, id=id)
        self.back_to = back_to  # what enter hands the keys back to, the filter kept

    def action_done(self) -> None:
        self.app.set_focus(self.back_to)
