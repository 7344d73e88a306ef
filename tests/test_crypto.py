"""End-to-end encryption and signatures: tampering, wrong keys and replays are detected."""

from __future__ import annotations

import stat
import time

import pytest

from nordfed.privacy.crypto import (
    Identity,
    VerificationError,
    b64,
    open_result,
    open_task_input,
    seal_result,
    seal_task_input,
    unb64,
)


def _payload(researcher: Identity, username: str = "alice") -> dict:
    return {"nonce": "n1", "algorithm": "nordfed.count", "version": "1", "code_hash": "ab" * 32,
            "params": b64(b"{}"), "username": username, "encryption_key": researcher.encryption_public,
            "created_at": time.time(), "organization_id": 1}


def test_task_input_round_trip_and_pinned_signer():
    alice, node = Identity.generate(), Identity.generate()
    blob = seal_task_input(alice, _payload(alice), node.encryption_public)
    assert b"nordfed.count" not in unb64(blob)  # sealed, not just signed
    assert open_task_input(node, blob, {"alice": alice.signing_public})["algorithm"] == "nordfed.count"
    # a different key pinned for alice (the hub cannot impersonate her) and an unknown user are both refused
    with pytest.raises(VerificationError, match="signature"):
        open_task_input(node, blob, {"alice": Identity.generate().signing_public})
    with pytest.raises(VerificationError, match="not pinned"):
        open_task_input(node, blob, {"bob": alice.signing_public})
    # only the addressed node can open it
    with pytest.raises(VerificationError, match="decrypt"):
        open_task_input(Identity.generate(), blob, {"alice": alice.signing_public})


def test_forged_input_signed_by_someone_else_is_rejected():
    alice, mallory, node = Identity.generate(), Identity.generate(), Identity.generate()
    forged = seal_task_input(mallory, _payload(mallory, username="alice"), node.encryption_public)
    with pytest.raises(VerificationError, match="signature"):
        open_task_input(node, forged, {"alice": alice.signing_public})


def test_result_tamper_and_replay_detected():
    alice, node = Identity.generate(), Identity.generate()
    blob = seal_result(node, 7, 3, b'{"n":42}', alice.encryption_public)
    assert open_result(alice, blob, node.signing_public, 7, 3) == b'{"n":42}'
    raw = bytearray(unb64(blob))
    raw[-5] ^= 1
    with pytest.raises(VerificationError, match="decrypt"):
        open_result(alice, b64(bytes(raw)), node.signing_public, 7, 3)
    with pytest.raises(VerificationError, match="not run 8"):
        open_result(alice, blob, node.signing_public, 8, 3)
    with pytest.raises(VerificationError, match="signature"):
        open_result(alice, blob, Identity.generate().signing_public, 7, 3)
    # a result sealed to alice by someone else with a valid-looking envelope fails the node's signature
    fake = seal_result(Identity.generate(), 7, 3, b'{"n":1}', alice.encryption_public)
    with pytest.raises(VerificationError, match="signature"):
        open_result(alice, fake, node.signing_public, 7, 3)


def test_key_files_private_and_not_overwritten(tmp_path):
    ident = Identity.generate()
    ident.save(tmp_path / "k")
    for name in ("encryption.key", "signing.key"):
        assert stat.S_IMODE((tmp_path / "k" / name).stat().st_mode) == 0o600
    loaded = Identity.load(tmp_path / "k")
    assert loaded.signing_public == ident.signing_public and loaded.encryption_public == ident.encryption_public
    with pytest.raises(FileExistsError):
        Identity.generate().save(tmp_path / "k")
    (tmp_path / "k" / "signing.key").chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        Identity.load(tmp_path / "k")
    with pytest.raises(FileNotFoundError, match="generate"):
        Identity.load(tmp_path / "none")
