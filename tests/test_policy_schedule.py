"""The schedule alone (pure): cron times in a timezone as naive UTC, the daylight-saving
edges both ways (a wall-clock time fires once), and bad input named in one line."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from engine.errors import BadInput
from engine.hub.policies.schedule import Schedule

BERLIN = "Europe/Berlin"


def times(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    out = []
    for _ in range(count):
        nxt = schedule.next_after(start)
        assert nxt is not None
        out.append(nxt)
        start = nxt
    return out


def test_a_nightly_schedule_is_read_on_the_policys_wall_clock() -> None:
    # 02:30 in Berlin is 01:30 UTC in winter and 00:30 UTC in summer.
    s = Schedule("30 2 * * *", BERLIN)
    assert s.next_after(datetime(2026, 1, 10, 12)) == datetime(2026, 1, 11, 1, 30)
    assert s.next_after(datetime(2026, 7, 10, 12)) == datetime(2026, 7, 11, 0, 30)
    assert Schedule("30 2 * * *").next_after(datetime(2026, 7, 10, 12)) == datetime(
        2026, 7, 11, 2, 30
    )


def test_next_is_strictly_after_and_latest_includes_an_exact_match() -> None:
    s = Schedule("0 * * * *")
    on_the_hour = datetime(2026, 5, 1, 10)
    assert s.next_after(on_the_hour) == datetime(2026, 5, 1, 11)
    # croniter's get_prev from an exact match gives the one before: not here.
    assert s.latest_at_or_before(on_the_hour) == on_the_hour
    assert s.latest_at_or_before(on_the_hour - timedelta(microseconds=1)) == datetime(2026, 5, 1, 9)
    assert s.latest_between(on_the_hour, on_the_hour + timedelta(minutes=59)) is None
    assert s.latest_between(on_the_hour - timedelta(seconds=1), on_the_hour) == on_the_hour


def test_spring_forward_a_time_in_the_skipped_hour_fires_once_after_the_gap() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
    s = Schedule("30 2 * * *", BERLIN)
    fired = times(s, datetime(2026, 3, 27, 12), 3)
    assert [s.local(t).strftime("%d %H:%M%z") for t in fired] == [
        "28 02:30+0100",
        "29 03:00+0200",
        "30 02:30+0200",
    ]


def test_fall_back_a_wall_time_in_the_repeated_hour_fires_once() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    s = Schedule("30 2 * * *", BERLIN)
    fired = times(s, datetime(2026, 10, 24, 12), 2)
    assert fired == [datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 26, 1, 30)]
    # Backwards the same: the second 02:30 (01:30 UTC) is passed over.
    assert s.latest_at_or_before(datetime(2026, 10, 25, 3)) == datetime(2026, 10, 25, 0, 30)


def test_fall_back_a_half_hourly_schedule_does_not_run_the_repeated_hour_twice() -> None:
    s = Schedule("*/30 * * * *", BERLIN)
    fired = times(s, datetime(2026, 10, 24, 23), 6)
    assert [s.local(t).strftime("%H:%M%z") for t in fired] == [
        "01:30+0200",
        "02:00+0200",
        "02:30+0200",
        "03:00+0100",
        "03:30+0100",
        "04:00+0100",
    ]


def test_a_timezone_without_daylight_saving_has_no_edges() -> None:
    s = Schedule("30 2 * * *", "Asia/Tokyo")
    fired = times(s, datetime(2026, 10, 24, 12), 2)
    assert fired == [datetime(2026, 10, 24, 17, 30), datetime(2026, 10, 25, 17, 30)]


@pytest.mark.parametrize(
    ("cron", "zone", "says"),
    [
        ("61 * * * *", "UTC", "schedule '61 * * * *' is not a cron expression: "),
        ("every night", "UTC", "is not a cron expression: give 5 fields"),
        ("* * * * * *", "UTC", "is not a cron expression: give 5 fields"),
        ("@reboot", "UTC", "is not a cron expression"),
        ("0 0 30 2 *", "UTC", "schedule '0 0 30 2 *' never fires"),
        ("0 2 * * *", "Mars/Olympus_Mons", "timezone 'Mars/Olympus_Mons' is not a known IANA zone"),
        ("0 2 * * *", "../../etc/passwd", "is not a known IANA zone"),
    ],
)
def test_bad_schedules_are_refused_in_one_line(cron: str, zone: str, says: str) -> None:
    with pytest.raises(BadInput) as refused:
        Schedule(cron, zone)
    message = str(refused.value)
    assert says in message
    assert "\n" not in message


def test_aliases_and_names_are_taken() -> None:
    assert Schedule("@daily").next_after(datetime(2026, 1, 1, 5)) == datetime(2026, 1, 2)
    weekdays = Schedule("0 22 * * MON-FRI", BERLIN)
    # Friday 2026-05-01 22:00 CEST, then Monday.
    assert weekdays.next_after(datetime(2026, 5, 1, 21)) == datetime(2026, 5, 4, 20)
