"""Wake-ups for long polls: one asyncio.Event per waiting key, replaced on every notification.

A waiter takes the current event *before* it checks the database, so a notification that lands between its
check and its wait still wakes it; the notifier commits *before* notifying. Notifications may come from worker
threads (sync endpoints) and are handed to the event loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import datetime

from nordfed.hub.models import utcnow

Key = tuple[str, int]  # ("node", node_id) | ("task", task_id)


class Dispatcher:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[Key, asyncio.Event] = {}
        self._waiters: Counter[Key] = Counter()
        self._lock = threading.Lock()
        #: node id → notifications so far; lets the claimer skip the database for a node with nothing new
        self.node_generation: Counter[int] = Counter()
        self.polling: Counter[int] = Counter()  # node id → open long polls
        self.last_seen: dict[int, datetime] = {}
        self.closing = False  # set at server shutdown: long polls answer at once instead of holding the exit

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextmanager
    def waiting(self, key: Key):
        """Register a waiter for ``key``; yields a callable returning the event to wait on next."""
        self._waiters[key] += 1
        try:
            yield lambda: self._events.setdefault(key, asyncio.Event())
        finally:
            self._waiters[key] -= 1
            if self._waiters[key] <= 0:
                del self._waiters[key]
                self._events.pop(key, None)

    def _wake(self, keys: list[Key]) -> None:
        for key in keys:
            event = self._events.pop(key, None)
            if event is not None:
                event.set()

    def notify(self, kind: str, ids: Iterable[int]) -> None:
        """Wake every waiter on (kind, id); safe to call from any thread."""
        keys = [(kind, i) for i in ids]
        if kind == "node":
            with self._lock:
                for _, i in keys:
                    self.node_generation[i] += 1
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake(keys)
        else:
            loop.call_soon_threadsafe(self._wake, keys)

    def close(self) -> None:
        """Wake every long poll for a prompt shutdown; call on the event loop."""
        self.closing = True
        self._wake(list(self._events))

    def seen(self, node_id: int) -> None:
        self.last_seen[node_id] = utcnow()


async def wait_for(event: asyncio.Event, timeout: float) -> bool:
    """True when ``event`` fired within ``timeout`` seconds."""
    if timeout <= 0:
        return event.is_set()
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False
