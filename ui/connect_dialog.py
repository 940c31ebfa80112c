"""Progress of one login: waiting for the browser, exchanging, done or failed."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHBoxLayout, QLineEdit, QPushButton, QVBoxLayout, QWidget

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
    "done": "Connected.",
}


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

    def __init__(self, bridge: Bridge, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.name = name
        self.flow_id: str | None = None
        self.finished_ok: bool | None = None
        self.setWindowTitle(f"Connect {name}")
        self.setMinimumWidth(520)
        self.stage = plain_label("Starting…")  # "Login failed: ..." quotes the server
        self.stage.setWordWrap(True)
        self.stage.setAccessibleName("Login progress")
        self.link = QLineEdit()
        self.link.setReadOnly(True)
        self.link.setAccessibleName("Login link")
        self.link.setToolTip("The authorization server's login page for this connection")
        self.copy = QPushButton("&Copy link")
        self.copy.setToolTip("Copy the login link, for when the browser did not open")
        self.reopen = QPushButton("&Open browser again")
        for w in (self.copy, self.reopen, self.link):
            w.setEnabled(False)
        links = QHBoxLayout()
        links.addWidget(self.link)
        links.addWidget(self.copy)
        links.addWidget(self.reopen)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Cancel).setToolTip("Stop waiting for this login")
        layout = QVBoxLayout(self)
        layout.addWidget(self.stage)
        layout.addLayout(links)
        layout.addWidget(self.buttons)
        self.buttons.rejected.connect(self.cancel)
        self.copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.link.text()))
        self.reopen.clicked.connect(self._reopen)
        bridge.flowProgress.connect(self._progress)
        bridge.flowFinished.connect(self._finished)
        self._listening = True

    def start(self) -> None:
        self.bridge.call(lambda s: s.start_flow(self.name, "browser").id, self._started, self._failed)

    def _started(self, flow_id: str) -> None:
        self.flow_id = flow_id

    def _progress(self, name: str, flow_id: str, stage: str, message: str, url: Any) -> None:
        if name != self.name or (self.flow_id and flow_id != self.flow_id):
            return
        text = _STAGES.get(stage, message)
        self.stage.setText(_with_host(stage, text, url) if isinstance(url, str) and url else text)
        if url:
            self.link.setText(url)
            self.link.setCursorPosition(0)  # the start of the link, not its tail
            for w in (self.copy, self.reopen, self.link):
                w.setEnabled(True)

    def _finished(self, name: str, flow_id: str, error: Any) -> None:
        if name != self.name or (self.flow_id and flow_id != self.flow_id):
            return
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
