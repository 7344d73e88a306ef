"""Hash-chained, signed, replicated audit log (DESIGN invariant 3): every task, refusal, result, policy change
and model version is an entry; ``Ledger.verify`` / ``nordfed ledger verify`` name the first broken one.

Node and hub use it with a few lines::

    from nordfed.ledger import Ledger
    ledger = Ledger.open(state_dir / "node.ledger", identity)      # identity: privacy.crypto.Identity
    ledger.append("run_completed", node_name, {"task_id": 7, "algorithm": "km@1.0", "code_hash": h,
                                               "result_sha256": hashlib.sha256(blob.encode()).hexdigest()})
    hub_copy.merge(ledger.export_since(hub_copy_head_seq))         # replication
    ledger.verify([identity.signing_public], checkpoints=[published]).ok
"""

from nordfed.ledger.entry import GENESIS, KINDS, Checkpoint, Entry, LedgerFormatError, make_entry
from nordfed.ledger.jsonl import dump_jsonl, load_jsonl
from nordfed.ledger.store import Ledger, LedgerError, LedgerFork, MergeReport
from nordfed.ledger.verify import Problem, VerifyReport, verify_rows

__all__ = [
    "GENESIS", "KINDS", "Checkpoint", "Entry", "Ledger", "LedgerError", "LedgerFork", "LedgerFormatError",
    "MergeReport", "Problem", "VerifyReport", "dump_jsonl", "load_jsonl", "make_entry", "verify_rows",
]
