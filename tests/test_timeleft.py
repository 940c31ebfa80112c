"""One "time left" formatter: the CLI's words and the app's countdown."""

from __future__ import annotations

import pytest

from broker.timeleft import time_left

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("left", "words", "clock"),
    [
        (None, "no expiry", "—"),
        (-5, "expired", "expired"),
        (0, "expired", "expired"),
        (1, "in 1s", "0:01"),
        (59, "in 59s", "0:59"),
        (119, "in 119s", "1:59"),
        (120, "in 2m", "2:00"),
        (3599, "in 59m", "59:59"),
        (3600, "in 60m", "1h 00m"),
        (3 * 3600 + 5 * 60 + 7, "in 3h", "3h 05m"),
        (47 * 3600 + 59 * 60, "in 47h", "47h 59m"),
        (2 * 86400, "in 2d", "2d 0h"),
        (9 * 86400 + 5 * 3600, "in 9d", "9d 5h"),
    ],
)
def test_words_for_the_cli_and_a_countdown_for_the_app(left, words, clock):
    expires_at = None if left is None else int(NOW) + left
    assert time_left(expires_at, NOW) == words
    assert time_left(expires_at, NOW, style="words") == words
    assert time_left(expires_at, NOW, style="clock") == clock
