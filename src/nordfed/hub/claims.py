"""Batched run claims for long polls: polls woken together (a task fanned out to many nodes) claim in one
UPDATE … RETURNING per batch (see batch.py). Batches go one at a time, so claims never race each other.

A node whose last claim found nothing, and which has not been notified since, has nothing pending: every change
that makes a run pending notifies its node (after commit), and the hub is one process. Its next poll then waits
without touching the database, which saves a write transaction per poll.
"""

from __future__ import annotations

import threading
from dataclasses import asdict

from nordfed.hub.batch import KeyedBatcher
from nordfed.hub.db import HubDB
from nordfed.hub.dispatch import Dispatcher
from nordfed.hub.lifecycle import TaskMeta, activate_tasks, claim_runs, task_meta
from nordfed.hub.schemas import RunAssignment

CACHE_LIMIT = 100_000  # task entries kept before the caches are dropped (they refill from the database)


class Claimer:
    def __init__(self, db: HubDB, dispatcher: Dispatcher):
        self.db, self.dispatcher = db, dispatcher
        self._idle: dict[int, int] = {}  # node id → notification generation at which it had nothing pending
        self._meta: dict[int, TaskMeta] = {}
        self._active: set[int] = set()  # tasks known to be active already (a task never returns to pending)
        self._lock = threading.Lock()
        self._batcher: KeyedBatcher[int, None, RunAssignment] = KeyedBatcher(self._claim_batch, run=db.run)

    def remember(self, task_id: int, meta: TaskMeta) -> None:
        with self._lock:
            if len(self._meta) >= CACHE_LIMIT:
                self._meta.clear()
            self._meta[task_id] = meta

    async def claim(self, node_id: int) -> RunAssignment | None:
        """The oldest pending run of ``node_id``, now active, or None (one claim per node per batch)."""
        generation = self.dispatcher.node_generation[node_id]
        if self._idle.get(node_id) == generation:
            return None
        run = await self._batcher.submit(node_id, None)
        if run is None:
            if len(self._idle) >= CACHE_LIMIT:
                self._idle.clear()
            self._idle[node_id] = generation  # a notification since then changes the generation
        else:
            self._idle.pop(node_id, None)
        return run

    def _claim_batch(self, batch: dict[int, None]) -> dict[int, RunAssignment]:
        # On PostgreSQL tasks are activated in a transaction of their own: holding run locks while waiting for task
        # locks would invert the lock order. SQLite has one writer at a time, so one transaction does both.
        one_tx = self.db.dialect == "sqlite"
        with self.db.engine.begin() as con:
            claimed = claim_runs(con, list(batch))
            if not claimed:
                return {}
            task_ids = {task_id for _, task_id, _ in claimed.values()}
            with self._lock:
                missing = [t for t in task_ids if t not in self._meta]
                inactive = sorted(task_ids - self._active)
            found = task_meta(con, missing) if missing else {}
            if inactive and one_tx:
                activate_tasks(con, inactive)
        with self._lock:
            self._meta.update(found)
            metas = {t: self._meta.get(t) or found[t] for t in task_ids}
        if inactive:
            if not one_tx:
                with self.db.engine.begin() as con:
                    activate_tasks(con, inactive)
            with self._lock:
                if len(self._active) >= CACHE_LIMIT:
                    self._active.clear()
                self._active.update(inactive)
        return {
            node_id: RunAssignment(run_id=run_id, task_id=task_id, input=data, **asdict(metas[task_id]))
            for node_id, (run_id, task_id, data) in claimed.items()
        }
