"""PySide6 widgets for the desktop app. Imports `broker`; `broker` never imports this."""
