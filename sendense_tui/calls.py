"""Hub requests in workers, and hub errors in words for the person at the keyboard.

The hub client raises the engine error an answer's status stands for; ``plain`` adds
what that means here. A request made with ``call_hub`` that fails becomes a
``HubFailed`` message, which the app shows: the one place hub errors reach the screen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from textual.css.query import NoMatches
from textual.dom import DOMNode

from engine.errors import BadInput, Conflict, NotFound, SendenseError, Unauthorized, Unavailable
from engine.hub_client import HubUnreachable
from sendense_tui.messages import HubFailed

T = TypeVar("T")

# What the documented error answers mean to an operator (docs/contracts.md).
MEANING: dict[type[SendenseError], str] = {
    Unauthorized: "the hub refused the API token (check the token file in the data folder)",
    NotFound: "the hub does not know it",
    Conflict: "busy, or already there",
    BadInput: "the hub cannot use it as it is",
    Unavailable: "the node is not reachable, so nothing can run",
}


def plain(exc: SendenseError) -> str:
    """The error in words, with the hub's own line where the hub gave one."""
    if isinstance(exc, HubUnreachable):  # no answer: the client's sentence says it all
        return str(exc)
    if isinstance(exc, BadInput) and "credential" in str(exc).lower():
        return (
            "this VM has no vCenter credential: add its vCenter on the vCenters screen "
            f"(hub said: {exc})"
        )
    meaning = next((words for kind, words in MEANING.items() if isinstance(exc, kind)), None)
    return f"{meaning} (hub said: {exc})" if meaning else str(exc)


def call_hub(
    node: DOMNode,
    request: Awaitable[T],
    on_done: Callable[[T], object] | None = None,
    *,
    name: str = "hub",
    on_error: Callable[[str], object] | None = None,
) -> None:
    """Run one hub request in a worker of ``node`` (it ends with its screen); a failure
    is posted as ``HubFailed`` (or, given ``on_error``, handed to it in words, for a
    screen that says it in place), an answer handed to ``on_done``."""

    async def run() -> None:
        try:
            result = await request
        except SendenseError as exc:
            if on_error is None:
                node.post_message(HubFailed(plain(exc)))
            else:
                on_error(plain(exc))
            return
        if on_done is None:
            return
        try:
            on_done(result)
        except NoMatches:
            return  # its screen was torn down (quit, mode change) while the hub answered

    node.run_worker(run(), name=name, group=name)
