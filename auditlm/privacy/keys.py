"""Store hash keys, kept outside the store, and files written private (mode 0600).

A run store hashes the PII it finds (and the ids of items made from private data) with HMAC-SHA256 under a
random 256-bit key (:func:`auditlm.privacy.pii.keyed_hash`). The key is a file of its own,
``<key dir>/<key id>.key`` (mode 0600, directory 0700); the store records only the key id and a fingerprint.
Whoever has the store file but not the key cannot recompute a single hash, so cannot enumerate SSNs, phone
numbers or canary secrets back out of them. The key directory is ``$AUDITLM_KEYS`` if set, else
``$AUDITLM_HOME/keys`` (:func:`auditlm.targets.registry.auditlm_home`).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from auditlm.errors import StoreError

KEY_BYTES = 32
"""Length of a store key: 256 bits, the output size of SHA-256 (RFC 2104 recommends at least that)."""

_KEY_ID = re.compile(r"[0-9a-f]{16}")


def key_dir() -> Path:
    """Where store keys live: ``$AUDITLM_KEYS``, else ``$AUDITLM_HOME/keys``."""
    if d := os.environ.get("AUDITLM_KEYS"):
        return Path(d).expanduser()
    from auditlm.targets.registry import auditlm_home

    return auditlm_home() / "keys"


def fingerprint(key: bytes) -> str:
    """A public digest of a key (sha256 of a label and the key, 16 hex): tells a wrong key file from the right
    one. It reveals nothing usable: the key is 256 random bits, so it cannot be found from its digest."""
    return hashlib.sha256(b"auditlm store key fingerprint\x1f" + key).hexdigest()[:16]


@dataclass(frozen=True)
class StoreKey:
    """A store's hash key and where it is kept."""

    key_id: str
    key: bytes
    path: Path

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


def key_path(key_id: str, directory: Path | None = None) -> Path:
    """The file that holds key ``key_id``."""
    if not _KEY_ID.fullmatch(key_id):
        raise StoreError(f"store key id {key_id!r} is malformed (expected 16 hex digits)")
    return (directory or key_dir()) / f"{key_id}.key"


def create_key(directory: Path | None = None) -> StoreKey:
    """A new random key, written to ``<directory>/<new id>.key`` with mode 0600 (the directory 0700)."""
    d = directory or key_dir()
    if not d.exists():
        d.mkdir(parents=True, mode=0o700)
        os.chmod(d, 0o700)
    key = secrets.token_bytes(KEY_BYTES)
    key_id = secrets.token_hex(8)
    path = key_path(key_id, d)
    try:
        write_private(path, key.hex() + "\n", exclusive=True)
    except OSError as e:
        raise StoreError(f"cannot write store key '{path}': {e.strerror or e}") from e
    return StoreKey(key_id, key, path)


def load_key(key_id: str, expected_fingerprint: str | None, *, store: Path,
             directory: Path | None = None) -> StoreKey:
    """Read key ``key_id``; a missing, unreadable or wrong key is a one-line :class:`StoreError` naming the
    path where the key was expected."""
    path = key_path(key_id, directory)
    try:
        raw = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise StoreError(
            f"store '{store}' hashes with key {key_id}, expected at '{path}', which does not exist (a store "
            f"copied from another machine needs its key file too; set AUDITLM_KEYS or AUDITLM_HOME to find it)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise StoreError(f"cannot read store key '{path}' for store '{store}': {e}") from e
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES or (expected_fingerprint is not None and fingerprint(key) != expected_fingerprint):
        raise StoreError(f"key file '{path}' is not the key of store '{store}' (fingerprint mismatch)")
    return StoreKey(key_id, key, path)


def write_private(path: str | Path, text: str, *, exclusive: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` readable and writable by its owner only (mode 0600, whatever the
    umask, also when the file already existed with another mode). ``exclusive``: fail if it exists."""
    p = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(p, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            fd = -1
            f.write(text)
    finally:
        if fd >= 0:
            os.close(fd)


def touch_private(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (a file some other writer then fills)."""
    fd = os.open(Path(path), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
