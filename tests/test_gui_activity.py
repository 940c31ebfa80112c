"""Details' Recent activity folds repeats (issue 10, item 17): twenty hand-outs
to one client in one minute are one line with ×20, under a real service."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from broker.client.api_client import BrokerClient  # noqa: E402 - after QT_QPA_PLATFORM
from broker.service.audit import read_audit  # noqa: E402 - after QT_QPA_PLATFORM
from broker.storage.paths import Paths  # noqa: E402 - after QT_QPA_PLATFORM

from .test_gui import gui, seeded_gui  # noqa: E402, F401 - the window over a real service (a fixture)

pytestmark = pytest.mark.timeout(120)


def test_recent_activity_shows_one_counted_line_per_client_and_minute(qtbot, request, user_dirs, tmp_path):
    _, _, window = seeded_gui(request, user_dirs, tmp_path)
    qtbot.waitUntil(lambda: window.details.view is not None and window.details.name == "demo", timeout=5000)
    client = BrokerClient()
    for _ in range(20):
        assert client.token("demo")["token_type"] == "Bearer"

    def shown() -> list[str]:
        return [window.details.audit.item(i).text() for i in range(window.details.audit.count())]

    mine = f"(pid {os.getpid()}) got demo's token"

    def counted() -> int:
        return sum(int(t.rsplit("×", 1)[1]) if "×" in t else 1 for t in shown() if mine in t)

    window.details.refresh()
    qtbot.waitUntil(lambda: counted() == 20, timeout=5000)
    # One line per minute the twenty hand-outs spanned (almost always one), newest first.
    raw = read_audit(Paths.default().state_dir / "audit.log", connection="demo")
    minutes = sorted({int(e["time"] // 60) for e in raw}, reverse=True)
    assert len(raw) == 20 and len(shown()) == len(minutes), shown()
    assert [t.endswith("×20") for t in shown()] == [len(minutes) == 1] * len(minutes), shown()
