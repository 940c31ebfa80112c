"""The layers in broker/ depend one way; these rules keep them so.

- `broker.oauth` (the pure, sans-IO steps) does no I/O and knows no driver:
  no asyncio, httpx, socket or threading, nothing from the driver, the
  service, the storage or the CLI.
- The `token` hot path loads only the standard library (and itself).
- Nothing under broker/ imports PySide6: the Qt layer is `ui/`.
- No cycles: tests/test_import_cycles.py.

Read from the source with `ast`: imports that run when a module loads, not
those under `if TYPE_CHECKING:`. The PySide6 rule counts every import,
deferred ones inside functions too.
"""

from __future__ import annotations

import ast
import sys

from .test_import_cycles import REPO, _load_time_imports, _modules

HOT_PATH = {
    "broker",
    "broker.client",
    "broker.client.launcher",
    "broker.client.fastpath",
    "broker.client.wire",
    "broker.client.socketpath",
    "broker.client.socketdir",
    "broker.client.peeruid",
    "broker.client.proxy_thin",
    "broker.codes",
}
NO_IO = {"asyncio", "httpx", "httpcore", "h11", "socket", "_socket", "threading", "selectors", "subprocess"}
NOT_FROM_OAUTH = ("broker.driver", "broker.service", "broker.storage", "broker.cli", "broker.client", "broker.compose")


def _absolute(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names of what `node` imports (`from .x import y` gives `pkg.x.y`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = (module if is_package else module.rpartition(".")[0]).split(".")
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    return [f"{origin}.{alias.name}" for alias in node.names]


def load_time_imports() -> dict[str, list[str]]:
    found = {}
    for name, path in _modules().items():
        nodes = _load_time_imports(ast.parse(path.read_text()).body)
        found[name] = [target for node in nodes for target in _absolute(name, path.name == "__init__.py", node)]
    return found


def _within(target: str, packages: tuple[str, ...] | set[str]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in packages)


def test_the_rules_read_real_imports():
    """The reader itself: it sees what is plainly there and names it absolutely."""
    imports = load_time_imports()
    assert "asyncio" in imports["broker.driver.receiver"]
    assert "broker.oauth.http.HttpRequest" in imports["broker.oauth.discovery"]
    assert "broker.errors.BadResponse" in imports["broker.oauth.http"]
    # launcher defers the CLI into main(): a load-time reader must not see it
    assert not any(t.startswith("broker.cli") for t in imports["broker.client.launcher"])
    assert {"broker.oauth", "broker.driver", "broker.storage", "broker.service", "broker.client", "broker.cli"} <= set(
        imports
    )


def test_the_pure_steps_do_no_io_and_know_no_driver():
    bad = [
        (module, target)
        for module, targets in load_time_imports().items()
        if _within(module, ("broker.oauth",))
        for target in targets
        if target.split(".")[0] in NO_IO or _within(target, NOT_FROM_OAUTH)
    ]
    assert bad == []


def test_the_hot_path_loads_only_the_standard_library():
    stdlib = sys.stdlib_module_names
    bad = [
        (module, target)
        for module, targets in load_time_imports().items()
        if module in HOT_PATH
        for target in targets
        if target.split(".")[0] not in stdlib | {"__future__"}
        and target not in HOT_PATH
        and target.rpartition(".")[0] not in HOT_PATH  # `from .wire import exchange`
    ]
    assert bad == []


def test_the_hot_path_packages_stay_empty():
    """`broker/__init__` and `broker/client/__init__` load with every hot-path module."""
    assert load_time_imports()["broker.client"] == []
    assert load_time_imports()["broker"] == []
    assert (REPO / "broker" / "client" / "__init__.py").read_text().strip() == ""


def test_nothing_under_broker_imports_qt():
    bad = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _absolute(name, path.name == "__init__.py", node):
                    if target.split(".")[0] in ("PySide6", "PyQt5", "PyQt6", "shiboken6", "ui"):
                        bad.append((name, target))
    assert bad == []
