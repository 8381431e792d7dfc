"""What screens ask of the app: they post these, the app acts (it owns modes and toasts)."""

from __future__ import annotations

from textual.message import Message


class OpenJob(Message):
    """Show this job on the jobs screen."""

    def __init__(self, backup_id: str) -> None:
        super().__init__()
        self.backup_id = backup_id


class OpenVM(Message):
    """Show this VM in the inventory tree, the cursor on it."""

    def __init__(self, vcenter_id: int, path: str) -> None:
        super().__init__()
        self.vcenter_id = vcenter_id
        self.path = path


class HubFailed(Message):
    """A hub request failed; ``words`` say so to the operator."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words


class OpenRestorePoints(Message):
    """Show the restore points of this VM (its name or inventory path), or of every VM."""

    def __init__(self, vm: str | None) -> None:
        super().__init__()
        self.vm = vm


class OpenRestore(Message):
    """Show this restore job on the restores screen."""

    def __init__(self, restore_id: str) -> None:
        super().__init__()
        self.restore_id = restore_id
