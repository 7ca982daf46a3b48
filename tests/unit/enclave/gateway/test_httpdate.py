"""HTTP-date (RFC 9110 section 5.6.7): the three forms, as UTC whatever ``TZ`` says."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from enclave.gateway._httpdate import parse_http_date
from enclave.protocol import bhttp
from tests.unit.enclave.gateway.conftest import Setup, call, chunked_body, now

EXAMPLE = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example)
NOW_2026 = 1_790_000_000.0


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ],
)
def test_the_three_forms_name_the_same_instant(text: str) -> None:
    assert parse_http_date(text, NOW_2026) == EXAMPLE


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Sun, 06 Nov 1994 08:49:37 UTC",  # only GMT
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun, 6 Nov 1994 08:49:37 GMT",  # two-digit day
        "Sun, 31 Feb 1994 08:49:37 GMT",  # no such day
        "Sun, 06 Nov 1994 24:00:00 GMT",
        " Sun, 06 Nov 1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",  # asctime pads the day with a space
        "1994-11-06T08:49:37Z",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"HTTP-date|no such"):
        parse_http_date(text, NOW_2026)


def test_a_two_digit_year_more_than_50_years_ahead_is_in_the_past() -> None:
    assert time.gmtime(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", NOW_2026)).tm_year == 1994
    assert time.gmtime(parse_http_date("Monday, 06-Nov-34 08:49:37 GMT", NOW_2026)).tm_year == 2034


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


def _asctime(at: float) -> bytes:
    t = time.gmtime(at)
    return time.strftime(f"%a %b {t.tm_mday:2d} %H:%M:%S %Y", t).encode()


@pytest.mark.usefixtures("new_york")
@pytest.mark.parametrize("form", ["imf", "rfc850", "asctime"])
async def test_a_current_date_is_accepted_in_every_form_under_a_non_utc_tz(
    setup: Setup, form: str
) -> None:
    """Issue 12 point 12: the asctime form was read as local time, so under TZ=America/New_York
    a current Date was refused as hours away."""
    assert time.localtime().tm_gmtoff != 0  # the zone really is in force
    at = now()
    text = {
        "imf": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(at)).encode(),
        "rfc850": time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(at)).encode(),
        "asctime": _asctime(at),
    }[form]
    request = bhttp.Request(
        b"POST",
        b"https",
        b"enclave.test",
        b"/v1/chat/completions",
        headers=((b"content-type", b"application/json"), (b"date", text)),
        content=json.dumps({"events": 1, "stream": False}).encode(),
    )
    body, decoder = chunked_body(setup.xwing, request)
    out = await call(setup.app, body)
    response = bhttp.decode_response(b"".join(decoder.feed(out.body)) + decoder.finish())
    assert response.status == 200, response.content
    assert setup.recorder.failures == []
