"""Help: every key, read from the keymap table so it cannot drift from the bindings."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from sendense_tui.keymap import KEYS, bindings, keys_for
from sendense_tui.screens.base import navigate

SCOPES = {
    "app": "Everywhere",
    "screen": "Screens",
    "nav": "Moving",
    "inventory": "Inventory",
    "filter": "Filter box",
    "jobs": "Jobs",
    "points": "Restore points",
    "point": "A restore point",
    "files": "Files of a restore point",
    "restores": "Restores",
    "policies": "Policies (the list and one policy)",
    "policy": "One policy",
    "vcenters": "vCenters",
    "list": "Lists",
    "modal": "Dialogs",
}
PRETTY = {"question_mark": "?", "colon": ":", "slash": "/", "space": "space", "escape": "esc"}


def pretty(keys: str) -> str:
    return ", ".join(PRETTY.get(k.strip(), k.strip()) for k in keys.split(","))


class HelpScreen(ModalScreen[None]):
    # A modal screen shuts out the app's keys, so the moving keys are repeated here.
    BINDINGS = bindings("modal.cancel", "app.help", "nav.down", "nav.up", "nav.top", "nav.bottom")

    def __init__(self, keymap: dict[str, str], keymap_file: Path) -> None:
        super().__init__()
        self.keymap = keymap
        self.keymap_file = keymap_file

    def compose(self) -> ComposeResult:
        text = Text()
        for scope, title in SCOPES.items():
            text.append(f"{title}\n", style="bold underline")
            for binding_id, key in KEYS.items():
                if binding_id.split(".")[0] == scope:
                    keys = pretty(keys_for(binding_id, self.keymap))
                    text.append(f"  {keys:<10}", style="bold cyan")
                    text.append(f" {key.description}\n")
            if scope == "app":
                text.append(f"  {'ctrl+p':<10}", style="bold cyan")
                text.append(" Command palette: jump to a VM, a job, a screen\n")
        text.append(f"\nKeys can be rebound in {self.keymap_file}", style="dim")
        with VerticalScroll(classes="modal", id="help-modal"):
            yield Static(text)

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)

    def action_help(self) -> None:
        self.dismiss(None)

    def action_nav(self, where: str) -> None:
        navigate(self.app.focused, where)
