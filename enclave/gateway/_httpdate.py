"""HTTP-date (RFC 9110 section 5.6.7): the three forms a recipient must accept, all read as UTC.

    IMF-fixdate   Sun, 06 Nov 1994 08:49:37 GMT
    rfc850-date   Sunday, 06-Nov-94 08:49:37 GMT
    asctime-date  Sun Nov  6 08:49:37 1994

``email.utils.parsedate_to_datetime`` returns a naive datetime for the asctime form, which
``.timestamp()`` then reads in the process's local time zone: a correct Date was refused under a
non-UTC ``TZ``. This parser never consults the local zone.
"""

from __future__ import annotations

import calendar
import re
import time

__all__ = ["parse_http_date"]

_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "(?P<month>" + "|".join(_MONTHS) + ")"
_TIME = r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
_FORMS = (
    re.compile(rf"{_DAY}, (?P<day>\d\d) {_MONTH} (?P<year>\d{{4}}) {_TIME} GMT"),
    re.compile(rf"{_LONG_DAY}, (?P<day>\d\d)-{_MONTH}-(?P<year>\d\d) {_TIME} GMT"),
    re.compile(rf"{_DAY} {_MONTH} (?P<day>[ \d]\d) {_TIME} (?P<year>\d{{4}})"),
)


def parse_http_date(text: str, now: float) -> float:
    """Seconds since the epoch (UTC) of an HTTP-date; ``ValueError`` if it is none of the three
    forms or names no real time. ``now`` resolves the two-digit year of the rfc850 form: a
    year more than 50 years ahead of ``now`` is the most recent past year with those digits."""
    for form in _FORMS:
        match = form.fullmatch(text)
        if match is not None:
            break
    else:
        raise ValueError("not an HTTP-date")
    year = int(match["year"])
    if len(match["year"]) == 2:
        this_year = _year_of(now)
        year += this_year - this_year % 100
        if year > this_year + 50:
            year -= 100
    fields = (
        year,
        _MONTHS.index(match["month"]) + 1,
        int(match["day"]),
        int(match["hour"]),
        int(match["minute"]),
        int(match["second"]),
    )
    _check(*fields)
    return float(calendar.timegm((*fields, 0, 0, 0)))


def _year_of(now: float) -> int:
    return time.gmtime(now).tm_year


def _check(year: int, month: int, day: int, hour: int, minute: int, second: int) -> None:
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise ValueError("no such day")
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second
        raise ValueError("no such time")
