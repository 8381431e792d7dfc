"""A policy's schedule: a cron expression read in an IANA timezone, through croniter.

Times in and out are naive UTC, like every time in the database; the wall clock of the
policy's timezone is only used to find the cron times.

Daylight saving, the rule: **a wall-clock time fires once.**

- Spring forward (Europe/Berlin, 2026-03-29: 02:00 becomes 03:00): a time in the
  skipped hour does not exist; croniter gives the first time after the gap instead
  (``30 2 * * *`` fires at 03:00 that day, once).
- Fall back (2026-10-25: 03:00 becomes 02:00 again): croniter gives a time in the
  repeated hour twice (``30 2 * * *``: 02:30+02:00 and 02:30+01:00). Only the first
  fires; the second is the same wall-clock time again and is passed over. So a daily
  02:30 job runs once that night, and an every-30-minutes one does not run twice at
  02:00 and 02:30.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from engine.errors import BadInput

# Standard cron's five fields, or one of croniter's aliases for them. Six or seven
# fields (seconds, years) are croniter extensions a nightly schedule never needs, and
# a seconds field makes a typo fire every second.
ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_FIELDS = "give 5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, …"


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; bad input naming it when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(
            f"timezone {name!r} is not a known IANA zone (such as UTC or Europe/Berlin)"
        ) from None


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


class Schedule:
    """A cron expression in a timezone; refuses, with one line, what croniter refuses,
    what has not 5 fields, and what never fires."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        self.expression = expression.strip()
        self.zone = zone(timezone)
        fields = self.expression.split()
        if not (len(fields) == 5 or (len(fields) == 1 and fields[0].lower() in ALIASES)):
            raise BadInput(f"schedule {expression!r} is not a cron expression: {_FIELDS}")
        try:
            croniter(self.expression)
        except (CroniterError, ValueError, KeyError) as exc:
            reason = str(exc) or type(exc).__name__
            raise BadInput(f"schedule {expression!r} is not a cron expression: {reason}") from None
        if self.next_after(datetime(2000, 1, 1)) is None:
            raise BadInput(f"schedule {expression!r} never fires (no such date)")

    def __repr__(self) -> str:
        return f"Schedule({self.expression!r}, {self.zone.key!r})"

    def _first_of_its_wall_time(self, moment: datetime) -> bool:
        """False for the second pass of a wall-clock time in a fall-back hour."""
        wall = moment.replace(tzinfo=None, fold=0)
        first = wall.replace(tzinfo=self.zone)  # fold=0: the earlier of the two
        return _utc(first) >= _utc(moment)

    def _walk(self, start: datetime, *, forward: bool) -> Iterator[datetime]:
        """Cron times strictly after (before) ``start``, as naive UTC, each wall-clock
        time once."""
        it = croniter(self.expression, start.replace(tzinfo=UTC).astimezone(self.zone))
        while True:
            try:
                moment = it.get_next(datetime) if forward else it.get_prev(datetime)
            except CroniterBadDateError:  # none within croniter's search horizon
                return
            if self._first_of_its_wall_time(moment):
                yield _utc(moment)

    def next_after(self, after: datetime) -> datetime | None:
        """The first cron time strictly after ``after``."""
        return next(self._walk(after, forward=True), None)

    def latest_at_or_before(self, at: datetime) -> datetime | None:
        """The last cron time at or before ``at`` (croniter's ``get_prev`` from an exact
        match gives the one before it, hence the microsecond)."""
        return next(self._walk(at + timedelta(microseconds=1), forward=False), None)

    def latest_between(self, after: datetime, until: datetime) -> datetime | None:
        """The last cron time T with ``after < T <= until``."""
        moment = self.latest_at_or_before(until)
        return moment if moment is not None and moment > after else None

    def local(self, moment: datetime) -> datetime:
        """A naive UTC time on the policy's wall clock (for messages)."""
        return moment.replace(tzinfo=UTC).astimezone(self.zone)
