"""Text shapes shared by screens: sizes, rates, bars and sparklines as plain text.

Cells of a DataTable are text, so bars and sparklines are drawn with block characters
rather than widgets; that keeps one row a single cheap update.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.text import Text

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_SPARKS = "▁▂▃▄▅▆▇█"


def size(n: float | int | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def rate(bps: float | int | None) -> str:
    """MiB/s, the unit operators compare copy speeds in."""
    if not bps:
        return "—"
    return f"{float(bps) / 2**20:.1f} MiB/s"


def eta(remaining: int, bps: float | int | None) -> str:
    if remaining <= 0:
        return "0s"
    if not bps:
        return "—"
    return duration(remaining / float(bps))


def duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def bar(done: int, total: int, width: int = 16, *, finished: bool = False) -> Text:
    """A progress bar with its percentage, readable in 16 colours and without colour;
    ``finished`` fills it when there was nothing to do (an incremental with no change)."""
    fraction = min(1.0, done / total) if total else (1.0 if finished else 0.0)
    filled = round(fraction * width)
    text = Text()
    text.append("█" * filled, style="green")
    text.append("░" * (width - filled), style="dim")
    text.append(f" {fraction * 100:3.0f}%")
    return text


def sparkline(values: Sequence[float], width: int = 20) -> str:
    """The last ``width`` samples, each scaled against the largest one shown."""
    tail = list(values)[-width:]
    if not tail:
        return ""
    top = max(tail)
    if top <= 0:
        return _SPARKS[0] * len(tail)
    steps = len(_SPARKS) - 1
    return "".join(_SPARKS[round(v / top * steps)] for v in tail)


def moment(at: datetime | None) -> str:
    """A time in a table row: the month, day and time of day (jobs last hours, not years)."""
    return at.strftime("%m-%d %H:%M:%S") if at else ""
