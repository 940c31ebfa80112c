"""Settings: client policy, refresh margin, start at login."""

from __future__ import annotations

from typing import TYPE_CHECKING

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


class SettingsDialog(QDialog):
    def __init__(self, bridge: Bridge, config: Config, parent: QWidget | None = None) -> None:
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
        form.addRow(self.autostart)
        note = QLabel("Changes apply at once.")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)

    def save(self) -> None:
        policy, margin = self.policy.currentData(), self.margin.value()
        want_autostart = self.autostart.isChecked()

        async def apply(service: BrokerService) -> Config:
            # Both files are written on worker threads, never on the loop: the
            # service's facade saves config.json, autostart's file goes here.
            import asyncio

            config = await service.apply_settings(policy, margin)
            await asyncio.to_thread(autostart.enable if want_autostart else autostart.disable)
            return config

        def done(config: Config) -> None:
            self.config = config
            self.accept()

        self.bridge.run(apply, done)
