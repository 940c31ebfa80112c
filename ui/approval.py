"""Ask the user whether a client may have a connection's token (policy `ask`).

Non-modal: the service holds only that one request while the dialog is
open; other clients and the window carry on.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLabel, QVBoxLayout, QWidget

from .bridge import Bridge
from .plaintext import escape, plain_label

__all__ = ["ApprovalDialog"]


class ApprovalDialog(QDialog):
    def __init__(self, bridge: Bridge, request: Any, *, timeout: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.request = request
        self.decision: str | None = None
        client = request.client
        self.setWindowTitle("Allow access to a token?")
        self.setModal(False)
        # Our bold, their text escaped: a name like `x<!--` must not hide the question.
        headline = QLabel(f"<b>{escape(client.name)}</b> wants the token for <b>{escape(request.connection)}</b>.")
        headline.setTextFormat(Qt.TextFormat.RichText)
        headline.setWordWrap(True)
        headline.setAccessibleName("Question")
        form = QFormLayout()
        for label, value, tip in (
            ("Application:", client.name, "The program that asked, found by walking up from the requesting process"),
            ("Executable:", client.exe or "unknown", "Its executable on disk"),
            ("Script:", client.script or "—", "For interpreters such as python or node: the script they run"),
            ("Process id:", str(client.app_pid or client.pid or "unknown"), "The process id of the application"),
            ("Connection:", request.connection, "The MCP server whose token is asked for"),
        ):
            value_label = plain_label(value)
            value_label.setWordWrap(True)
            value_label.setToolTip(tip)
            value_label.setAccessibleName(label.rstrip(":"))
            form.addRow(label, value_label)
        if client.chain:
            form.addRow("Started via:", plain_label(" < ".join(client.chain)))
        note = QLabel("Programs running as you can imitate each other; allow only what you expect.")
        note.setWordWrap(True)
        note.setStyleSheet("color: palette(mid);")
        buttons = QDialogButtonBox()
        self.allow_once = buttons.addButton("Allow &once", QDialogButtonBox.ButtonRole.AcceptRole)
        self.allow_once.setToolTip("Allow this application until the broker restarts")
        self.allow_always = buttons.addButton("&Always allow", QDialogButtonBox.ButtonRole.AcceptRole)
        self.allow_always.setToolTip("Remember: this application may always have this connection's token")
        self.deny = buttons.addButton("&Deny", QDialogButtonBox.ButtonRole.RejectRole)
        self.deny.setToolTip("Refuse this application until the broker restarts")
        # Enter denies, wherever the focus is; allowing takes a click, Space on
        # a focused Allow button, or its Alt shortcut. Escape denies too (reject).
        # No button is auto-default: a focused auto-default button takes the
        # default away from Deny (Qt moves it with the focus).
        for button in (self.allow_once, self.allow_always, self.deny):
            button.setAutoDefault(False)
        self.deny.setDefault(True)
        self.allow_once.clicked.connect(lambda: self._answer("allow_session"))
        self.allow_always.clicked.connect(lambda: self._answer("allow_always"))
        self.deny.clicked.connect(lambda: self._answer("deny_session"))
        layout = QVBoxLayout(self)
        layout.addWidget(headline)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)
        self.deny.setFocus(Qt.FocusReason.OtherFocusReason)  # not "Allow once", the first in the tab order
        # The service stops waiting after its timeout; so does the dialog.
        QTimer.singleShot(int(timeout * 1000), self._expire)

    def _answer(self, decision: str) -> None:
        if self.decision is None:
            self.decision = decision
            self.bridge.answer(self.request, decision)
        self.accept() if decision.startswith("allow") else self.reject()

    def _expire(self) -> None:
        if self.decision is None:
            self.decision = "expired"
            self.reject()

    def reject(self) -> None:
        if self.decision is None:  # Escape or the window's close button
            self._answer("deny_session")
            return
        super().reject()
