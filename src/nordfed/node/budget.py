"""Each researcher's differential-privacy budget at this node (``policy.privacy_budget``: total ε per researcher).

Every charge is a ``privacy_spent`` entry on the node's ledger (who, which task, how much, the new total),
appended before the run: the spend survives restarts, cannot be undone without breaking the chain, and an
audit sees it. Budgets add up by basic sequential composition (k releases at ε each cost k·ε), the accounting
DataSHIELD's and OpenDP's users know; it never under-counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from typing import Any

from nordfed.fed import wire
from nordfed.node.audit import NodeLedger, run_ids
from nordfed.privacy.crypto import VerificationError, unb64
from nordfed.privacy.dp import DPRequestError, requested_epsilon

KIND = "privacy_spent"


class PrivacyBudget:
    def __init__(self, ledger: NodeLedger, limit: float | None):
        self.ledger = ledger
        self.limit = limit
        self._spent: dict[str, float] = defaultdict(float)
        for entry in ledger.ledger.entries():
            if entry.kind == KIND:
                self._spent[str(entry.payload["username"])] += float(entry.payload["epsilon"])

    def admit(self, run: Mapping[str, Any], signed: Mapping[str, Any], dp_required: bool,
              dp_algorithms: Collection[str]) -> str | None:
        """Why a verified task's differential privacy (or its absence) is not acceptable here, or None after
        charging the ε it asks for (before the run: a run that then fails has still seen the data)."""
        try:
            params = wire.decode(unb64(str(signed["params"]), "params"))
            epsilon = requested_epsilon(params) if isinstance(params, dict) else None
        except (DPRequestError, VerificationError, ValueError) as exc:
            return str(exc)
        if epsilon is None:
            return ("this node releases results only under differential privacy (a task asks with dp: {epsilon})"
                    if dp_required else None)
        if signed["algorithm"] not in dp_algorithms:
            return f"{signed['algorithm']} does not release under differential privacy"
        return self.charge(run, str(signed["username"]), epsilon)

    def spent(self, username: str) -> float:
        return self._spent.get(username, 0.0)

    def charge(self, run: Mapping[str, Any], username: str, epsilon: float) -> str | None:
        """Charge ``epsilon`` to ``username`` (on the ledger), or say why the budget does not allow it."""
        spent = self.spent(username)
        if self.limit is not None and spent + epsilon > self.limit * (1 + 1e-12):
            return (f"privacy budget: {username} has spent ε = {spent:g} of the {self.limit:g} this node allows; "
                    f"this task asks for {epsilon:g}")
        self.ledger.append(KIND, {**run_ids(run), "username": username, "epsilon": epsilon,
                                  "total": spent + epsilon})
        self._spent[username] = spent + epsilon
        return None
