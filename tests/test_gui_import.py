"""The Import dialog (issue 11, section 6): servers found in a real
~/.claude.json as checkboxes; Import adds the checked one through the real
service (discovery against the real MCP server) and, asked to, rewrites that
entry and no other."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402 - after QT_QPA_PLATFORM

from .test_gui import gui  # noqa: E402, F401 - the window over a real service

pytestmark = pytest.mark.timeout(120)


def test_import_dialog_adds_and_rewrites_only_the_checked_server(qtbot, gui, stack, tmp_path, monkeypatch):  # noqa: F811
    _, mcp = stack
    _, _, window = gui
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("CODEX_HOME", raising=False)
    path = home / ".claude.json"
    original = {
        "numStartups": 3,
        "mcpServers": {
            "team": {"type": "http", "url": mcp.url},
            "other": {"type": "http", "url": "https://other.example/mcp"},
        },
    }
    path.write_text(json.dumps(original, indent=2))
    path.chmod(0o600)

    window.import_action.trigger()
    dialog = window.dialogs[-1]
    assert [dialog.list.item(i).text().split()[0] for i in range(dialog.list.count())] == ["team", "other"]
    assert all(dialog.list.item(i).checkState() == Qt.CheckState.Unchecked for i in range(dialog.list.count()))
    assert not dialog.import_button.isEnabled()
    assert dialog.rewrite_box.text() == "Also rewrite the client's config to go through the broker"

    dialog.list.item(0).setCheckState(Qt.CheckState.Checked)
    assert dialog.import_button.isEnabled()
    dialog.rewrite_box.setChecked(True)
    with qtbot.waitSignal(dialog.imported, timeout=30000) as imported:
        dialog.import_button.click()
    assert imported.args == [["team"]]
    qtbot.waitUntil(lambda: window.model.row("team") is not None, timeout=10000)
    assert window.model.row("other") is None

    after = json.loads(path.read_text())
    assert after["mcpServers"]["team"]["headersHelper"].endswith("headers team")
    assert after["mcpServers"]["other"] == original["mcpServers"]["other"]
    assert after["numStartups"] == 3 and list(after) == list(original)
    backups = [p for p in home.iterdir() if p.name.startswith(".claude.json.bak-")]
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == original
    assert "Rewrote team" in dialog.outcome.text()


def test_import_dialog_rewrites_two_entries_of_one_file(qtbot, gui, stack, tmp_path, monkeypatch):  # noqa: F811
    """Every entry after the first of a file said "Not rewritten ... changed":
    each kept the scan's digest. Now one read, one backup, one write per file."""
    _, mcp = stack
    _, _, window = gui
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("CODEX_HOME", raising=False)
    path = home / ".claude.json"
    original = {"mcpServers": {"team": {"type": "http", "url": mcp.url}, "mirror": {"url": mcp.url}}}
    path.write_text(json.dumps(original, indent=2))
    path.chmod(0o600)

    window.import_action.trigger()
    dialog = window.dialogs[-1]
    for i in range(dialog.list.count()):
        dialog.list.item(i).setCheckState(Qt.CheckState.Checked)
    dialog.rewrite_box.setChecked(True)
    with qtbot.waitSignal(dialog.imported, timeout=30000) as imported:
        dialog.import_button.click()
    assert imported.args == [["team", "team"]]  # one URL, one connection

    after = json.loads(path.read_text())
    assert [after["mcpServers"][e]["headersHelper"].split()[-2:] for e in ("team", "mirror")] == [
        ["headers", "team"]
    ] * 2
    backups = [p for p in home.iterdir() if p.name.startswith(".claude.json.bak-")]
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == original
    assert "Not rewritten" not in dialog.outcome.text()
    assert "Rewrote team" in dialog.outcome.text() and "Rewrote mirror" in dialog.outcome.text()
