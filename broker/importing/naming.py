"""The name an imported server gets, shared by `import` (both sources) and
the app's Import dialog, so one server gets the same name on every path."""

from __future__ import annotations

from collections.abc import Container

from ..model import check_name

__all__ = ["unique_name"]


def unique_name(suggested: str, taken: Container[str]) -> str:
    """`suggested`, or `suggested-2`, `-3`, ... when a connection to another
    server holds it (adding would fail with ConnectionExists)."""
    name = check_name(suggested)
    n = 2
    while name in taken:
        name = check_name(f"{suggested[:60]}-{n}")
        n += 1
    return name
