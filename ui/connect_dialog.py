"""Progress of one login: waiting for the browser (or for the user on another
device, RFC 8628), exchanging, done or failed."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFont, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .bridge import Bridge
from .plaintext import plain_label

__all__ = ["ConnectDialog"]

_STAGES = {
    "discovering": "Checking the server…",
    "registering": "Registering with the authorization server…",
    "waiting_for_browser": "Waiting for you to log in in the browser…",
    "browser_failed": "No browser could be opened: copy the link below into one.",
    "paste_rejected": "That address was not for this login.",
    "exchanging": "Exchanging the code for tokens…",
    "waiting_for_device": "Waiting for you to log in on the other device…",
    "done": "Connected.",
}


def _device_details(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last `waiting_for_device` event of a flow: code, URL, expiry."""
    for event in reversed(events):
        if event.get("stage") == "waiting_for_device" and event.get("user_code"):
            return event
    return None


def _countdown(expires_at: float, now: float) -> str:
    left = int(expires_at - now)
    if left <= 0:
        return "The code has expired: cancel and connect again."
    return f"The code expires in {left // 60}:{left % 60:02d}."


def _with_host(stage: str, text: str, url: str) -> str:
    """Name the login page's host first: a long link shows its tail, and the
    host is what a person checks before typing a password."""
    host = urlsplit(url).hostname
    if not host:
        return text
    if stage == "waiting_for_browser":
        return f"Log in at {host} in your browser. Waiting for you to log in…"
    if stage == "browser_failed":
        return f"Log in at {host}: no browser could be opened, so copy the link below into one."
    return text


class ConnectDialog(QDialog):
    """Subscribes before the flow starts (events are filtered by connection name)."""

    def __init__(self, bridge: Bridge, name: str, parent: QWidget | None = None, *, mode: str = "browser") -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.name = name
        self.mode = mode
        self.expires_at: float | None = None
        self.flow_id: str | None = None
        self.finished_ok: bool | None = None
        self.setWindowTitle(f"Connect {name}")
        self.setMinimumWidth(520)
        self.stage = plain_label("Starting…")  # "Login failed: ..." quotes the server
        self.stage.setWordWrap(True)
        self.stage.setAccessibleName("Login progress")
        # A server's scope challenge widened this login (broker.stepup): say how, before the browser opens.
        self.asking = plain_label("")
        self.asking.setWordWrap(True)
        self.asking.setAccessibleName("Scopes this login adds")
        self.asking.setVisible(False)
        self.link = QLineEdit()
        self.link.setReadOnly(True)
        self.link.setAccessibleName("Login link")
        self.link.setToolTip("The authorization server's login page for this connection")
        self.copy = QPushButton("&Copy link")
        self.copy.setToolTip("Copy the login link, for when the browser did not open")
        self.reopen = QPushButton("&Open browser again")
        for w in (self.copy, self.reopen, self.link):
            w.setEnabled(False)
        # The browser login's link row; a device login has its own address and code instead.
        self.links = QWidget()
        self.links.setVisible(mode != "device")
        links = QHBoxLayout(self.links)
        links.setContentsMargins(0, 0, 0, 0)
        links.addWidget(self.link)
        links.addWidget(self.copy)
        links.addWidget(self.reopen)
        # Device login: the code large, a Copy button, the URL as plain text, the time left.
        self.device = QWidget()
        self.where = plain_label("")
        self.where.setWordWrap(True)
        self.device_url = QLineEdit()
        self.device_url.setReadOnly(True)
        self.device_url.setAccessibleName("Address to open on the other device")
        self.code = QLabel()
        self.code.setTextFormat(Qt.TextFormat.PlainText)
        self.code.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.code.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.code.setAccessibleName("Code to enter on the other device")
        font = QFont(self.code.font())
        font.setPointSizeF(font.pointSizeF() * 2.5)
        font.setBold(True)
        font.setStyleHint(QFont.StyleHint.Monospace)
        font.setFamily("monospace")
        self.code.setFont(font)
        self.copy_code = QPushButton("Copy c&ode")
        self.copy_code.setToolTip("Copy the code, to paste it on the other device")
        self.countdown = QLabel()
        code_row = QHBoxLayout()
        code_row.addWidget(self.code, 1)
        code_row.addWidget(self.copy_code)
        device_layout = QVBoxLayout(self.device)
        device_layout.setContentsMargins(0, 0, 0, 0)
        device_layout.addWidget(self.where)
        device_layout.addWidget(self.device_url)
        device_layout.addLayout(code_row)
        device_layout.addWidget(self.countdown)
        self.device.setVisible(False)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self._tick)
        self.other_device = QPushButton("Use &another device")
        self.other_device.setToolTip("Log in on a phone or another computer with a code (the server offers it)")
        self.other_device.setVisible(False)
        self.other_device.clicked.connect(self._switch_to_device)
        self.copy_code.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.code.text()))
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Cancel).setToolTip("Stop waiting for this login")
        layout = QVBoxLayout(self)
        layout.addWidget(self.stage)
        layout.addWidget(self.asking)
        layout.addWidget(self.links)
        layout.addWidget(self.device)
        layout.addWidget(self.other_device)
        layout.addWidget(self.buttons)
        self.buttons.rejected.connect(self.cancel)
        self.copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.link.text()))
        self.reopen.clicked.connect(self._reopen)
        bridge.flowProgress.connect(self._progress)
        bridge.flowFinished.connect(self._finished)
        self._listening = True

    def start(self) -> None:
        # The connection's view first: the scopes a step-up adds are shown before the login starts.
        self.bridge.call(lambda s: s.view(self.name), self._begin, self._failed)

    def _begin(self, view: Any) -> None:
        step_up = view.get("step_up") if isinstance(view, dict) else None
        if step_up and step_up.get("pending"):
            self.asking.setText(f"Will also ask for: {' '.join(step_up.get('missing') or ())}")
            self.asking.setToolTip(f"This login asks for: {' '.join(step_up.get('request') or ())}")
            self.asking.setVisible(True)
        mode = self.mode
        self.bridge.call(lambda s: s.start_flow(self.name, mode).id, self._started, self._failed)  # type: ignore[arg-type]
        if mode != "device":
            self.bridge.run(lambda s: s.show(self.name), self._offer_device)

    def _offer_device(self, view: dict[str, Any]) -> None:
        server = view.get("authorization_server") or {}
        self.other_device.setVisible(bool(server.get("device_authorization_endpoint")) and self.mode != "device")

    def _switch_to_device(self) -> None:
        """End the browser login and log in on another device instead."""
        flow_id = self.flow_id
        if flow_id is not None:
            self.bridge.call(lambda s: s.cancel_flow(flow_id))
        self.flow_id = None
        self.mode = "device"
        self.other_device.setVisible(False)
        self.links.setVisible(False)
        for w in (self.copy, self.reopen, self.link):
            w.setEnabled(False)
        self.stage.setText("Starting…")
        self.start()

    def _started(self, flow_id: str) -> None:
        self.flow_id = flow_id

    def _progress(self, name: str, flow_id: str, stage: str, message: str, url: Any) -> None:
        if name != self.name or (self.flow_id and flow_id != self.flow_id):
            return
        if self.mode == "device" and stage in ("waiting_for_browser", "browser_failed"):
            return  # the browser login being cancelled
        text = _STAGES.get(stage, message)
        if stage == "waiting_for_device":
            self.stage.setText(text)
            self.bridge.call(lambda s: _device_details(s.flow(flow_id).to_json()["events"]), self._show_device)
            return
        self.stage.setText(_with_host(stage, text, url) if isinstance(url, str) and url else text)
        if url:
            self.link.setText(url)
            self.link.setCursorPosition(0)  # the start of the link, not its tail
            for w in (self.copy, self.reopen, self.link):
                w.setEnabled(True)

    def _show_device(self, details: dict[str, Any] | None) -> None:
        if details is None or self.finished_ok is not None:
            return
        url = str(details.get("url") or "")
        host = urlsplit(url).hostname or "the authorization server"
        self.where.setText(f"At {host}: open this address on any device (a phone will do) and enter the code.")
        self.device_url.setText(url)
        self.device_url.setCursorPosition(0)
        self.code.setText(str(details["user_code"]))
        expires = details.get("expires_at")
        self.expires_at = float(expires) if isinstance(expires, (int, float)) else None
        self.device.setVisible(True)
        self._tick()
        if self.expires_at is not None:
            self.timer.start()

    def _tick(self) -> None:
        if self.expires_at is None:
            self.countdown.setText("")
            return
        self.countdown.setText(_countdown(self.expires_at, time.time()))

    def _finished(self, name: str, flow_id: str, error: Any) -> None:
        if name != self.name or (self.flow_id and flow_id != self.flow_id):
            return
        if self.mode == "device" and self.flow_id is None and error and error.get("error") == "cancelled":
            return  # the browser login we cancelled to switch
        self.timer.stop()
        self._disconnect_signals()
        if error:
            self.finished_ok = False
            self.stage.setText(f"Login failed: {error.get('message', error.get('error'))}")
            self.stage.setStyleSheet("color: #cf222e;")
            self.buttons.setStandardButtons(QDialogButtonBox.StandardButton.Close)
            self.buttons.rejected.disconnect()
            self.buttons.rejected.connect(self.reject)
        else:
            self.finished_ok = True
            self.stage.setText(_STAGES["done"])
            self.accept()

    def _failed(self, exc: BaseException) -> None:
        self._finished(self.name, self.flow_id or "", {"message": str(exc)})

    def _reopen(self) -> None:
        url = self.link.text()

        def run() -> None:  # webbrowser may wait for the browser command: not on the GUI thread
            from broker.driver.browser import open_browser
            from broker.errors import BrowserRefused

            try:
                open_browser(url)
            except BrowserRefused:
                pass

        threading.Thread(target=run, name="reopen-browser", daemon=True).start()

    def cancel(self) -> None:
        flow_id = self.flow_id
        if flow_id is not None:
            self.bridge.call(lambda s: s.cancel_flow(flow_id))
        self._disconnect_signals()
        self.finished_ok = False
        self.reject()

    def _disconnect_signals(self) -> None:
        if not self._listening:
            return
        self._listening = False
        self.bridge.flowProgress.disconnect(self._progress)
        self.bridge.flowFinished.disconnect(self._finished)

    def closeEvent(self, event: Any) -> None:  # Qt's name
        if self.finished_ok is None:
            self.cancel()
        super().closeEvent(event)
