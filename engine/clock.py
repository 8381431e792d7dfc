"""The hub's clock: real time, or a time a test (or a drill) sets in a file.

Schedules, retention and every timestamp the hub writes (``db.models.utcnow``) read
``utcnow()``. With ``hub.clock_file`` set, the time is the one written in that file
(ISO 8601, UTC) plus the real seconds since the file was written, so a test jumps the
hub days ahead by writing one line, and time still flows between jumps. Intervals
that pace work (rounds, timeouts) stay on the monotonic clock.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Naive UTC, like every time in the database."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)


class FileClock:
    """The time written in ``path``, advancing from the file's modification time on; the
    real time while the file is missing or unreadable."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        try:
            text = self.path.read_text().strip()
            written = os.stat(self.path).st_mtime
            base = datetime.fromisoformat(text)
        except (OSError, ValueError):
            return SystemClock().now()
        if base.tzinfo is not None:
            base = base.astimezone(UTC).replace(tzinfo=None)
        return base + timedelta(seconds=max(0.0, time.time() - written))

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (naive UTC or aware); written atomically."""
        if when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)
        temp = self.path.with_name(self.path.name + ".tmp")
        temp.write_text(when.isoformat() + "\n")
        temp.replace(self.path)


class FixedClock:
    """A clock that moves only when told: for in-process tests of schedules and rounds."""

    def __init__(self, when: datetime) -> None:
        self.when = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when

    def now(self) -> datetime:
        return self.when

    def advance(self, **delta: float) -> datetime:
        self.when += timedelta(**delta)
        return self.when


_clock: Clock = SystemClock()


def install(clock: Clock) -> None:
    """Make ``clock`` the process's clock (the hub at start, with ``hub.clock_file``)."""
    global _clock
    _clock = clock


def current() -> Clock:
    return _clock


def utcnow() -> datetime:
    return _clock.now()
