"""The vault: per-connection secrets, AES-256-GCM encrypted at rest.

File layout (JSON, so a human can see what is there without seeing secrets):

    {"format": "mcp-token-broker-vault", "schema": 1, "vault_id": "...",
     "key_check": {"nonce": b64, "ciphertext": b64},
     "records": {"<connection>": {"nonce": b64, "ciphertext": b64}}}

Each record's associated data names the vault and the connection, so a record
copied under another name (or into another vault) fails authentication. The
key check tells "wrong key" apart from "tampered record". The master key is a
random 256-bit key held by a `KeyStore` (the OS keyring by default).

A vault that fails to load is never written over: every write is a
read-modify-write, so a load error aborts the write too.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import SchemaTooNew, VaultCorrupt, VaultKeyMismatch
from .atomic import atomic_write, remove_stale_temp_files
from .keystore import KeyStore

__all__ = ["Vault", "SCHEMA"]

FORMAT = "mcp-token-broker-vault"
SCHEMA = 1
MAX_VAULT_BYTES = 64 << 20
_KEY_CHECK = b"mcp-token-broker key check"

#: schema -> function upgrading a decoded document to schema + 1.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _aad(vault_id: str, kind: str, name: str = "") -> bytes:
    return f"{FORMAT}/{SCHEMA}/{vault_id}/{kind}/{name}".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise VaultCorrupt(f"the vault is damaged: {what} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VaultCorrupt(f"the vault is damaged: {what} is not base64") from None


class Vault:
    def __init__(self, path: Path, keystore: KeyStore) -> None:
        self.path = path
        self.keystore = keystore
        # Keys that passed the key check, by vault id: a vault id's key never
        # changes, and asking the keyring means a D-Bus round trip per load.
        self._keys: dict[str, bytes] = {}

    # -- reading ----------------------------------------------------------

    def _corrupt(self, why: str) -> VaultCorrupt:
        return VaultCorrupt(
            f"the vault {self.path} {why}. It was left untouched; move it aside to start over "
            "(its connections will need `connect` again)"
        )

    def _read_doc(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_VAULT_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(raw) > MAX_VAULT_BYTES:
            raise self._corrupt("is implausibly large")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise self._corrupt("is not valid JSON (damaged or truncated)") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise self._corrupt("is not an mcp-token-broker vault")
        schema = doc.get("schema")
        if not isinstance(schema, int) or schema < 1:
            raise self._corrupt("has no valid schema version")
        if schema > SCHEMA:
            raise SchemaTooNew(
                f"the vault {self.path} was written by a newer mcp-token-broker (schema {schema}); upgrade to read it"
            )
        while schema < SCHEMA:
            doc = MIGRATIONS[schema](doc)
            schema = doc["schema"]
        if not isinstance(doc.get("vault_id"), str) or not isinstance(doc.get("records"), dict):
            raise self._corrupt("lacks its id or records")
        checked: dict[str, Any] = doc
        return checked

    def _cipher(self, doc: dict[str, Any]) -> AESGCM:
        vault_id = doc["vault_id"]
        key = self._keys.get(vault_id) or self.keystore.get(vault_id)
        if key is None:
            raise VaultKeyMismatch(
                f"the key for the vault {self.path} is not in {self.keystore.description}. "
                "If you moved the vault or reset the keyring, restore the key; otherwise move the vault aside "
                "to start over"
            )
        cipher = AESGCM(key)
        check = doc.get("key_check")
        if not isinstance(check, dict):
            raise self._corrupt("lacks its key check")
        try:
            plain = cipher.decrypt(
                _unb64(check.get("nonce"), "the key check"),
                _unb64(check.get("ciphertext"), "the key check"),
                _aad(vault_id, "key-check"),
            )
        except InvalidTag:
            plain = b""
        if plain != _KEY_CHECK:
            self._keys.pop(vault_id, None)
            raise VaultKeyMismatch(f"the key in {self.keystore.description} does not open the vault {self.path}")
        self._keys[vault_id] = key
        return cipher

    def load(self) -> dict[str, dict[str, Any]]:
        """Decrypt every record. A missing vault is an empty one."""
        doc = self._read_doc()
        if doc is None:
            return {}
        cipher = self._cipher(doc)
        out: dict[str, dict[str, Any]] = {}
        for name, record in doc["records"].items():
            if not isinstance(record, dict):
                raise self._corrupt(f"has a malformed record for {name!r}")
            try:
                plain = cipher.decrypt(
                    _unb64(record.get("nonce"), f"the record {name!r}"),
                    _unb64(record.get("ciphertext"), f"the record {name!r}"),
                    _aad(doc["vault_id"], "record", name),
                )
            except InvalidTag:
                raise self._corrupt(
                    f"has a record for {name!r} that fails authentication (tampered with, or swapped from "
                    "another connection)"
                ) from None
            try:
                value = json.loads(plain)
            except ValueError:
                raise self._corrupt(f"has an unreadable record for {name!r}") from None
            if not isinstance(value, dict):
                raise self._corrupt(f"has an unreadable record for {name!r}")
            out[name] = value
        return out

    # -- writing ----------------------------------------------------------

    def save(self, records: dict[str, dict[str, Any]]) -> None:
        """Encrypt and atomically replace the vault. Call under the store lock,
        after a successful `load` (which proves the key and the file)."""
        doc = self._read_doc()
        if doc is None:
            vault_id = secrets.token_hex(16)
            # A key file holds one key for any vault id: reuse it if present.
            key = self.keystore.get(vault_id)
            if key is None:
                key = AESGCM.generate_key(bit_length=256)
                # Store the key before any ciphertext exists that needs it.
                self.keystore.put(vault_id, key)
            self._keys[vault_id] = key
            cipher = AESGCM(key)
        else:
            vault_id = doc["vault_id"]
            cipher = self._cipher(doc)

        def seal(plain: bytes, aad: bytes) -> dict[str, str]:
            nonce = secrets.token_bytes(12)
            return {"nonce": _b64(nonce), "ciphertext": _b64(cipher.encrypt(nonce, plain, aad))}

        new_doc = {
            "format": FORMAT,
            "schema": SCHEMA,
            "vault_id": vault_id,
            "key_check": seal(_KEY_CHECK, _aad(vault_id, "key-check")),
            "records": {
                name: seal(json.dumps(value, separators=(",", ":")).encode(), _aad(vault_id, "record", name))
                for name, value in sorted(records.items())
            },
        }
        remove_stale_temp_files(self.path)
        atomic_write(self.path, json.dumps(new_doc, indent=1).encode() + b"\n")
