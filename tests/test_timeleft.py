"""One "time left" formatter: the CLI's words and the app's countdown."""

from __future__ import annotations

import pytest

from broker.timeleft import expiry, time_left

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("left", "words", "clock"),
    [
        (None, "no expiry", "—"),
        (-5, "expired", "expired"),
        (0, "expired", "expired"),
        (1, "in 1 s", "0:01"),
        (59, "in 59 s", "0:59"),
        (119, "in 119 s", "1:59"),
        (120, "in 2 min", "2:00"),
        (3599, "in 59 min", "59:59"),
        (3600, "in 60 min", "1h 00m"),
        (3 * 3600 + 5 * 60 + 7, "in 3 h", "3h 05m"),
        (47 * 3600 + 59 * 60, "in 47 h", "47h 59m"),
        (2 * 86400, "in 2 days", "2d 0h"),
        (9 * 86400 + 5 * 3600, "in 9 days", "9d 5h"),
    ],
)
def test_words_for_the_cli_and_a_countdown_for_the_app(left, words, clock):
    expires_at = None if left is None else int(NOW) + left
    assert time_left(expires_at, NOW) == words
    assert time_left(expires_at, NOW, style="words") == words
    assert time_left(expires_at, NOW, style="clock") == clock


@pytest.fixture
def kathmandu(monkeypatch):
    """Local time 45 minutes off any whole-hour zone, restored afterwards."""
    import time

    monkeypatch.setenv("TZ", "Asia/Kathmandu")  # UTC+5:45, no daylight saving
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_expiry_in_local_clock_time_for_people(kathmandu):
    noon = 1_700_000_000 - 1_700_000_000 % 86400 + 6 * 3600 + 15 * 60  # 12:00 local
    assert expiry(noon + 9 * 60 + 30, noon) == "expires 12:09 (in 9 min)"
    assert expiry(noon - 60, noon) == "expired 11:59"
    assert expiry(noon + 86400, noon) == "expires 2023-11-15 12:00 (in 24 h)"
    assert expiry(None, noon) == "no expiry"
