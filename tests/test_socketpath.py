"""The socket path computed without platformdirs agrees with platformdirs."""

import os
import warnings

import platformdirs
import pytest

from broker.socketpath import SOCKET_ENV, default_socket_path


def expected() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return os.path.join(platformdirs.user_runtime_dir("mcp-token-broker", appauthor=False), "broker.sock")


def test_with_a_private_xdg_runtime_dir(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    assert default_socket_path() == expected() == str(run / "mcp-token-broker" / "broker.sock")


@pytest.mark.parametrize("setup", ["unset", "empty", "not-private", "missing"])
def test_fallbacks_agree(tmp_path, monkeypatch, setup):
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    if setup == "unset":
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    elif setup == "empty":
        monkeypatch.setenv("XDG_RUNTIME_DIR", "")
    elif setup == "not-private":
        loose = tmp_path / "loose"
        loose.mkdir(mode=0o755)
        loose.chmod(0o755)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(loose))
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "nope"))
    assert default_socket_path() == expected()


def test_override(monkeypatch):
    monkeypatch.setenv(SOCKET_ENV, "/tmp/elsewhere.sock")
    assert default_socket_path() == "/tmp/elsewhere.sock"
