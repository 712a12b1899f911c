"""Sync-rule schedules: intervals and 5-field cron expressions (UTC, day-of-month/day-of-week OR rule)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cargohold.transfer.schedule import Cron, InvalidSchedule, Schedule, parse_interval


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), (" 1H ", 3600)])
def test_parse_interval(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1w", "-5", "1.5h", "one hour"])
def test_parse_interval_invalid(text: str) -> None:
    with pytest.raises(InvalidSchedule):
        parse_interval(text)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("* * * * *", "2026-01-01T10:00:30", "2026-01-01T10:01:00"),
        ("0 3 * * *", "2026-01-01T10:00:00", "2026-01-02T03:00:00"),
        ("0 3 * * *", "2026-01-01T02:59:59", "2026-01-01T03:00:00"),
        ("0 3 * * *", "2026-01-01T03:00:00", "2026-01-02T03:00:00"),  # strictly after
        ("*/15 * * * *", "2026-01-01T10:07:00", "2026-01-01T10:15:00"),
        ("5/20 * * * *", "2026-01-01T10:26:00", "2026-01-01T10:45:00"),
        ("0 0 1 * *", "2026-01-15T00:00:00", "2026-02-01T00:00:00"),
        ("0 0 31 * *", "2026-02-01T00:00:00", "2026-03-31T00:00:00"),
        ("0 0 29 2 *", "2026-01-01T00:00:00", "2028-02-29T00:00:00"),
        ("30 6 * * mon-fri", "2026-11-27T07:00:00", "2026-11-30T06:30:00"),  # Fri after 6:30 -> Monday
        ("0 12 * * 0", "2026-11-27T00:00:00", "2026-11-29T12:00:00"),  # Sunday
        ("0 12 * * 7", "2026-11-27T00:00:00", "2026-11-29T12:00:00"),  # 7 is Sunday too
        ("0 0 * jan,jul *", "2026-02-01T00:00:00", "2026-07-01T00:00:00"),
        ("0 9-17/4 * * *", "2026-01-01T10:00:00", "2026-01-01T13:00:00"),
        ("0 0 1,15 * 1", "2026-11-02T00:00:00", "2026-11-09T00:00:00"),  # both restricted: OR (Monday 9th)
        ("0 0 13 * fri", "2026-11-01T00:00:00", "2026-11-06T00:00:00"),  # Friday 6th before the 13th
        ("0 0 */10 * mon", "2026-11-02T00:00:00", "2026-12-21T00:00:00"),  # */ counts as * for the OR rule: both must hold
    ],
)
def test_cron_next(expr: str, after: str, expected: str) -> None:
    assert Cron.parse(expr).next_after(at(after)) == at(expected)


def test_cron_is_utc() -> None:
    local = datetime(2026, 1, 1, 4, 0, tzinfo=timezone(timedelta(hours=2)))  # 02:00 UTC
    assert Cron.parse("0 3 * * *").next_after(local) == at("2026-01-01T03:00:00")


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("60 * * * *", "minute 60 is outside 0-59"),
        ("* 24 * * *", "hour 24"),
        ("* * 0 * *", "day-of-month 0"),
        ("* * * 13 *", "month 13"),
        ("* * * * 8", "day-of-week 8"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("a * * * *", "not a number"),
        ("* * * foo *", "not a number or a name"),
        ("1,,2 * * * *", "empty item"),
        ("0 0 30 2 *", "no time that exists"),
        ("x" * 200, "longer than"),
    ],
)
def test_cron_invalid(expr: str, words: str) -> None:
    with pytest.raises(InvalidSchedule, match=words):
        Cron.parse(expr)


def test_schedule_build() -> None:
    start = at("2026-01-01T00:00:00")
    assert Schedule.build(3600, None).next_after(start) == at("2026-01-01T01:00:00")
    assert Schedule.build(None, "0 3 * * *").next_after(start) == at("2026-01-01T03:00:00")
    assert Schedule.build(None, None).next_after(start) is None
    assert Schedule.build(None, None).manual
    assert Schedule.build(5, None, minimum_interval=1).interval_seconds == 5
    with pytest.raises(InvalidSchedule, match="at least 60"):
        Schedule.build(30, None)
    with pytest.raises(InvalidSchedule, match="not both"):
        Schedule.build(60, "* * * * *")


@pytest.mark.parametrize("expr", ["² * * * *", "*/² * * * *", "1-² * * * *", "0 ３ * * *", "0 0 * * ٣"])
def test_non_ascii_digits_are_invalid_not_a_crash(expr: str) -> None:
    with pytest.raises(InvalidSchedule, match="not a number|positive number"):
        Cron.parse(expr)


@pytest.mark.parametrize("text", ["²", "1²h", "9999999999"])
def test_parse_interval_refuses_odd_digits(text: str) -> None:
    with pytest.raises(InvalidSchedule):
        parse_interval(text)
