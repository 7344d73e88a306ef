"""Ledger entries and checkpoints: canonical encoding, hashing and Ed25519 signatures (pure, no storage).

An entry's ``entry_hash`` is the sha256 (hex) of the canonical JSON (sorted keys, no whitespace) of every field
except ``entry_hash`` and ``signature``; ``signature`` is the writer's Ed25519 signature over those same bytes.
``prev_hash`` chains each entry to the one before (``GENESIS`` for entry 1), so the last hash commits to all
history and a (seq, hash) checkpoint pins a whole chain.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from nacl.signing import SigningKey

from nordfed.privacy.crypto import Identity, VerificationError, _canonical, b64, unb64, verify

GENESIS = "0" * 64
MAX_PAYLOAD_BYTES = 16_384  # the ledger records identifiers and hashes, never data: a big payload is a bug

# What the node runtime, hub and model registry write; other snake_case kinds are allowed for new event types.
KINDS = (
    "task_received", "run_refused", "run_completed", "run_failed", "result_posted",
    "policy_changed", "model_registered", "key_rotated", "checkpoint_countersigned",
)
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
FIELDS = ("seq", "ts", "kind", "actor", "payload", "prev_hash", "entry_hash", "signer", "signature")


class LedgerFormatError(ValueError):
    """An entry or checkpoint is malformed (names the field; the caller adds file and line)."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def signing_key_of(key: SigningKey | Identity) -> SigningKey:
    return key.signing_key if isinstance(key, Identity) else key


def public_of(key: SigningKey | Identity) -> str:
    """base64 Ed25519 verify key, the same text ``Identity.signing_public`` publishes."""
    return b64(bytes(signing_key_of(key).verify_key))


def check_payload(payload: Any) -> dict[str, Any]:
    """A payload must be a small JSON object of finite values; returns a plain-JSON copy."""
    if not isinstance(payload, Mapping):
        raise LedgerFormatError(f"payload must be a JSON object, got {type(payload).__name__}")
    try:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise LedgerFormatError(f"payload is not plain JSON: {exc}") from exc
    if len(text) > MAX_PAYLOAD_BYTES:
        raise LedgerFormatError(f"payload is {len(text)} bytes (limit {MAX_PAYLOAD_BYTES}); record ids and hashes,"
                                " never data")
    return json.loads(text)


def check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise LedgerFormatError(f"kind must be a snake_case name like 'run_completed', got {kind!r}")
    return kind


@dataclass(frozen=True)
class Entry:
    seq: int
    ts: str
    kind: str
    actor: str
    payload: dict[str, Any]
    prev_hash: str
    entry_hash: str
    signer: str  # base64 Ed25519 verify key of the writer
    signature: str  # base64 Ed25519 signature over body_bytes()

    def body(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "kind": self.kind, "actor": self.actor, "payload": self.payload,
                "prev_hash": self.prev_hash, "signer": self.signer}

    def body_bytes(self) -> bytes:
        return _canonical(self.body())

    def computed_hash(self) -> str:
        return hashlib.sha256(self.body_bytes()).hexdigest()

    def hash_ok(self) -> bool:
        return self.computed_hash() == self.entry_hash

    def signature_ok(self) -> bool:
        """The signature verifies under the key the entry names (whether that key is trusted is the caller's call)."""
        try:
            verify(unb64(self.signature, "signature") + self.body_bytes(), self.signer)
        except VerificationError:
            return False
        return True

    def with_seq(self, seq: int) -> Entry:
        return replace(self, seq=seq)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Entry:
        """Parse an exported entry; raises LedgerFormatError naming the bad field. Does not check hash or signature."""
        if not isinstance(d, Mapping):
            raise LedgerFormatError(f"entry must be a JSON object, got {type(d).__name__}")
        missing = [f for f in FIELDS if f not in d]
        if missing:
            raise LedgerFormatError(f"entry lacks field {missing[0]!r}")
        seq = d["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise LedgerFormatError(f"field 'seq' must be a positive integer, got {seq!r}")
        for name in ("ts", "actor", "signer", "signature"):
            if not isinstance(d[name], str) or not d[name]:
                raise LedgerFormatError(f"field {name!r} must be a non-empty string, got {d[name]!r}")
        for name in ("prev_hash", "entry_hash"):
            if not isinstance(d[name], str) or not _HEX64_RE.match(d[name]):
                raise LedgerFormatError(f"field {name!r} must be 64 lowercase hex digits, got {d[name]!r}")
        try:
            payload = check_payload(d["payload"])
        except LedgerFormatError as exc:
            raise LedgerFormatError(f"field 'payload': {exc}") from exc
        try:
            kind = check_kind(d["kind"])
        except LedgerFormatError as exc:
            raise LedgerFormatError(f"field 'kind': {exc}") from exc
        return cls(seq=seq, ts=d["ts"], kind=kind, actor=d["actor"], payload=payload, prev_hash=d["prev_hash"],
                   entry_hash=d["entry_hash"], signer=d["signer"], signature=d["signature"])


def make_entry(seq: int, kind: str, actor: str, payload: Mapping[str, Any], prev_hash: str,
               key: SigningKey | Identity, ts: str | None = None) -> Entry:
    """Build, hash and sign the entry that follows ``prev_hash``."""
    if not isinstance(actor, str) or not actor:
        raise LedgerFormatError(f"actor must be a non-empty name, got {actor!r}")
    sk = signing_key_of(key)
    draft = Entry(seq=seq, ts=ts or utc_now(), kind=check_kind(kind), actor=actor, payload=check_payload(payload),
                  prev_hash=prev_hash, entry_hash="", signer=public_of(sk), signature="")
    body = draft.body_bytes()
    return replace(draft, entry_hash=hashlib.sha256(body).hexdigest(), signature=b64(sk.sign(body).signature))


@dataclass(frozen=True)
class Checkpoint:
    """A published chain head (seq, entry_hash) with countersignatures: signer key (base64) → signature (base64)."""

    seq: int
    entry_hash: str
    signatures: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.seq}:{self.entry_hash}"

    def message(self) -> bytes:
        return _canonical({"seq": self.seq, "entry_hash": self.entry_hash})

    def countersign(self, key: SigningKey | Identity) -> Checkpoint:
        sk = signing_key_of(key)
        sig = b64(sk.sign(self.message()).signature)
        return replace(self, signatures={**self.signatures, public_of(sk): sig})

    def signed_by(self, public_keys: set[str] | None = None) -> list[str]:
        """Signer keys whose signature verifies (restricted to ``public_keys`` when given); raises on a bad one."""
        good = []
        for signer, sig in sorted(self.signatures.items()):
            try:
                verify(unb64(sig, "checkpoint signature") + self.message(), signer)
            except VerificationError as exc:
                raise VerificationError(f"checkpoint {self.seq} signature by {signer} does not verify") from exc
            if public_keys is None or signer in public_keys:
                good.append(signer)
        return good

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "entry_hash": self.entry_hash, "signatures": dict(self.signatures)}

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """``SEQ:HASH`` or a checkpoint JSON object."""
        text = text.strip()
        if text.startswith("{"):
            try:
                d = json.loads(text)
            except ValueError as exc:
                raise LedgerFormatError(f"checkpoint is not valid JSON: {exc}") from exc
            return cls.from_dict(d)
        seq, sep, h = text.partition(":")
        if not sep or not seq.isdigit():
            raise LedgerFormatError(f"checkpoint must be SEQ:HASH, got {text!r}")
        return cls.from_dict({"seq": int(seq), "entry_hash": h})

    @classmethod
    def from_dict(cls, d: Any) -> Checkpoint:
        if not isinstance(d, Mapping):
            raise LedgerFormatError("checkpoint must be a JSON object")
        seq, h, sigs = d.get("seq"), d.get("entry_hash"), d.get("signatures", {})
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise LedgerFormatError(f"checkpoint field 'seq' must be a positive integer, got {seq!r}")
        if not isinstance(h, str) or not _HEX64_RE.match(h):
            raise LedgerFormatError(f"checkpoint field 'entry_hash' must be 64 lowercase hex digits, got {h!r}")
        if not isinstance(sigs, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in sigs.items()):
            raise LedgerFormatError("checkpoint field 'signatures' must map signer key to signature")
        return cls(seq=seq, entry_hash=h, signatures=dict(sigs))
