"""Only a real OS secret store may hold the vault key.

`keyrings.alt` is installed in the test environment on purpose: it is what a
user may have picked up from another tool, and its `PlaintextKeyring` keeps
"secrets" in a readable file. Chosen outright, or reached through keyring's
chainer, it must never receive the vault key.
"""

from __future__ import annotations

import pytest
from keyring.backends.chainer import ChainerBackend
from keyrings.alt.file import PlaintextKeyring

from broker.errors import KeyringUnavailable
from broker.storage.keystore import KeyringKeyStore

pytestmark = pytest.mark.timeout(60)

PLAINTEXT = "keyrings.alt.file.PlaintextKeyring"


def plaintext_file(user_dirs):
    return user_dirs["XDG_DATA_HOME"] / "python_keyring" / "keyring_pass.cfg"


def test_a_plaintext_backend_is_refused(user_dirs):
    with pytest.raises(KeyringUnavailable, match="not an OS secret store") as info:
        KeyringKeyStore(PlaintextKeyring())
    assert "--key-file" in str(info.value)


def test_a_chainer_uses_only_its_secret_service_member(user_dirs):
    """With keyrings.alt installed, keyring's default is a chainer over the
    Secret Service *and* the plaintext file; the key goes to the former only."""
    chainer = ChainerBackend()
    assert any(isinstance(b, PlaintextKeyring) for b in chainer.backends)
    store = KeyringKeyStore(chainer)
    assert "SecretService" in type(store._backend).__module__
    store.put("chain-test", b"k" * 32)
    assert store.get("chain-test") == b"k" * 32
    assert not plaintext_file(user_dirs).exists()


def test_a_chainer_of_only_plaintext_members_is_refused(user_dirs):
    class OnlyFiles(ChainerBackend):
        backends = [PlaintextKeyring()]

    with pytest.raises(KeyringUnavailable, match="keyrings.alt.file.PlaintextKeyring"):
        KeyringKeyStore(OnlyFiles())


def test_cli_refuses_a_chosen_plaintext_keyring_and_stores_nothing(cli, hostile_server, user_dirs):
    """`add` with a client secret must write the vault, so it needs the key."""
    r = cli(
        "add", "h", hostile_server.mcp_url, "--client-id", "abc", "--client-secret-stdin",
        input="s3cret-value\n",
        env={"PYTHON_KEYRING_BACKEND": PLAINTEXT},
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not an OS secret store" in lines[0], r.stderr
    assert not plaintext_file(user_dirs).exists()
    assert not (user_dirs["XDG_CONFIG_HOME"] / "mcp-token-broker" / "connections.json").exists()
    assert "s3cret-value" not in r.stderr + r.stdout
