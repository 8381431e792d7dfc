"""The base of every screen: it is handed the console's state, and asks the app for
the rest with messages (``sendense_tui.messages``); no screen knows the app's class."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from textual.containers import ScrollableContainer
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Tree

from sendense_tui.calls import call_hub
from sendense_tui.state import ConsoleState

T = TypeVar("T")


class SendenseScreen(Screen[None]):
    def __init__(self, state: ConsoleState) -> None:
        super().__init__()
        self._state = state

    @property
    def state(self) -> ConsoleState:
        return self._state

    def call_hub(
        self,
        request: Awaitable[T],
        on_done: Callable[[T], object] | None = None,
        name: str = "hub",
        on_error: Callable[[str], object] | None = None,
    ) -> None:
        """One hub request in this screen's worker (see ``calls.call_hub``)."""
        call_hub(self, request, on_done, name=name, on_error=on_error)

    def redraw_live(self) -> None:
        """Called on the app's frame when the job store changed; screens that show it
        redraw here, never per event."""


def navigate(widget: Widget | None, where: str) -> None:
    """j/k/g/G for whichever list, tree or scroller has the focus."""
    if isinstance(widget, Tree):
        if where in ("up", "down"):
            getattr(widget, f"action_cursor_{where}")()
        else:
            widget.cursor_line = 0 if where == "top" else widget.last_line
    elif isinstance(widget, DataTable):
        if where in ("up", "down"):
            getattr(widget, f"action_cursor_{where}")()
        else:
            widget.move_cursor(row=0 if where == "top" else widget.row_count - 1)
    elif isinstance(widget, ScrollableContainer):  # help, the log
        {
            "up": widget.scroll_up,
            "down": widget.scroll_down,
            "top": widget.scroll_home,
            "bottom": widget.scroll_end,
        }[where]()
