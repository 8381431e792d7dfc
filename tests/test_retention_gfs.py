"""GFS alone (``gfs_keep``, no database): what a retention keeps of hand-made timelines —
a year and more of daily points, a zone whose dates are not UTC's, the days daylight
saving makes 23 and 25 hours long, several points a day, damaged points — and, for
timelines hypothesis makes, exactly what a plain oracle written here keeps, always with
the newest point among them.

The dates are the timelines' own (a DST day is a date); nothing reads the clock."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.contract.policy import Retention
from engine.hub.policies.retention import (
    DAMAGED_NEWEST,
    KEEPS_EVERYTHING,
    LAST_GOOD,
    Stamp,
    gfs_keep,
)

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def stamp(when: datetime, good: bool = True) -> Stamp:
    return Stamp(f"p-{when:%Y%m%dT%H%M}", when, good)


def daily(first: date, days: int, hour: int = 10) -> list[Stamp]:
    start = datetime(first.year, first.month, first.day, hour)
    return [stamp(start + timedelta(days=n)) for n in range(days)]


def hourly(first: datetime, hours: int) -> list[Stamp]:
    return [stamp(first + timedelta(hours=n)) for n in range(hours)]


def kept_times(kept: dict[str, list[str]], points: list[Stamp]) -> list[datetime]:
    return sorted(p.taken_at for p in points if p.point_id in kept)


def at(day: str, hour: int = 10, minute: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, minute=minute)


def test_a_year_of_daily_points_keeps_the_last_days_weeks_months_and_years() -> None:
    points = daily(date(2025, 1, 1), 400)  # to Wednesday 2026-02-04
    assert points[-1].taken_at == at("2026-02-04")
    retention = Retention(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=2)
    kept = gfs_keep(points, retention, UTC_ZONE)
    month_ends = ["2025-03-31", "2025-04-30", "2025-05-31", "2025-06-30", "2025-07-31"]
    month_ends += ["2025-08-31", "2025-09-30", "2025-10-31", "2025-11-30", "2025-12-31"]
    sundays = ["2026-01-18", "2026-01-25"]  # the weeks 03 and 04 end on a Sunday
    last_days = [f"2026-01-{d}" for d in (29, 30, 31)] + [f"2026-02-0{d}" for d in (1, 2, 3, 4)]
    assert kept_times(kept, points) == [at(d) for d in month_ends + sundays + last_days]
    assert kept[stamp(at("2026-02-04")).point_id] == [
        "last 3",
        "daily 2026-02-04",
        "weekly 2026-W06",
        "monthly 2026-02",
        "yearly 2026",
        LAST_GOOD,
    ]
    assert kept[stamp(at("2026-02-01")).point_id] == ["daily 2026-02-01", "weekly 2026-W05"]
    assert kept[stamp(at("2026-01-31")).point_id] == ["daily 2026-01-31", "monthly 2026-01"]
    assert kept[stamp(at("2025-12-31")).point_id] == ["monthly 2025-12", "yearly 2025"]
    assert kept[stamp(at("2026-01-18")).point_id] == ["weekly 2026-W03"]


def test_the_days_are_the_policys_timezone_not_utc() -> None:
    # New York is UTC-5 in January: 03:00 UTC on the 10th is 22:00 on the 9th there.
    afternoon_9th, late_9th, morning_10th = (
        at("2026-01-09", 20),
        at("2026-01-10", 3),
        at("2026-01-10", 14),
    )
    points = [stamp(afternoon_9th), stamp(late_9th), stamp(morning_10th)]
    two_days = Retention(keep_daily=2)
    assert kept_times(gfs_keep(points, two_days, NEW_YORK), points) == [late_9th, morning_10th]
    assert kept_times(gfs_keep(points, two_days, UTC_ZONE), points) == [
        afternoon_9th,
        morning_10th,
    ]
    assert gfs_keep(points, two_days, NEW_YORK)[stamp(late_9th).point_id] == ["daily 2026-01-09"]

    # Sunday 23:00 in New York is Monday in UTC: another ISO week.
    sunday_night, saturday = at("2026-01-12", 4), at("2026-01-10", 15)
    week = [stamp(saturday), stamp(sunday_night)]
    one_week = Retention(keep_weekly=1)
    assert kept_times(gfs_keep(week, one_week, NEW_YORK), week) == [sunday_night]
    assert gfs_keep(week, Retention(keep_weekly=2), UTC_ZONE)[stamp(sunday_night).point_id] == [
        "weekly 2026-W03",
        LAST_GOOD,
    ]
    assert gfs_keep(week, Retention(keep_weekly=2), NEW_YORK)[stamp(sunday_night).point_id] == [
        "weekly 2026-W02",
        LAST_GOOD,
    ]

    # New Year's Eve at 20:00 in New York is already next year in UTC.
    eve = at("2026-01-01", 1)
    years = [stamp(at("2025-12-31", 12)), stamp(eve)]
    assert gfs_keep(years, Retention(keep_yearly=1), NEW_YORK) == {
        stamp(eve).point_id: ["yearly 2025", LAST_GOOD]
    }


def test_a_25_hour_day_and_a_23_hour_day_keep_their_own_last_point() -> None:
    # Berlin leaves summer time on 2026-10-25 (03:00 CEST -> 02:00 CET): that day runs
    # from 22:00 UTC on the 24th to 23:00 UTC on the 25th, 25 hourly points.
    autumn = hourly(datetime(2026, 10, 24, 0, 30), 60)
    kept = gfs_keep(autumn, Retention(keep_daily=3), BERLIN)
    assert kept_times(kept, autumn) == [
        datetime(2026, 10, 24, 21, 30),  # 23:30 CEST
        datetime(2026, 10, 25, 22, 30),  # 23:30 CET
        datetime(2026, 10, 26, 11, 30),  # the newest
    ]
    # It enters summer time on 2026-03-29 (02:00 CET -> 03:00 CEST): 23 hours, from 23:00
    # UTC on the 28th to 22:00 UTC on the 29th.
    spring = hourly(datetime(2026, 3, 28, 0, 30), 60)
    kept = gfs_keep(spring, Retention(keep_daily=3), BERLIN)
    assert kept_times(kept, spring) == [
        datetime(2026, 3, 28, 22, 30),  # 23:30 CET
        datetime(2026, 3, 29, 21, 30),  # 23:30 CEST
        datetime(2026, 3, 30, 11, 30),
    ]
    assert kept[stamp(datetime(2026, 3, 29, 21, 30)).point_id] == ["daily 2026-03-29"]


def test_several_points_a_day_keep_last_counts_points_and_keep_daily_days() -> None:
    points = [stamp(at(day, hour)) for day in ("2026-05-04", "2026-05-05") for hour in (2, 9, 17)]
    kept = gfs_keep(points, Retention(keep_last=2, keep_daily=2), UTC_ZONE)
    assert kept_times(kept, points) == [
        at("2026-05-04", 17),
        at("2026-05-05", 9),
        at("2026-05-05", 17),
    ]
    assert kept[stamp(at("2026-05-05", 9)).point_id] == ["last 2"]
    assert kept[stamp(at("2026-05-04", 17)).point_id] == ["daily 2026-05-04"]
    # Two points at the same second: the greater id is the newer.
    twins = [Stamp("backup-a", at("2026-05-05")), Stamp("backup-b", at("2026-05-05"))]
    assert list(gfs_keep(twins, Retention(keep_last=1), UTC_ZONE)) == ["backup-b"]


def test_a_damaged_point_takes_no_rules_place_and_the_last_good_point_stays() -> None:
    older, good_4th = stamp(at("2026-05-03")), stamp(at("2026-05-04", 9))
    damaged_4th = stamp(at("2026-05-04", 20), good=False)
    good_5th, damaged_newest = stamp(at("2026-05-05", 8)), stamp(at("2026-05-05", 20), good=False)
    points = [older, good_4th, damaged_4th, good_5th, damaged_newest]
    # The 4th keeps its good point, not the damaged one taken after it (which goes: a
    # good point is newer); the damaged newest point stays until a good point follows.
    assert gfs_keep(points, Retention(keep_daily=2), UTC_ZONE) == {
        damaged_newest.point_id: [DAMAGED_NEWEST],
        good_5th.point_id: ["daily 2026-05-05", LAST_GOOD],
        good_4th.point_id: ["daily 2026-05-04"],
    }
    all_damaged = [replace_good(p, False) for p in points]
    assert set(gfs_keep(all_damaged, Retention(keep_last=1), UTC_ZONE)) == {
        p.point_id for p in points
    }


def replace_good(point: Stamp, good: bool) -> Stamp:
    return Stamp(point.point_id, point.taken_at, good)


def test_a_retention_with_no_counts_keeps_everything() -> None:
    points = daily(date(2026, 1, 1), 30)
    kept = gfs_keep(points, Retention(), BERLIN)
    assert kept == {p.point_id: [KEEPS_EVERYTHING] for p in points}
    assert gfs_keep([], Retention(keep_last=1), BERLIN) == {}


# ---- against an oracle ------------------------------------------------------------------


def oracle(points: list[Stamp], retention: Retention, zone: ZoneInfo) -> set[str]:
    """GFS as the docs say it, written plainly: per rule, group the good points by period,
    take each period's newest, keep the newest ``n`` of those."""
    if all(n is None for n in retention.model_dump().values()):
        return {p.point_id for p in points}

    def order(p: Stamp) -> tuple[datetime, str]:
        return (p.taken_at, p.point_id)

    def local(p: Stamp) -> date:
        return p.taken_at.replace(tzinfo=UTC).astimezone(zone).date()

    good = sorted((p for p in points if p.good), key=order)
    keep = {p.point_id for p in good[-retention.keep_last :]} if retention.keep_last else set()
    periods: list[tuple[int | None, Callable[[date], Hashable]]] = [
        (retention.keep_daily, lambda d: d),
        (retention.keep_weekly, lambda d: d.isocalendar()[:2]),
        (retention.keep_monthly, lambda d: (d.year, d.month)),
        (retention.keep_yearly, lambda d: d.year),
    ]
    for count, key in periods:
        if count:
            groups: dict[Hashable, list[Stamp]] = defaultdict(list)
            for p in good:
                groups[key(local(p))].append(p)
            newest = sorted((max(g, key=order) for g in groups.values()), key=order)
            keep |= {p.point_id for p in newest[-count:]}
    if good:
        keep.add(good[-1].point_id)
    keep |= {p.point_id for p in points if not p.good and (not good or order(p) > order(good[-1]))}
    return keep


counts = st.none() | st.integers(min_value=1, max_value=6)
zones = st.sampled_from(
    ["UTC", "Europe/Berlin", "America/New_York", "Pacific/Auckland", "Asia/Kolkata"]
)
# Minutes over three years from a start, many falling on one day, some on one minute.
offsets = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3 * 366 * 24 * 60), st.booleans()),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(
    offsets=offsets,
    spread=st.sampled_from([1, 7, 60, 24 * 60]),
    last=counts,
    daily_=counts,
    weekly=counts,
    monthly=counts,
    yearly=counts,
    zone_name=zones,
)
def test_gfs_keeps_what_the_oracle_keeps_and_always_the_newest_point(
    offsets: list[tuple[int, bool]],
    spread: int,
    last: int | None,
    daily_: int | None,
    weekly: int | None,
    monthly: int | None,
    yearly: int | None,
    zone_name: str,
) -> None:
    start = datetime(2025, 1, 1)
    points = [
        Stamp(f"backup-{n:03d}", start + timedelta(minutes=minute // spread), good)
        for n, (minute, good) in enumerate(offsets)
    ]
    retention = Retention(
        keep_last=last,
        keep_daily=daily_,
        keep_weekly=weekly,
        keep_monthly=monthly,
        keep_yearly=yearly,
    )
    zone = ZoneInfo(zone_name)
    kept = gfs_keep(points, retention, zone)
    assert set(kept) == oracle(points, retention, zone)
    assert all(kept.values())  # every kept point says why
    if points:
        newest = max(points, key=lambda p: (p.taken_at, p.point_id))
        assert newest.point_id in kept
