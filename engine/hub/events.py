"""The hub's event bus: job, disk and restore events fanned out to every SSE subscriber.

Jobs run in worker threads while subscribers live on the event loop, so ``publish`` is
safe from any thread. A subscriber that does not keep up loses its oldest events
rather than growing the hub's memory; the next ``job`` event brings it up to date.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from engine.contract.hub import DiskEvent, Job
from engine.contract.restore import RestoreJob

QUEUE_LIMIT = 1000


@dataclass(frozen=True)
class Event:
    data: Job | DiskEvent | RestoreJob

    @property
    def kind(self) -> Literal["job", "disk", "restore"]:
        """The SSE ``event:`` name."""
        if isinstance(self.data, RestoreJob):
            return "restore"
        return "job" if isinstance(self.data, Job) else "disk"


class EventBus:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop subscribers run on; events published before this are dropped."""
        self._loop = loop

    def publish(self, data: Job | DiskEvent | RestoreJob) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        event = Event(data)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(event)
        else:
            loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: Event) -> None:
        with self._lock:
            queues = list(self._subscribers)
        for queue in queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    @contextmanager
    def subscription(self) -> Iterator[asyncio.Queue[Event]]:
        """A queue that receives every event from now until the block ends."""
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_LIMIT)
        with self._lock:
            self._subscribers.add(queue)
        try:
            yield queue
        finally:
            with self._lock:
                self._subscribers.discard(queue)
