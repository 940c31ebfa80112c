"""The installer bundle's one executable (PyInstaller's script).

`gui` runs the desktop app in process: a frozen bundle has no `python -m ui`
to exec. Everything else is the console script, whose `token` and `headers`
fast path stays as light as in a venv. This lives outside `broker/`, which
never imports Qt or `ui` (tests/test_import_rules.py).
"""

from __future__ import annotations

import sys


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["gui"]:
        if getattr(sys, "frozen", False):
            # What PyInstaller's PySide6 runtime hook would do at every start
            # (the spec drops it: it costs `token` 45 ms): Qt's plugins.
            import os

            os.environ["QT_PLUGIN_PATH"] = os.path.join(sys._MEIPASS, "PySide6", "Qt", "plugins")  # type: ignore[attr-defined]  # set by PyInstaller
        from ui.app import main as gui_main

        return gui_main(args[1:])
    from broker.client.launcher import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
