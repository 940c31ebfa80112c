"""The .app's executable: no arguments (Finder) opens the window; with
arguments it is the command line, as packaging/entry.py is on Linux."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from entry import main  # noqa: E402 - packaging/entry.py

if __name__ == "__main__":
    if len(sys.argv) == 1 or sys.argv[1].startswith("-psn_"):  # Finder, old or new
        sys.argv[1:] = ["gui"]
    sys.exit(main())
