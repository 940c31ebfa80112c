"""The tray icon: overall status at a glance, a menu, and notifications."""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from broker.service.notify import plain_for_notification

from .icons import STATUS_ICONS, app_icon, icon
from .model import ConnectionsModel
from .rows import STATUS_TEXT, DisplayStatus, display_status

__all__ = ["Tray", "overall_status"]

_SEVERITY = [
    DisplayStatus.REAUTH_REQUIRED,
    DisplayStatus.ERROR,
    DisplayStatus.EXPIRED,
    DisplayStatus.EXPIRING,
    DisplayStatus.REFRESHING,
    DisplayStatus.CONNECTED,
    DisplayStatus.NOT_CONNECTED,
]


def overall_status(statuses: list[DisplayStatus]) -> DisplayStatus | None:
    for status in _SEVERITY:
        if status in statuses:
            return status
    return None


class Tray(QObject):
    openRequested = Signal()
    quitRequested = Signal()

    def __init__(self, model: ConnectionsModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.menu = QMenu()
        self.menu.setAccessibleName("MCP Token Broker tray menu")
        self.icon = QSystemTrayIcon(app_icon(), self)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        self._failures: dict[str, int] = {}
        self.rebuild()
        for sig in (model.modelReset, model.rowsInserted, model.rowsRemoved, model.dataChanged):
            sig.connect(self._changed)

    @staticmethod
    def available() -> bool:
        return QSystemTrayIcon.isSystemTrayAvailable()

    def show(self) -> None:
        self.icon.show()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.openRequested.emit()

    def _changed(self, *args: object) -> None:
        # dataChanged fires every second for the countdown; rebuild only on real change.
        summary = self._summary()
        if summary != getattr(self, "_last_summary", None):
            self.rebuild()

    def _summary(self) -> tuple[tuple[str, DisplayStatus], ...]:
        now = time.time()
        rows = (self.model.row(name) for name in self.model.names())
        return tuple((row.name, display_status(row, now)) for row in rows if row is not None)

    def rebuild(self) -> None:
        summary = self._summary()
        self._last_summary = summary
        self.menu.clear()
        open_action = QAction("&Open MCP Token Broker", self.menu)
        open_action.triggered.connect(self.openRequested.emit)
        self.menu.addAction(open_action)
        self.menu.addSeparator()
        if not summary:
            empty = QAction("No connections yet", self.menu)
            empty.setEnabled(False)
            self.menu.addAction(empty)
        for name, status in summary:
            action = QAction(icon(STATUS_ICONS[status]), f"{name} — {STATUS_TEXT[status]}", self.menu)
            action.triggered.connect(self.openRequested.emit)
            self.menu.addAction(action)
        self.menu.addSeparator()
        quit_action = QAction("&Quit", self.menu)
        quit_action.triggered.connect(self.quitRequested.emit)
        self.menu.addAction(quit_action)
        worst = overall_status([s for _, s in summary])
        self.icon.setIcon(icon(STATUS_ICONS[worst]) if worst in ("reauth_required", "error", "expired") else app_icon())
        lines = [f"{name}: {STATUS_TEXT[status]}" for name, status in summary] or ["No connections"]
        self.icon.setToolTip("MCP Token Broker\n" + "\n".join(lines[:10]))

    # -- notifications -------------------------------------------------------------

    # The reason and error quote the server; notification daemons may read markup in the body.

    def notify_reauth(self, name: str, reason: str) -> None:
        self.icon.showMessage(
            f"{name} needs you to log in again",
            f"The server refused to renew access ({plain_for_notification(reason)}). "
            f"Open MCP Token Broker and connect {name}.",
            QSystemTrayIcon.MessageIcon.Warning,
        )

    def notify_step_up(self, name: str, message: str, given_up: bool) -> None:
        """A server asked for more scope (broker.stepup); `message` names the scope it sent."""
        self.icon.showMessage(
            f"{name}: the server did not grant more access" if given_up else f"{name} needs more access",
            plain_for_notification(message),
            QSystemTrayIcon.MessageIcon.Warning,
        )

    def notify_refresh_failed(self, name: str, error: str) -> None:
        self._failures[name] = self._failures.get(name, 0) + 1
        if self._failures[name] == 3:  # once, after it kept failing
            self.icon.showMessage(
                f"Refreshing {name} keeps failing",
                f"{plain_for_notification(error)}. "
                f"The broker keeps retrying and serves the current token while it is valid.",
                QSystemTrayIcon.MessageIcon.Warning,
            )

    def refreshed(self, name: str) -> None:
        self._failures.pop(name, None)
