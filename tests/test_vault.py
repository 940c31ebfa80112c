"""The vault: encryption, binding, corruption, permissions, keyring, locking."""

import json
import os
import stat
import subprocess
import sys

import pytest

from broker.errors import KeyFileError, KeyringUnavailable, SchemaTooNew, VaultCorrupt, VaultKeyMismatch
from broker.model import ConnectionSettings, ConnectionState
from broker.storage.keystore import FileKeyStore, KeyringKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store
from broker.storage.vault import Vault


@pytest.fixture
def keyfile(tmp_path):
    return FileKeyStore(tmp_path / "keys" / "vault.key")


@pytest.fixture
def store(tmp_path, keyfile):
    paths = Paths(tmp_path / "config", tmp_path / "data", tmp_path / "state")
    return Store(paths, lambda: keyfile)


def put(store, name, secret="s3cr3t-value"):
    with store.transaction() as txn:
        txn.settings[name] = ConnectionSettings(name=name, server_url=f"https://{name}.example/mcp")
        txn.states[name] = ConnectionState(client_secret=secret)


def test_round_trip_and_nothing_in_plaintext(store):
    put(store, "alpha", "TOPSECRET-alpha")
    put(store, "beta", "TOPSECRET-beta")
    states = store.load_states()
    assert states["alpha"].client_secret == "TOPSECRET-alpha"
    assert b"TOPSECRET" not in store.paths.vault_file.read_bytes()
    assert b"TOPSECRET" not in store.paths.connections_file.read_bytes()


def test_permissions(store):
    put(store, "alpha")
    for f in (store.paths.vault_file, store.paths.connections_file):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert stat.S_IMODE(f.parent.stat().st_mode) == 0o700


def test_records_are_bound_to_their_connection(store):
    put(store, "alpha", "A")
    put(store, "beta", "B")
    doc = json.loads(store.paths.vault_file.read_text())
    doc["records"]["alpha"], doc["records"]["beta"] = doc["records"]["beta"], doc["records"]["alpha"]
    store.paths.vault_file.write_text(json.dumps(doc))
    with pytest.raises(VaultCorrupt, match="swapped"):
        store.load_states()


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],
        lambda raw: b"",
        lambda raw: b"\x00\xff garbage",
        lambda raw: raw.replace(b'"ciphertext": "', b'"ciphertext": "AAAA', 1),
        lambda raw: json.dumps({**json.loads(raw), "records": []}).encode(),
        lambda raw: json.dumps({**json.loads(raw), "format": "x"}).encode(),
    ],
)
def test_corrupt_vault_is_reported_and_never_overwritten(store, damage):
    put(store, "alpha")
    path = store.paths.vault_file
    broken = damage(path.read_bytes())
    path.write_bytes(broken)
    with pytest.raises((VaultCorrupt, VaultKeyMismatch)):
        store.load_states()
    with pytest.raises((VaultCorrupt, VaultKeyMismatch)):
        put(store, "beta")
    assert path.read_bytes() == broken


def test_tampered_record(store):
    put(store, "alpha")
    doc = json.loads(store.paths.vault_file.read_text())
    ct = doc["records"]["alpha"]["ciphertext"]
    doc["records"]["alpha"]["ciphertext"] = ("B" if ct[0] != "B" else "C") + ct[1:]
    store.paths.vault_file.write_text(json.dumps(doc))
    with pytest.raises(VaultCorrupt, match="fails authentication"):
        store.load_states()


def test_wrong_key(store, tmp_path):
    put(store, "alpha")
    other = FileKeyStore(tmp_path / "other.key")
    other.put("x", os.urandom(32))
    with pytest.raises(VaultKeyMismatch):
        Vault(store.paths.vault_file, other).load()
    missing = FileKeyStore(tmp_path / "missing.key")
    with pytest.raises(VaultKeyMismatch):
        Vault(store.paths.vault_file, missing).load()


def test_newer_schema_refused(store):
    put(store, "alpha")
    doc = json.loads(store.paths.vault_file.read_text())
    doc["schema"] = 99
    store.paths.vault_file.write_text(json.dumps(doc))
    with pytest.raises(SchemaTooNew):
        store.load_states()


def test_key_file_must_be_private(tmp_path):
    ks = FileKeyStore(tmp_path / "k")
    ks.put("id", os.urandom(32))
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    (tmp_path / "k").chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        ks.get("id")
    (tmp_path / "bad").write_text("not a key")
    (tmp_path / "bad").chmod(0o600)
    with pytest.raises(KeyFileError):
        FileKeyStore(tmp_path / "bad").get("id")


def test_fail_keyring_backend_is_refused():
    from keyring.backends.fail import Keyring as FailKeyring

    with pytest.raises(KeyringUnavailable) as info:
        KeyringKeyStore(FailKeyring())
    assert "--key-file" in str(info.value) and "Secret Service" in str(info.value)


def test_real_secret_service_holds_the_key(tmp_path):
    """Runs against gnome-keyring-daemon, started by the test command."""
    ks = KeyringKeyStore()
    assert "SecretService" in ks.description or "secret" in ks.description.lower()
    paths = Paths(tmp_path / "c", tmp_path / "d", tmp_path / "s")
    store = Store(paths, lambda: ks)
    put(store, "alpha", "KEYRING-SECRET")
    vault_id = json.loads(paths.vault_file.read_text())["vault_id"]
    import keyring

    stored = keyring.get_password("mcp-token-broker", f"vault-master-key:{vault_id}")
    assert stored and len(stored) == 44
    assert Store(paths, KeyringKeyStore).load_states()["alpha"].client_secret == "KEYRING-SECRET"


WRITER = r"""
import sys
from pathlib import Path
from broker.storage.keystore import FileKeyStore
from broker.model import ConnectionSettings, ConnectionState
from broker.storage.paths import Paths
from broker.storage.store import Store
root = Path(sys.argv[1]); prefix = sys.argv[2]; count = int(sys.argv[3])
store = Store(Paths(root / "c", root / "d", root / "s"), lambda: FileKeyStore(root / "k"))
i = 0
while count < 0 or i < count:
    name = f"{prefix}{i % 50}"
    with store.transaction() as txn:
        txn.settings[name] = ConnectionSettings(name=name, server_url="https://x.example/mcp")
        txn.states[name] = ConnectionState(client_secret="v" * (i % 4000), last_refresh_at=i)
    i += 1
    if i == 1:
        print("ready", flush=True)
"""


def _spawn_writer(root, prefix, count):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), prefix, str(count)], stdout=subprocess.PIPE, text=True
    )


def test_kill_9_during_writes_leaves_a_loadable_vault(tmp_path):
    store = Store(Paths(tmp_path / "c", tmp_path / "d", tmp_path / "s"), lambda: FileKeyStore(tmp_path / "k"))
    import random
    import time

    seen = 0
    for _round in range(8):
        proc = _spawn_writer(tmp_path, "conn", -1)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(random.uniform(0.01, 0.3))
        proc.kill()
        proc.wait()
        states = store.load_states()  # must never raise
        settings = store.load_settings()
        assert states and set(states) <= set(settings) | set(states)
        for state in states.values():
            assert state.client_secret == "v" * (state.last_refresh_at % 4000)
        seen = max(seen, len(states))
    assert seen >= 1


def test_lock_serialises_writers(tmp_path):
    a = _spawn_writer(tmp_path, "a", 30)
    b = _spawn_writer(tmp_path, "b", 30)
    assert a.wait(timeout=60) == 0 and b.wait(timeout=60) == 0
    store = Store(Paths(tmp_path / "c", tmp_path / "d", tmp_path / "s"), lambda: FileKeyStore(tmp_path / "k"))
    names = set(store.load_states())
    assert names == {f"a{i}" for i in range(30)} | {f"b{i}" for i in range(30)}
    assert set(store.load_settings()) == names


def test_records_without_settings_are_kept(store):
    """A lost or hand-edited connections file never wipes the vault's records."""
    put(store, "alpha", "A")
    put(store, "beta", "B")
    with store.transaction(secrets=False) as txn:
        del txn.settings["alpha"]  # as if someone edited connections.json
    put(store, "gamma", "C")  # any later write of the vault
    states = store.load_states()
    assert set(states) == {"alpha", "beta", "gamma"} and states["alpha"].client_secret == "A"
    assert set(store.load_settings()) == {"beta", "gamma"}
    with store.transaction() as txn:  # what `remove` does for an orphan
        txn.states.pop("alpha")
    assert set(store.load_states()) == {"beta", "gamma"}


def _discovered(**endpoints):
    from broker.model import Discovered
    from broker.oauth.discovery import AuthServerMetadata

    auth = {
        "issuer": "https://as.example",
        "authorization_endpoint": "https://as.example/authorize",
        "token_endpoint": "https://as.example/token",
        "revocation_endpoint": "https://as.example/revoke",
        **endpoints,
    }
    return Discovered(
        issuer=auth["issuer"],
        resource="https://mcp.example/mcp",
        scopes=(),
        scopes_offered=None,
        registration_method="dynamic",
        resource_metadata_url=None,
        auth_server=AuthServerMetadata.from_json(auth),
    )


def test_binding_is_kept_in_the_vault_and_checked(store):
    from dataclasses import replace

    from broker.errors import SettingsMismatch
    from broker.model import Binding, check_binding

    settings = ConnectionSettings(name="alpha", server_url="https://mcp.example/mcp", discovered=_discovered())
    binding = Binding.of(settings.server_url, settings.discovered)
    with store.transaction() as txn:
        txn.settings["alpha"] = settings
        txn.states["alpha"] = ConnectionState(client_secret="S", binding=binding)
    state = store.load_states()["alpha"]
    assert state.binding == binding
    assert b"as.example/token" not in store.paths.vault_file.read_bytes()  # encrypted like the rest
    assert check_binding(store.load_settings()["alpha"], state) == binding
    for change, words in [
        (replace(settings, server_url="https://evil.example/mcp"), "the server URL changed"),
        (
            replace(settings, discovered=_discovered(token_endpoint="https://evil.example/t")),
            "the token endpoint changed",
        ),
        (replace(settings, discovered=_discovered(revocation_endpoint=None)), "the revocation endpoint changed"),
        (replace(settings, discovered=_discovered(issuer="https://evil.example")), "the issuer changed"),
        (
            replace(settings, discovered=replace(_discovered(), resource="https://other.example/")),
            "the resource changed",
        ),
    ]:
        with pytest.raises(SettingsMismatch, match=words) as info:
            check_binding(change, state)
        assert "connections.json no longer matches the vault for alpha" in str(info.value)
        assert "run `mcp-token-broker connect alpha`" in str(info.value)
    # Control characters from an edited file never reach the terminal.
    evil = replace(settings, discovered=_discovered(token_endpoint="https://evil.example/\x1b[2Jt"))
    with pytest.raises(SettingsMismatch) as info:
        check_binding(evil, state)
    assert "\x1b" not in str(info.value)
    with pytest.raises(SettingsMismatch, match="older mcp-token-broker"):
        check_binding(settings, replace(state, binding=None))
