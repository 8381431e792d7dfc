"""The process table, as tests read it to prove that nothing was left running."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def live_processes() -> Iterator[tuple[int, list[str]]]:
    """``(pid, argv)`` of every live process; a zombie (exited, not reaped) is not live."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        argv = [os.fsdecode(a) for a in raw if a]
        if state != "Z" and argv:
            yield int(entry.name), argv
