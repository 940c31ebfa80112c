"""The connections table: a thin QAbstractTableModel over `RowState`s.

It adapts the bridge's signals (the service's events) and ticks once a
second so "expires in" counts down live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QGuiApplication, QPalette

from broker.status import Status
from broker.timeleft import time_left

from .icons import STATUS_ICONS, icon
from .plaintext import plain_tip
from .rows import STATUS_HELP, STATUS_TEXT, DisplayStatus, RowState, display_status

__all__ = ["ConnectionsModel", "COLUMNS", "SORT_ROLE", "NAME_ROLE"]

COLUMNS = ("Name", "Server", "Status", "Scopes", "Expires in", "Last refresh")
COLUMN_HELP = (
    "The connection's name, as used by `mcp-token-broker token NAME`",
    "The MCP server URL",
    "What the broker can do for this connection right now",
    "The scopes the authorization server granted",
    "Time left on the current access token",
    "When the broker last refreshed the token",
)
NAME, SERVER, STATUS, SCOPES, EXPIRES, LAST = range(6)
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
NAME_ROLE = Qt.ItemDataRole.UserRole + 2

_LIGHT = {
    "connected": "#1a7f37",
    "expiring": "#9a6700",
    "refreshing": "#0969da",
    "expired": "#57606a",
    "reauth_required": "#cf222e",
    "error": "#cf222e",
    "not_connected": "#57606a",
}
_DARK = {
    "connected": "#3fb950",
    "expiring": "#d29922",
    "refreshing": "#58a6ff",
    "expired": "#8b949e",
    "reauth_required": "#f85149",
    "error": "#f85149",
    "not_connected": "#8b949e",
}


def _dark() -> bool:
    app = QGuiApplication.instance()
    if app is None:
        return False
    return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


class ConnectionsModel(QAbstractTableModel):
    def __init__(
        self, parent: QObject | None = None, *, clock: Callable[[], float] = time.time, tick_ms: int = 1000
    ) -> None:
        super().__init__(parent)
        self._rows: list[RowState] = []
        self._index: dict[str, int] = {}
        self.clock = clock
        self._timer = QTimer(self)
        self._timer.setInterval(tick_ms)
        self._timer.timeout.connect(self.tick)
        self._timer.start()

    # -- Qt model API -------------------------------------------------------------

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMN_HELP[section]
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows) or index.column() >= len(COLUMNS):
            return None
        row = self._rows[index.row()]
        col = index.column()
        now = self.clock()
        status = display_status(row, now)
        if role == NAME_ROLE:
            return row.name
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
            return self._text(row, col, status, now)
        if role == SORT_ROLE:
            if col == EXPIRES:
                return row.expires_at if row.expires_at is not None else 2**62
            if col == LAST:
                return row.last_refresh_at or 0
            return self._text(row, col, status, now).lower()
        if role == Qt.ItemDataRole.DecorationRole and col == STATUS:
            return icon(STATUS_ICONS[status])
        if role == Qt.ItemDataRole.ForegroundRole and col == STATUS:
            return QBrush(QColor((_DARK if _dark() else _LIGHT)[status]))
        if role == Qt.ItemDataRole.ToolTipRole:
            # Server URLs, scopes and errors come from strangers: never markup.
            if col == STATUS:
                tip = STATUS_HELP[status]
                return plain_tip(f"{tip}\nLast error: {row.error}" if row.error and status == "error" else tip)
            if col == EXPIRES and row.expires_at:
                return time.strftime("Expires at %Y-%m-%d %H:%M:%S", time.localtime(row.expires_at))
            return plain_tip(self._text(row, col, status, now))
        return None

    @staticmethod
    def _text(row: RowState, col: int, status: DisplayStatus, now: float) -> str:
        if col == NAME:
            return row.name
        if col == SERVER:
            return row.server_url
        if col == STATUS:
            return STATUS_TEXT[status]
        if col == SCOPES:
            return " ".join(row.scopes) or "—"
        if col == EXPIRES:
            return time_left(row.expires_at, now, style="clock") if status != "not_connected" else "—"
        if row.last_refresh_at:
            return time.strftime("%H:%M:%S", time.localtime(row.last_refresh_at))
        return "—"

    # -- updates from the service --------------------------------------------------

    def row(self, name: str) -> RowState | None:
        i = self._index.get(name)
        return None if i is None else self._rows[i]

    def names(self) -> list[str]:
        return [r.name for r in self._rows]

    def set_views(self, views: list[dict[str, Any]]) -> None:
        self.beginResetModel()
        self._rows = [RowState.from_view(v) for v in views]
        self._reindex()
        self.endResetModel()

    def upsert(self, name: str, view: dict[str, Any]) -> None:
        i = self._index.get(name)
        if i is None:
            position = len(self._rows)
            self.beginInsertRows(QModelIndex(), position, position)
            self._rows.append(RowState.from_view(view))
            self._reindex()
            self.endInsertRows()
        else:
            self._replace(i, RowState.from_view(view, self._rows[i]))

    def remove(self, name: str) -> None:
        i = self._index.get(name)
        if i is None:
            return
        self.beginRemoveRows(QModelIndex(), i, i)
        del self._rows[i]
        self._reindex()
        self.endRemoveRows()

    def refresh_started(self, name: str) -> None:
        self._update(name, refreshing=True)

    def refreshed(self, name: str, expires_at: int | None) -> None:
        self._update(name, refreshing=False, error=None, expires_at=expires_at, last_refresh_at=self.clock())

    def refresh_failed(self, name: str, error: str) -> None:
        self._update(name, refreshing=False, error=error)

    def reauth_required(self, name: str) -> None:
        self._update(name, refreshing=False, status=Status.REAUTH_REQUIRED, error=None)

    def tick(self) -> None:
        if self._rows:
            self.dataChanged.emit(self.index(0, STATUS), self.index(len(self._rows) - 1, LAST))

    # -- internals ------------------------------------------------------------------

    def _update(self, name: str, **changes: Any) -> None:
        i = self._index.get(name)
        if i is not None:
            self._replace(i, replace(self._rows[i], **changes))

    def _replace(self, i: int, row: RowState) -> None:
        self._rows[i] = row
        self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))

    def _reindex(self) -> None:
        self._index = {r.name: i for i, r in enumerate(self._rows)}
