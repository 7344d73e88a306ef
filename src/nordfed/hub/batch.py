"""Request batching for the hot write paths (run claims and run updates).

A task fanned out to many nodes makes them all claim, then all report, at nearly the same moment. Handled one by
one, each request would take a worker thread, a transaction and (on PostgreSQL) the task's row lock in turn, so the
cost grows with the number of nodes. Instead every request submitted while the previous batch is in flight goes into
the next batch, processed by one function at once (in a worker thread, or inline for SQLite: see HubDB.run).
Batches go one at a time, so they never contend with each other; a lone request still costs a single transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

from fastapi.concurrency import run_in_threadpool

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")

#: processes one batch (key → request); returns key → result, or an exception for that key only
Process = Callable[[dict[K, V]], Mapping[K, R | BaseException]]
#: runs on the event loop after a successful batch, before the next one starts (e.g. to wake waiters)
OnDone = Callable[[dict[K, V], Mapping[K, R | BaseException]], None]
#: how a batch is run from the event loop: the thread pool by default, inline for SQLite (HubDB.run)
Runner = Callable[..., Awaitable[Any]]


class KeyedBatcher(Generic[K, V, R]):
    """Submit ``(key, value)`` and await the result. At most one request per key goes into a batch (a second one
    waits for the next), so a batch never has to order two requests for the same thing."""

    def __init__(self, process: Process, on_done: OnDone | None = None, run: Runner = run_in_threadpool):
        self._process, self._on_done, self._run = process, on_done, run
        self._waiting: dict[K, list[tuple[V, asyncio.Future]]] = {}
        self._busy = False

    async def submit(self, key: K, value: V) -> R | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._waiting.setdefault(key, []).append((value, future))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._start)  # collect every request made in this loop iteration
        return await future

    def _start(self) -> None:
        batch: dict[K, tuple[V, asyncio.Future]] = {}
        for key in list(self._waiting):
            queue = self._waiting[key]
            while queue and queue[0][1].done():  # the caller went away (client hung up)
                queue.pop(0)
            if queue:
                batch[key] = queue.pop(0)
            if not queue:
                del self._waiting[key]
        if not batch:
            self._busy = False
            return
        values = {key: value for key, (value, _) in batch.items()}
        job = asyncio.ensure_future(self._run(self._process, values))
        job.add_done_callback(lambda done: self._finish(done, values, batch))

    def _finish(self, done: asyncio.Future, values: dict[K, V], batch: dict[K, tuple[V, asyncio.Future]]) -> None:
        if done.cancelled():  # the event loop is shutting down
            for _, future in batch.values():
                future.cancel()
            return
        error = done.exception()
        results: Mapping[K, R | BaseException] = {} if error is not None else done.result()
        for key, (_, future) in batch.items():
            if future.done():
                continue
            outcome = error if error is not None else results.get(key)
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        try:
            if error is None and self._on_done is not None:
                self._on_done(values, results)
        finally:
            self._start()  # never leave later requests stranded
