"""Batched run claims for long polls.

Polls woken together (a task fanned out to many nodes) would each need a worker thread and a database round trip;
instead every claim requested while the previous batch is in flight is sent as one UPDATE … RETURNING. Batches go
one at a time, so claims never race each other; a lone poll still costs a single statement.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict

from fastapi.concurrency import run_in_threadpool

from nordfed.hub.db import HubDB
from nordfed.hub.lifecycle import TaskMeta, activate_tasks, claim_runs, task_meta
from nordfed.hub.schemas import RunAssignment

CACHE_LIMIT = 100_000  # task entries kept before the caches are dropped (they refill from the database)


class Claimer:
    def __init__(self, db: HubDB):
        self.db = db
        self._meta: dict[int, TaskMeta] = {}
        self._active: set[int] = set()  # tasks known to be active already (a task never returns to pending)
        self._lock = threading.Lock()
        self._waiting: dict[int, list[asyncio.Future]] = {}
        self._busy = False

    def remember(self, task_id: int, meta: TaskMeta) -> None:
        with self._lock:
            if len(self._meta) >= CACHE_LIMIT:
                self._meta.clear()
            self._meta[task_id] = meta

    async def claim(self, node_id: int) -> RunAssignment | None:
        """The oldest pending run of ``node_id``, now active, or None."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._waiting.setdefault(node_id, []).append(future)
        if not self._busy:
            self._busy = True
            loop.call_soon(self._start)  # collect every claim made in this loop iteration
        return await future

    def _start(self) -> None:
        batch: dict[int, asyncio.Future] = {}
        for node_id in list(self._waiting):
            futures = self._waiting[node_id]
            while futures and futures[0].done():  # the poll went away
                futures.pop(0)
            if futures:
                batch[node_id] = futures.pop(0)  # one claim per node per batch; a second poll waits its turn
            if not futures:
                del self._waiting[node_id]
        if not batch:
            self._busy = False
            return
        job = asyncio.ensure_future(run_in_threadpool(self._claim_batch, list(batch)))
        job.add_done_callback(lambda done: self._finish(done, batch))

    def _finish(self, done: asyncio.Future, batch: dict[int, asyncio.Future]) -> None:
        error = done.exception()
        for node_id, future in batch.items():
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result().get(node_id))
        self._start()

    def _claim_batch(self, node_ids: list[int]) -> dict[int, RunAssignment]:
        with self.db.engine.begin() as con:
            claimed = claim_runs(con, node_ids)
            if not claimed:
                return {}
            task_ids = {task_id for _, task_id, _ in claimed.values()}
            with self._lock:
                missing = [t for t in task_ids if t not in self._meta]
            found = task_meta(con, missing) if missing else {}
        with self._lock:
            self._meta.update(found)
            metas = {t: self._meta.get(t) or found[t] for t in task_ids}
            inactive = sorted(task_ids - self._active)
        if inactive:
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
