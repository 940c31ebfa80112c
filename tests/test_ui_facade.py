"""The desktop app goes through the service's public facade (issue 8, item 4).

`ui/` reads no private attribute of another object, statuses are enums whose
JSON is the documented strings, and the settings dialog's save goes through
`BrokerService.apply_settings`, which writes config.json off the loop.
"""

from __future__ import annotations

import ast
import json
import threading
from pathlib import Path

import pytest

from broker.model import ConnectionSettings, public_view
from broker.service.service import BrokerService
from broker.status import Status
from broker.storage.config import load_config
from broker.storage.keystore import FileKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .helpers.seed import seed_connection
from .test_compose import LIFETIME

UI = Path(__file__).resolve().parent.parent / "ui"


def _private_reads(path: Path) -> list[str]:
    """`x._name` where x is not `self` or `cls`: someone else's private attribute."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return found


def test_ui_reads_no_private_attribute():
    found = [hit for path in sorted(UI.glob("*.py")) for hit in _private_reads(path)]
    assert found == []


def test_the_check_sees_a_private_read(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(self, service):\n    return service._settings, self._own, service.engine._x\n")
    assert sorted(_private_reads(sample)) == ["sample.py:2: ._settings", "sample.py:2: ._x"]


def test_status_is_an_enum_and_its_json_the_documented_strings():
    settings = ConnectionSettings(name="demo", server_url="https://mcp.example.com/mcp")
    view = public_view(settings, None, 0)
    assert view["status"] is Status.NOT_CONNECTED
    assert json.loads(json.dumps(view)) == {
        "name": "demo",
        "server_url": "https://mcp.example.com/mcp",
        "status": "not_connected",
        "scopes": [],
        "expires_at": None,
        "step_up": None,  # a server's scope challenge (broker.stepup), when there was one
    }
    documented = (Path(__file__).resolve().parent.parent / "docs" / "socket-api.md").read_text()
    for status in Status:
        assert f"`{status.value}`" in documented or f'"{status.value}"' in documented, status


def test_row_state_takes_a_view_from_json_or_in_process():
    from ui.rows import DisplayStatus, RowState, display_status

    as_json = {"name": "a", "server_url": "u", "status": "reauth_required", "scopes": [], "expires_at": None}
    row = RowState.from_view(as_json)
    assert row.status is Status.REAUTH_REQUIRED
    assert display_status(row, 0) is DisplayStatus.REAUTH_REQUIRED
    with pytest.raises(ValueError):
        RowState.from_view({**as_json, "status": "fine"})


@pytest.fixture
def service(user_dirs, tmp_path):
    paths = Paths.default()
    store = Store(paths, lambda: FileKeyStore(tmp_path / "vault.key"))
    now = 1_900_000_000
    seed_connection(store, now=now, lifetime=LIFETIME)
    from broker.driver.engine import Engine
    from broker.driver.transport import Transport

    socket_path = user_dirs["XDG_RUNTIME_DIR"] / "mcp-token-broker" / "broker.sock"
    return BrokerService(
        paths=paths, store=store, engine=Engine(store, Transport()), socket_path=socket_path, clock=lambda: now, ui=True
    ), now


def test_apply_settings_saves_off_the_loop_and_reschedules(service, monkeypatch):
    import asyncio

    import broker.service.service
    from broker.errors import UsageError

    service, now = service
    expires = now + LIFETIME
    savers: list[threading.Thread] = []
    real_save = broker.service.service.save_config

    def save_config(paths, config):  # the real save, noting the thread it runs on
        savers.append(threading.current_thread())
        real_save(paths, config)

    monkeypatch.setattr(broker.service.service, "save_config", save_config)

    async def main():
        await service.start()
        try:
            assert (await service.show("demo"))["next_refresh_at"] >= expires - 900 * 1.1  # the default: a quarter hour
            config = await service.apply_settings("deny", 1000)
            assert savers and threading.current_thread() not in savers  # written off the loop's thread
            assert config == load_config(service.paths) and config.refresh_margin == 1000
            assert service.health()["policy"] == "deny" and service.current_config() == config
            assert expires - 1100 <= (await service.show("demo"))["next_refresh_at"] <= expires - 1000  # rescheduled
            with pytest.raises(UsageError):
                await service.apply_settings("deny", 59)
            with pytest.raises(UsageError):
                await service.apply_settings("maybe", 600)  # type: ignore[arg-type]  # the bad value under test
            assert load_config(service.paths) == config  # a refused change writes nothing
        finally:
            await service.stop()

    asyncio.run(main())
