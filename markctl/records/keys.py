"""The site's signing key and the signed checkpoints it makes (Ed25519, RFC 8032, via ``cryptography``).

A hash chain alone does not stop someone with write access from rewriting every row consistently,
or from deleting the last rows and fixing the head. A checkpoint signs the chain head (sequence and
hash) with the site's private key; a forger without that key cannot make a new chain that carries
the old checkpoints. The public key is recorded in the chain's first event when the registry is
created, and its fingerprint is printed then, so it can be kept on paper too.

Where the key lives: a PEM (PKCS #8) file, readable by its owner only (0600), by default beside the
SQLite file as ``<registry>.key`` or where ``--key`` / ``MARKCTL_SITE_KEY`` say. Whoever can read the
registry's directory can then read the key, so a site that fears its own administrators moves the
key elsewhere (another account, removable media) and passes ``--key`` when it checkpoints. When
``MARKCTL_SITE_KEY_PASSPHRASE`` is set the file is encrypted with it (PKCS #8 with the best
encryption ``cryptography`` offers).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from markctl.errors import RecordError

__all__ = [
    "PASSPHRASE_ENV",
    "checkpoint_message",
    "fingerprint",
    "generate_key",
    "load_key",
    "paper_code",
    "public_hex",
    "sign",
    "signature_ok",
]

PASSPHRASE_ENV = "MARKCTL_SITE_KEY_PASSPHRASE"  # noqa: S105 - the name of a variable


def public_hex(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def fingerprint(public: str) -> str:
    """A short, readable name of a public key (first 80 bits of its SHA-256), for paper and screens."""
    digest = hashlib.sha256(bytes.fromhex(public)).hexdigest()[:20]
    return "-".join(digest[i : i + 4] for i in range(0, 20, 4))


def generate_key(path: Path) -> Ed25519PrivateKey:
    """A new site key written to ``path`` (created 0600, never overwritten)."""
    key = Ed25519PrivateKey.generate()
    passphrase = os.environ.get(PASSPHRASE_ENV)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise RecordError(
            f"a key exists already at {path}", hint="pass --key with a new path, or move the old key away"
        ) from exc
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    return key


def load_key(path: Path) -> Ed25519PrivateKey:
    """The site key from ``path`` (decrypted with ``MARKCTL_SITE_KEY_PASSPHRASE`` when it is set)."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise RecordError(
            f"cannot read the site key {path}: {exc.strerror}",
            hint="pass --key PATH (or set MARKCTL_SITE_KEY) to where the site key is kept",
        ) from exc
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase.encode() if passphrase else None)
    except (ValueError, TypeError) as exc:
        raise RecordError(
            f"the site key {path} cannot be read: {exc}",
            hint=f"check the file and {PASSPHRASE_ENV}",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise RecordError(f"{path} is not an Ed25519 key")
    return key


def checkpoint_message(site: str, seq: int, head_hash: str) -> bytes:
    """What a checkpoint signs: the site and the chain head, in a fixed text form."""
    return f"markctl-checkpoint/1\n{site}\n{seq}\n{head_hash}".encode()


def sign(key: Ed25519PrivateKey, site: str, seq: int, head_hash: str) -> str:
    return key.sign(checkpoint_message(site, seq, head_hash)).hex()


def signature_ok(public: str, site: str, seq: int, head_hash: str, signature: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)).verify(
            bytes.fromhex(signature), checkpoint_message(site, seq, head_hash)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def paper_code(seq: int, head_hash: str) -> str:
    """A head short enough to write down: ``SEQ:`` and 80 bits of the hash (``verify --expect-head`` takes it)."""
    return f"{seq}:{head_hash[:20]}"
