"""End-to-end encryption and signatures for task inputs and results (PyNaCl; no primitives of our own).

Every researcher and node holds an X25519 encryption key pair and an Ed25519 signing key pair. A task input is
signed by the researcher and sealed (SealedBox: X25519 + XSalsa20-Poly1305) to one node; a result is signed by
the node over (run id, task id, result bytes) and sealed to the researcher's encryption key named in the
signed input. The hub only ever stores the base64 ciphertexts.

>>> alice, node = Identity.generate(), Identity.generate()                   # doctest: +SKIP
>>> blob = seal_task_input(alice, {"algorithm": "x"}, node.encryption_public)  # doctest: +SKIP
>>> open_task_input(node, blob, {"alice": alice.signing_public})            # doctest: +SKIP
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

ENC_PRIVATE = "encryption.key"
ENC_PUBLIC = "encryption.pub"
SIGN_PRIVATE = "signing.key"
SIGN_PUBLIC = "signing.pub"
#: a node's secret for its own randomness (cross-validation folds, time noise): never leaves the node
SITE_SECRET = "site.secret"


class VerificationError(Exception):
    """A ciphertext could not be decrypted, a signature did not verify, or signed metadata did not match."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str = "value") -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise VerificationError(f"{what} is not valid base64") from exc


def _public(key: str | bytes, cls: type[PublicKey] | type[VerifyKey], what: str) -> Any:
    raw = unb64(key, what) if isinstance(key, str) else key
    if len(raw) != 32:
        raise VerificationError(f"{what} must be 32 bytes, got {len(raw)}")
    return cls(raw)


@dataclass(frozen=True)
class Identity:
    """A researcher's or node's two private keys."""

    encryption_key: PrivateKey
    signing_key: SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(PrivateKey.generate(), SigningKey.generate())

    @property
    def encryption_public(self) -> str:
        """base64 X25519 public key (what the hub publishes)."""
        return b64(bytes(self.encryption_key.public_key))

    @property
    def signing_public(self) -> str:
        """base64 Ed25519 verify key (what policies and clients pin)."""
        return b64(bytes(self.signing_key.verify_key))

    def save(self, key_dir: str | Path) -> None:
        """Write the key pair files; private keys get mode 0600 and are never overwritten."""
        d = Path(key_dir)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in (ENC_PRIVATE, SIGN_PRIVATE):
            if (d / name).exists():
                raise FileExistsError(f"{d / name} exists; refusing to overwrite a private key")
        _write_private(d / ENC_PRIVATE, b64(bytes(self.encryption_key)))
        _write_private(d / SIGN_PRIVATE, b64(bytes(self.signing_key)))
        (d / ENC_PUBLIC).write_text(self.encryption_public + "\n")
        (d / SIGN_PUBLIC).write_text(self.signing_public + "\n")

    @classmethod
    def load(cls, key_dir: str | Path) -> Identity:
        d = Path(key_dir)
        try:
            enc = unb64((d / ENC_PRIVATE).read_text().strip(), str(d / ENC_PRIVATE))
            sig = unb64((d / SIGN_PRIVATE).read_text().strip(), str(d / SIGN_PRIVATE))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"no key pair in {d} ({exc.filename} missing); generate one first") from exc
        for path in (d / ENC_PRIVATE, d / SIGN_PRIVATE):
            if path.stat().st_mode & 0o077:
                raise PermissionError(f"{path} is readable by others; chmod 600 it")
        return cls(PrivateKey(enc), SigningKey(sig))

    @classmethod
    def load_or_create(cls, key_dir: str | Path) -> Identity:
        if (Path(key_dir) / SIGN_PRIVATE).exists():
            return cls.load(key_dir)
        ident = cls.generate()
        ident.save(key_dir)
        return ident


def site_secret(key_dir: str | Path) -> bytes:
    """The node's 32-byte secret from ``key_dir``, created (mode 0600) on first use."""
    path = Path(key_dir) / SITE_SECRET
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            _write_private(path, b64(os.urandom(32)))
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by others; chmod 600 it")
    secret = unb64(path.read_text().strip(), str(path))
    if len(secret) < 32:
        raise ValueError(f"{path} holds {len(secret)} bytes; a site secret has 32")
    return secret


def _write_private(path: Path, text: str) -> None:
    # O_EXCL + mode at creation: the key is never readable by others, not even briefly
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_and_seal(sender: Identity, payload: Mapping[str, Any], recipient_encryption_key: str) -> str:
    """Sign ``payload`` (canonical JSON) with the sender's Ed25519 key and seal it to the recipient."""
    signed = sender.signing_key.sign(_canonical(payload))
    box = SealedBox(_public(recipient_encryption_key, PublicKey, "recipient encryption key"))
    return b64(box.encrypt(bytes(signed)))


def unseal(recipient: Identity, blob: str) -> tuple[bytes, bytes]:
    """Decrypt a sealed blob; return (signed message, signature-stripped payload bytes) without verifying."""
    try:
        signed = SealedBox(recipient.encryption_key).decrypt(unb64(blob, "ciphertext"))
    except CryptoError as exc:
        raise VerificationError("ciphertext does not decrypt with this key (tampered or not for us)") from exc
    if len(signed) < 64:
        raise VerificationError("signed message is truncated")
    return signed, signed[64:]


def verify(signed: bytes, signing_key: str) -> dict[str, Any]:
    """Verify an Ed25519 signed message against a base64 verify key; return the JSON payload."""
    try:
        body = _public(signing_key, VerifyKey, "signing key").verify(signed)
    except BadSignatureError as exc:
        raise VerificationError("signature does not verify") from exc
    return json.loads(body)


def seal_task_input(researcher: Identity, payload: Mapping[str, Any], node_encryption_key: str) -> str:
    """A task input for one node: payload must name the researcher and carry its encryption key."""
    for key in ("nonce", "algorithm", "version", "code_hash", "params", "username", "encryption_key", "created_at"):
        if key not in payload:
            raise ValueError(f"task input payload lacks {key!r}")
    return sign_and_seal(researcher, payload, node_encryption_key)


def open_task_input(node: Identity, blob: str, researchers: Mapping[str, str]) -> dict[str, Any]:
    """Decrypt a task input and verify it against the signing key pinned for the researcher it names.

    ``researchers`` maps username → base64 Ed25519 key (from the node's own policy, not from the hub).
    """
    signed, body = unseal(node, blob)
    try:
        claimed = json.loads(body)
        username = str(claimed["username"])
    except (ValueError, KeyError, TypeError) as exc:
        raise VerificationError("task input is not a signed task payload") from exc
    if username not in researchers:
        raise VerificationError(f"researcher {username!r} is not pinned in this node's policy")
    return verify(signed, researchers[username])


def seal_result(node: Identity, run_id: int, task_id: int, result: bytes, researcher_encryption_key: str) -> str:
    """Sign (run id, task id, result bytes) with the node's key and seal to the researcher."""
    payload = {"run_id": int(run_id), "task_id": int(task_id), "result": b64(result)}
    return sign_and_seal(node, payload, researcher_encryption_key)


def open_result(researcher: Identity, blob: str, node_signing_key: str, run_id: int, task_id: int) -> bytes:
    """Decrypt and verify a node's result; the signed run and task ids must be the ones we asked about."""
    signed, _ = unseal(researcher, blob)
    payload = verify(signed, node_signing_key)
    if payload.get("run_id") != int(run_id) or payload.get("task_id") != int(task_id):
        raise VerificationError(
            f"result is signed for run {payload.get('run_id')} of task {payload.get('task_id')}, "
            f"not run {run_id} of task {task_id} (replayed?)"
        )
    return unb64(payload["result"], "result")
