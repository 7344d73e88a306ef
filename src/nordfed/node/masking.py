"""A node's part in secure aggregation: check the peers a task names, then mask the result for their sum.

The researcher names the peers (node id → X25519 key) in the signed task input, but she is the one the masks
hide the numbers from: a peer list holding a key of hers would let her strip this node's mask. So every peer's key
must be the one the hub publishes for that node, as this node reads it over its own connection (the hub alone
sees only sealed results; it would have to collude with the researcher).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nordfed.fed import wire
from nordfed.privacy import secure_sum
from nordfed.privacy.crypto import Identity, VerificationError


def peers_of(signed: Mapping[str, Any]) -> dict[str, str] | None:
    """The peer list of a signed task input (None: the researcher did not ask for a secure sum)."""
    spec = signed.get("secure_sum")
    if spec is None:
        return None
    peers = spec.get("peers") if isinstance(spec, dict) else None
    if not isinstance(peers, dict) or not peers or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in peers.items()):
        raise VerificationError("secure aggregation: the task's peer list is not a map of node ids to keys")
    return dict(peers)


def check_peers(peers: Mapping[str, str], node_id: int, identity: Identity, listing: Iterable[Mapping[str, Any]],
                min_sites: int = 1) -> None:
    """Raise unless ``peers`` names this node with its own key, at least ``min_sites`` nodes, and every other
    node with the encryption key the hub lists for it (``listing``: the collaboration's nodes as the hub gives
    them to this node)."""
    if peers.get(str(node_id)) != identity.encryption_public:
        raise VerificationError("secure aggregation: the peer list does not name this node with its key")
    if len(peers) < min_sites:
        raise VerificationError(f"secure aggregation over {len(peers)} site(s); this node's policy asks for at "
                                f"least {min_sites}")
    published = {str(n.get("id")): n.get("encryption_key") for n in listing}
    wrong = sorted((p for p, key in peers.items() if published.get(p) != key), key=lambda p: (len(p), p))
    if wrong:
        raise VerificationError(f"secure aggregation: the key given for node(s) {', '.join(wrong[:5])[:200]} is not "
                                "the one the hub publishes (a substituted key would unmask this node's result)")


def masked(result: bytes, peers: Mapping[str, str], node_id: int, identity: Identity,
           signed: Mapping[str, Any]) -> bytes:
    """The result (wire bytes) masked for the sum over ``peers`` in the round the signed input defines."""
    session = secure_sum.round_id(str(signed["nonce"]), str(signed["algorithm"]), str(signed["params"]), peers)
    return wire.encode(secure_sum.mask(wire.decode(result), str(node_id), identity.encryption_key, peers, session))
