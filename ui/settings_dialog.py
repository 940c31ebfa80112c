"""Settings: client policy, refresh margin, start at login.

Every change applies at once (the service saves config.json and reschedules
refreshes), so the dialog has only Close: there is nothing to cancel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from broker.service.schedule import refresh_margin
from broker.storage.config import Config

from . import autostart
from .bridge import Bridge

if TYPE_CHECKING:
    from broker.service.service import BrokerService

__all__ = ["SettingsDialog"]

_POLICIES = [
    ("ask", "Ask me (recommended)"),
    ("allow", "Allow every application of mine"),
    ("deny", "Deny unless I allowed it"),
]


def _minutes(seconds: float) -> str:
    whole, rest = divmod(round(seconds), 60)
    return f"{whole} min {rest} s" if rest else f"{whole} min"


def margin_effect(margin: int) -> str:
    """What a margin does, in one line: the scheduler's own rule applied to
    a one-hour and a ten-minute token (no jitter)."""
    hour = 3600 - refresh_margin(3600, margin)
    ten = 600 - refresh_margin(600, margin)
    return f"Refreshes a 1-hour token at {_minutes(hour)}, a 10-minute token at {_minutes(ten)}."


class SettingsDialog(QDialog):
    def __init__(self, bridge: Bridge, config: Config, parent: QWidget | None = None, *, settle_ms: int = 400) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.config = config
        self.setWindowTitle("Settings")
        self.policy = QComboBox()
        for key, label in _POLICIES:
            self.policy.addItem(label, key)
        self.policy.setCurrentIndex([k for k, _ in _POLICIES].index(config.client_policy))
        self.policy.setToolTip("What happens when an application without a grant asks for a token")
        self.policy.setAccessibleName("Client policy")
        self.margin = QSpinBox()
        self.margin.setRange(60, 3600)
        self.margin.setSuffix(" s")
        self.margin.setValue(config.refresh_margin)
        self.margin.setToolTip(
            "Refresh at least this long before a token expires (a quarter of the lifetime if longer, at most half)"
        )
        self.margin.setAccessibleName("Refresh margin")
        self.autostart = QCheckBox("Start MCP Token Broker when I log in")
        self.autostart.setChecked(autostart.is_enabled())
        self.autostart.setToolTip(f"Writes {autostart.autostart_path()}")
        form = QFormLayout()
        form.addRow("Unknown &clients:", self.policy)
        form.addRow("Refresh &margin:", self.margin)
        self.margin_effect = QLabel(margin_effect(self.margin.value()))
        self.margin_effect.setAccessibleName("What the refresh margin does")
        form.addRow("", self.margin_effect)
        form.addRow(self.autostart)
        self.note = QLabel("Changes apply at once.")
        self.error = QLabel()
        self.error.setStyleSheet("color: #cf222e;")
        self.error.setWordWrap(True)
        self.error.setVisible(False)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.note)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self._applying = False
        self._again = False
        # A change is applied once the value settles (typing 1200 is not four writes).
        self.settle = QTimer(self)
        self.settle.setSingleShot(True)
        self.settle.setInterval(settle_ms)
        self.settle.timeout.connect(self.save)
        self.policy.currentIndexChanged.connect(self.settle.start)
        self.margin.valueChanged.connect(lambda v: self.margin_effect.setText(margin_effect(v)))
        self.margin.valueChanged.connect(self.settle.start)
        self.autostart.toggled.connect(self.settle.start)

    def reject(self) -> None:
        """Close and Escape alike: every change is in force (one still
        settling is applied now), so the window is told it was accepted and
        refreshes its status line."""
        if self.settle.isActive():
            self.save()
        self.accept()

    def save(self, *_: object) -> None:
        """Apply the values shown now. One write at a time: a change made while
        one is under way is applied after it, so the last value wins."""
        self.settle.stop()
        if self._applying:
            self._again = True
            return
        self._applying = True
        policy, margin = self.policy.currentData(), self.margin.value()
        want_autostart = self.autostart.isChecked()

        async def apply(service: BrokerService) -> Config:
            # Both files are written on worker threads, never on the loop: the
            # service's facade saves config.json, autostart's file goes here,
            # first: once the policy is in force, every setting is.
            import asyncio

            await asyncio.to_thread(autostart.enable if want_autostart else autostart.disable)
            return await service.apply_settings(policy, margin)

        def done(config: Config) -> None:
            self.config = config
            self.error.setVisible(False)
            self._finished()

        def failed(exc: BaseException) -> None:
            self.error.setText(f"Not saved: {exc}")
            self.error.setVisible(True)
            self._finished()

        self.bridge.run(apply, done, failed)

    def _finished(self) -> None:
        self._applying = False
        if self._again:
            self._again = False
            self.save()
