"""When a sync rule runs next: a fixed interval, or a 5-field cron expression (UTC).

Pure logic, no I/O. ``Schedule.next_after(t)`` is the first run time strictly
after ``t``.

Cron: ``minute hour day-of-month month day-of-week``; each field takes ``*``,
numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, and comma lists; months
and weekdays may be named (``jan``…``dec``, ``sun``…``sat``; 0 and 7 are
Sunday). As in classic cron, when both day-of-month and day-of-week are
restricted (neither is ``*``), a day matches if *either* does; otherwise both
must. Times are UTC; there is no daylight saving to skip or repeat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..oci.errors import DomainError

MAX_CRON = 128
_MONTHS = {m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_DURATION = re.compile(r"^([0-9]{1,9})\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
SEARCH_YEARS = 5  # a cron that names no existing day (Feb 30) is refused rather than searched forever


class InvalidSchedule(DomainError, ValueError):
    """An interval or cron expression that cannot be a schedule; the message says which field and why."""

    code = "INVALID_SCHEDULE"


def parse_interval(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``1d`` → seconds."""
    m = _DURATION.match(text.strip().lower())
    if m is None:
        raise InvalidSchedule(f"interval {text[:40]!r} must be a number of seconds or end in s, m, h or d (e.g. 1h)")
    return int(m[1]) * _UNITS[m[2]]


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, _DAYS),
)


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes "²", which ``int`` refuses."""
    return text.isascii() and text.isdigit() and len(text) <= 9


def _value(text: str, field: _Field, expr: str) -> int:
    lowered = text.lower()
    if lowered in field.names:
        return field.names[lowered]
    if not _is_number(text):
        raise InvalidSchedule(f"cron {expr!r}: {field.name} {text!r} is not a number" + (" or a name" if field.names else ""))
    value = int(text)
    if not field.low <= value <= field.high:
        raise InvalidSchedule(f"cron {expr!r}: {field.name} {value} is outside {field.low}-{field.high}")
    return value


def _parse_field(text: str, field: _Field, expr: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise InvalidSchedule(f"cron {expr!r}: empty item in {field.name} {text!r}")
        body, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _is_number(step_text) or int(step_text) == 0:
                raise InvalidSchedule(f"cron {expr!r}: {field.name} step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            low, high = field.low, field.high
        elif "-" in body:
            a, _, b = body.partition("-")
            low, high = _value(a, field, expr), _value(b, field, expr)
            if low > high:
                raise InvalidSchedule(f"cron {expr!r}: {field.name} range {body!r} runs backwards")
        else:
            low = _value(body, field, expr)
            high = field.high if slash else low  # "5/15" means 5-59/15
        values.update(range(low, high + 1, step))
    if field.name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day-of-month is *
    any_weekday: bool  # day-of-week is *

    @classmethod
    def parse(cls, text: str) -> "Cron":
        expr = text.strip()
        if len(expr) > MAX_CRON:
            raise InvalidSchedule(f"the cron expression is longer than {MAX_CRON} characters")
        parts = expr.split()
        if len(parts) != 5:
            raise InvalidSchedule(
                f"cron {expr[:60]!r} must have 5 fields (minute hour day-of-month month day-of-week), not {len(parts)}"
            )
        sets = [_parse_field(part, field, expr) for part, field in zip(parts, _FIELDS, strict=True)]
        cron = cls(expr, *sets, any_day=parts[2].startswith("*"), any_weekday=parts[4].startswith("*"))
        cron.next_after(datetime(2000, 1, 1, tzinfo=UTC))  # raises for a day that never comes
        return cron

    def _day_matches(self, day: datetime) -> bool:
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if not self.any_day and not self.any_weekday:
            return dom or dow
        return dom and dow

    def next_after(self, after: datetime) -> datetime:
        t = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = t + timedelta(days=366 * SEARCH_YEARS)
        while t < limit:
            if t.month not in self.months:
                year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = t.replace(year=year, month=month, day=1, hour=0, minute=0)
                continue
            if not self._day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            return t
        raise InvalidSchedule(f"cron {self.text!r} names no time that exists (e.g. February 30)")


@dataclass(frozen=True)
class Schedule:
    """Every ``interval_seconds``, or at the times ``cron`` names; neither: manual runs only."""

    interval_seconds: int | None = None
    cron: Cron | None = None

    @classmethod
    def build(cls, interval_seconds: int | None, cron: str | None, minimum_interval: int = 60) -> "Schedule":
        if interval_seconds is not None and cron is not None:
            raise InvalidSchedule("give an interval or a cron expression, not both")
        if interval_seconds is not None and interval_seconds < minimum_interval:
            raise InvalidSchedule(f"the interval must be at least {minimum_interval} seconds")
        return cls(interval_seconds, Cron.parse(cron) if cron is not None else None)

    @property
    def manual(self) -> bool:
        return self.interval_seconds is None and self.cron is None

    def next_after(self, after: datetime) -> datetime | None:
        if self.cron is not None:
            return self.cron.next_after(after)
        if self.interval_seconds is not None:
            return after + timedelta(seconds=self.interval_seconds)
        return None
