"""Ask the user whether a client may have a connection's token (policy `ask`).

Non-modal: the service holds only that one request while the dialog is
open; other clients and the window carry on. It counts down to the
request's deadline, which the service set, and closes itself when the
service says the question is over (answered elsewhere, refused, expired).
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from broker.service.grants import UNTIL_STOP

from .bridge import Bridge
from .plaintext import escape, plain_label

__all__ = ["ApprovalDialog"]


class ApprovalDialog(QDialog):
    def __init__(self, bridge: Bridge, request: Any, *, parent: QWidget | None = None) -> None:
        """The request's own deadline, from the service, decides how long it waits."""
        super().__init__(parent)
        self.bridge = bridge
        self.request = request
        #: What this dialog answered (None: nothing, e.g. it was answered elsewhere).
        self.decision: str | None = None
        #: How the question ended, as the service said ("answered", "refused", "expired").
        self.outcome: str | None = None
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
        self.countdown = QLabel()
        self.countdown.setAccessibleName("Time left to answer")
        self.countdown.setToolTip("The request waits this long for your answer; then the application gets no token")
        # The palette's own text colour (readable on the dialog's background, in
        # light and dark themes alike) and a warning icon; no dimmed colour.
        self.warning = QLabel("Programs running as you can imitate each other; allow only what you expect.")
        self.warning.setWordWrap(True)
        icon = QLabel()
        size = self.style().pixelMetric(QStyle.PixelMetric.PM_SmallIconSize)
        icon.setPixmap(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning).pixmap(size, size))
        icon.setAccessibleName("Warning")
        warning_row = QHBoxLayout()
        warning_row.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        warning_row.addWidget(self.warning, 1)
        buttons = QDialogButtonBox()
        self.allow_once = buttons.addButton(f"Allow &{UNTIL_STOP}", QDialogButtonBox.ButtonRole.AcceptRole)
        self.allow_once.setToolTip(f"Allow this application {UNTIL_STOP}")
        self.allow_always = buttons.addButton("&Always allow", QDialogButtonBox.ButtonRole.AcceptRole)
        self.allow_always.setToolTip("Remember: this application may always have this connection's token")
        self.deny = buttons.addButton("&Deny", QDialogButtonBox.ButtonRole.RejectRole)
        self.deny.setToolTip(f"Refuse this application {UNTIL_STOP}")
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
        layout.addWidget(self.countdown)
        layout.addLayout(warning_row)
        layout.addWidget(buttons)
        self.deny.setFocus(Qt.FocusReason.OtherFocusReason)  # not "Allow", the first in the tab order
        # The service stops waiting at the request's deadline and then says so
        # (approvalClosed), as it does when anyone else answers; the dialog
        # counts down to that deadline and closes on that word, never on a guess.
        self._ticker = QTimer(self)
        self._ticker.setInterval(250)
        self._ticker.timeout.connect(self._tick)
        self._ticker.start()
        self._tick()
        bridge.approvalClosed.connect(self._closed)

    def _tick(self) -> None:
        self.countdown.setText(f"Waiting {math.ceil(self.request.seconds_left())} s…")

    def _closed(self, approval_id: str, outcome: str) -> None:
        if approval_id != self.request.id or self.outcome is not None:
            return
        self.outcome = outcome
        self._ticker.stop()
        if self.isVisible():
            super().reject()  # close without answering: the question is over

    def _answer(self, decision: str) -> None:
        if self.decision is None:
            self.decision = decision
            self.bridge.answer(self.request, decision)
        self.accept() if decision.startswith("allow") else self.reject()

    def reject(self) -> None:
        if self.decision is None and self.outcome is None:  # Escape or the window's close button
            self._answer("deny_session")
            return
        super().reject()
