"""The approval dialog and untrusted text in the desktop app (pytest-qt, real service and servers).

- Enter and Escape in the consent prompt deny; they never allow.
- In the desktop app the answer is given in the window, never over the socket.
- Process names, paths, issuers and scopes are shown as text, not as markup:
  a process named `x<!--` must not hide "wants the token for NAME".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import Qt as QtGuiNamespace
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QLabel

from broker.client.api_client import BrokerClient, ServiceError

from . import test_gui
from .test_gui import add_via_dialog, row_status

gui = test_gui.gui  # the desktop app with its service, from test_gui

pytestmark = pytest.mark.timeout(120)


def shown(text: str, fmt: Qt.TextFormat = Qt.TextFormat.AutoText) -> str:
    """What Qt draws for `text`: QLabel, QMessageBox and QToolTip decide rich
    versus plain the same way (the format, else Qt::mightBeRichText)."""
    if fmt == Qt.TextFormat.PlainText or (fmt == Qt.TextFormat.AutoText and not QtGuiNamespace.mightBeRichText(text)):
        return text
    doc = QTextDocument()
    doc.setHtml(text)
    return doc.toPlainText()


def label_text(label: QLabel) -> str:
    return shown(label.text(), label.textFormat())


def approval_dialogs(window):
    return [d for d in window.dialogs if type(d).__name__ == "ApprovalDialog" and d.isVisible()]


def fetch_in_thread(name: str) -> tuple[threading.Thread, list[str]]:
    out: list[str] = []

    def run() -> None:
        try:
            out.append(BrokerClient().token(name)["token_type"])
        except ServiceError as exc:
            out.append(exc.code)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def grants() -> list[dict]:
    return BrokerClient().request("GET", "/v1/grants")["grants"]


def revoke_all() -> None:
    for g in grants():
        BrokerClient().request("DELETE", f"/v1/grants/{g['id']}")


def connected(qtbot, window, name: str, url: str) -> None:
    add_via_dialog(qtbot, window, name, url).add_button.click()
    qtbot.waitUntil(lambda: row_status(window, name) == "connected", timeout=30000)


@pytest.mark.parametrize("gui", ["ask"], indirect=True)
def test_enter_and_escape_deny(qtbot, gui, stack):
    _, mcp = stack
    _, _, window = gui
    connected(qtbot, window, "a", mcp.url)

    def press(key: Qt.Key, focus_allow: bool = False) -> list[str]:
        thread, out = fetch_in_thread("a")
        qtbot.waitUntil(lambda: len(approval_dialogs(window)) == 1, timeout=10000)
        dialog = approval_dialogs(window)[0]
        if focus_allow:
            dialog.allow_once.setFocus()  # the user tabbed to "Allow once", then hit Enter
        target = dialog.focusWidget() or dialog  # where a key press goes
        qtbot.keyClick(target, key)
        thread.join(15)
        assert not thread.is_alive()
        assert not any(g["allow"] for g in grants())
        revoke_all()  # so the next request asks again
        return out

    assert press(Qt.Key.Key_Return) == ["access_denied"]
    assert press(Qt.Key.Key_Enter) == ["access_denied"]
    assert press(Qt.Key.Key_Escape) == ["access_denied"]
    assert press(Qt.Key.Key_Return, focus_allow=True) == ["access_denied"]


@pytest.mark.parametrize("gui", ["ask"], indirect=True)
def test_the_socket_cannot_answer_in_the_desktop_app(qtbot, gui, stack, tmp_path):
    _, mcp = stack
    _, _, window = gui
    connected(qtbot, window, "a", mcp.url)
    thread, out = fetch_in_thread("a")
    qtbot.waitUntil(lambda: len(approval_dialogs(window)) == 1, timeout=10000)
    dialog = approval_dialogs(window)[0]
    [pending] = BrokerClient().request("GET", "/v1/approvals")["approvals"]
    assert pending["id"] == dialog.request.id
    # Another process (not related to the requester) answers over the socket.
    exe = str(Path(sys.executable).with_name("mcp-token-broker"))
    answer = subprocess.run(
        [exe, "approve", pending["id"], "allow_always", "--code", "0000-0000"],
        capture_output=True, text=True, timeout=30, start_new_session=True, check=False,
    )  # fmt: skip
    assert answer.returncode != 0 and "desktop app" in answer.stderr, answer.stderr
    assert grants() == [] and dialog.isVisible() and thread.is_alive()
    dialog.deny.click()
    thread.join(15)
    assert out == ["access_denied"]


REQUESTER = """
import subprocess, sys
r = subprocess.run([sys.argv[1], "token", "a"], capture_output=True, text=True)
print(r.returncode, flush=True)
"""


@pytest.mark.parametrize("gui", ["ask"], indirect=True)
def test_markup_in_a_process_name_is_shown_literally(qtbot, gui, stack, tmp_path):
    _, mcp = stack
    _, _, window = gui
    connected(qtbot, window, "a", mcp.url)
    script = tmp_path / "x<!--.py"  # the application's name becomes "python x<!--.py"
    script.write_text(REQUESTER)
    cli = str(Path(sys.executable).with_name("mcp-token-broker"))
    proc = subprocess.Popen([sys.executable, str(script), cli], stdout=subprocess.PIPE, text=True)
    try:
        qtbot.waitUntil(lambda: len(approval_dialogs(window)) == 1, timeout=20000)
        dialog = approval_dialogs(window)[0]
        assert dialog.request.client.name == "python x<!--.py"
        texts = [label_text(label) for label in dialog.findChildren(QLabel)]
        headline = texts[0]
        assert "python x<!--.py wants the token for a." in headline, texts
        assert str(script) in texts  # the script path, literally
        dialog.allow_once.click()
        assert proc.stdout.readline().strip() == "0"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    clients = window.show_clients()
    qtbot.waitUntil(lambda: clients.table.rowCount() == 1, timeout=5000)
    item = clients.table.item(0, 0)
    assert item.text() == "python x<!--.py"
    assert str(script) in shown(item.toolTip())


def test_markup_from_a_server_is_shown_literally(qtbot, qapp):
    from broker.oauth.checklist import CheckItem
    from ui.add_dialog import AddDialog
    from ui.details import DetailsPane

    pane = DetailsPane(bridge=None)  # type: ignore[arg-type]  # the pane only draws here; no service
    qtbot.addWidget(pane)
    pane.name = "demo"
    view = {
        "status": "connected",
        "server_url": "https://mcp.example/mcp",
        "issuer": "<b>issuer</b>",
        "requested_scopes": ["<i>read</i>"],
        "scopes": ["x<!--", "write"],
        "expires_at": time.time() + 3600,
        "has_refresh_token": True,
        "registration": {"method": "dynamic", "client_id": "<a href='x'>id</a>"},
        "security": [
            CheckItem(key="pkce", label="PKCE <b>S256</b>", verdict="pass", detail="<img src=x>detail").to_json()
        ],
    }
    audit = [{"time": 1.0, "outcome": "served", "client": "x<!--", "pid": 7}]
    pane._loaded("demo", view, audit)
    assert label_text(pane.issuer) == "<b>issuer</b>"
    assert label_text(pane.requested) == "<i>read</i>"
    assert label_text(pane.granted) == "x<!-- write"
    assert "<a href='x'>id</a>" in label_text(pane.registration)
    [check] = pane.checklist.labels
    assert label_text(check).endswith("PKCE <b>S256</b>")
    assert shown(check.toolTip()) == "<img src=x>detail"
    assert "x<!--" in pane.audit.item(0).text()

    # The add dialog shows what discovery found the same way.
    dialog = AddDialog(bridge=None, existing=[])  # type: ignore[arg-type]  # drawn only; no discovery runs
    qtbot.addWidget(dialog)
    for label in (dialog.issuer, dialog.offered, dialog.requested, dialog.method, dialog.discover_error):
        label.setText("<b>issuer</b>")
        assert label_text(label) == "<b>issuer</b>"


def test_table_tooltips_show_server_text_literally(qapp):
    """Scopes and errors come from servers; the table's tool tips must not render them."""
    from ui.model import SCOPES, STATUS, ConnectionsModel

    model = ConnectionsModel()
    view = {
        "name": "a",
        "server_url": "https://a/mcp",
        "status": "connected",
        "scopes": ["<b>read</b>"],
        "expires_at": None,
    }
    model.set_views([view])
    model.refresh_failed("a", "<img src=x>boom")
    scopes_tip = model.data(model.index(0, SCOPES), Qt.ItemDataRole.ToolTipRole)
    status_tip = model.data(model.index(0, STATUS), Qt.ItemDataRole.ToolTipRole)
    assert shown(scopes_tip) == "<b>read</b>"
    assert "Last error: <img src=x>boom" in shown(status_tip)


# -- issue 10, item 7: the dialog counts down, closes when the question ends, reads well --------


def waiting_seconds(dialog) -> int:
    match = re.fullmatch(r"Waiting (\d+) s…", dialog.countdown.text())
    assert match, dialog.countdown.text()
    return int(match.group(1))


@pytest.mark.parametrize("gui", ["ask"], indirect=True)
def test_the_dialog_counts_down_to_the_services_deadline(qtbot, gui, stack):
    _, mcp = stack
    _, bridge, window = gui
    connected(qtbot, window, "a", mcp.url)
    thread, out = fetch_in_thread("a")
    qtbot.waitUntil(lambda: len(approval_dialogs(window)) == 1, timeout=10000)
    dialog = approval_dialogs(window)[0]
    first = waiting_seconds(dialog)
    # The service's deadline, not a guess of the dialog's own: 30 s in this fixture.
    assert 0 < first <= bridge.service.approval_timeout
    assert abs(first - dialog.request.seconds_left()) <= 1
    qtbot.waitUntil(lambda: waiting_seconds(dialog) < first, timeout=5000)
    dialog.deny.click()
    thread.join(15)
    assert out == ["access_denied"]


@pytest.mark.parametrize("gui", ["ask"], indirect=True)
def test_the_dialog_closes_when_answered_elsewhere(qtbot, gui, stack):
    _, mcp = stack
    _, bridge, window = gui
    connected(qtbot, window, "a", mcp.url)
    thread, out = fetch_in_thread("a")
    qtbot.waitUntil(lambda: len(approval_dialogs(window)) == 1, timeout=10000)
    dialog = approval_dialogs(window)[0]
    # Another window of the app answers the same request.
    bridge.answer(dialog.request, "allow_session")
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=10000)
    thread.join(15)
    assert out == ["Bearer"]
    assert dialog.decision is None  # it closed; it answered nothing itself (no deny on the way out)
    assert [(g["allow"], g["scope"]) for g in grants()] == [(True, "session")]


@pytest.mark.parametrize("gui", ["ask"], indirect=True)
def test_the_dialog_closes_when_the_request_expires(qtbot, gui, stack):
    _, mcp = stack
    _, bridge, window = gui
    connected(qtbot, window, "a", mcp.url)
    bridge.service.approval_timeout = 2  # the service's, which the dialog follows
    thread, out = fetch_in_thread("a")
    qtbot.waitUntil(lambda: len(approval_dialogs(window)) == 1, timeout=10000)
    dialog = approval_dialogs(window)[0]
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=10000)
    thread.join(15)
    assert out == ["approval_timeout"]
    assert dialog.decision is None and grants() == []


def _luminance(color) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color.redF()) + 0.7152 * channel(color.greenF()) + 0.0722 * channel(color.blueF())


def contrast(a, b) -> float:
    """WCAG 2 contrast ratio."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_warning_and_the_phrase(qtbot, qapp):
    from PySide6.QtGui import QPalette

    from broker.service.grants import UNTIL_STOP
    from ui.approval import ApprovalDialog
    from ui.clients import ClientsDialog

    request = FakeRequest()
    dialog = ApprovalDialog(FakeBridge(), request)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    note = dialog.warning
    assert "imitate" in note.text()
    fg = note.palette().color(note.foregroundRole())  # a style sheet's colour lands here too
    bg = dialog.palette().color(QPalette.ColorRole.Window)
    assert contrast(fg, bg) >= 4.5, (fg.name(), bg.name())

    # One phrase for "until the broker stops": the button, its tool tip, the Clients view.
    assert dialog.allow_once.text().replace("&", "") == f"Allow {UNTIL_STOP}"
    assert UNTIL_STOP in dialog.allow_once.toolTip() and UNTIL_STOP in dialog.deny.toolTip()
    clients = ClientsDialog(FakeBridge(grants=[_grant("session"), _grant("always")]))
    qtbot.addWidget(clients)
    assert [clients.table.item(r, 3).text() for r in range(2)] == [UNTIL_STOP, "always"]


def _grant(scope: str) -> dict:
    return {"id": scope, "client_key": "k", "client_name": "claude", "connection": "gh", "allow": True,
            "scope": scope, "created_at": 0}  # fmt: skip


class FakeClient:
    name = "claude"
    exe = "/usr/bin/claude"
    script = None
    pid = app_pid = 4242
    chain = ()


class FakeRequest:
    """What the dialog reads of a `broker.service.grants.ApprovalRequest` (drawn only: no service)."""

    id = "abc"
    connection = "gh"
    client = FakeClient()

    def seconds_left(self) -> float:
        return 42.0


class FakeBridge(QObject):
    """What the dialogs take from `ui.bridge.Bridge` here: a signal, a call, an answer."""

    approvalClosed = Signal(str, str)

    def __init__(self, grants: list | None = None) -> None:
        super().__init__()
        self._grants = grants or []

    def call(self, fn, on_done=None, on_error=None):
        on_done(self._grants)

    def answer(self, request, decision: str) -> None:  # closing the dialog denies
        pass
