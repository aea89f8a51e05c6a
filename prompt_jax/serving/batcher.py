"""The server's dynamic batcher: one bounded queue, a loop that collects rows until a batch is
full or its oldest row has waited long enough, and the one worker thread that runs batches
(and bank changes, and generation, between them); and the counters /metrics reads."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from prompt_jax.serving.classifier import EncodedRow, MixedClassifier

if TYPE_CHECKING:
    from prompt_jax.serving.server import ServerConfig


@dataclasses.dataclass
class Metrics:
    """Counters the server keeps (read by GET /metrics)."""

    window: int = 10_000
    requests: int = 0
    rows: int = 0
    rejected: int = 0  # 503: the queue was full
    disconnected: int = 0
    errors: int = 0  # 500
    batches: int = 0
    batch_sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    latencies_ms: collections.deque = dataclasses.field(default_factory=collections.deque)

    def latency(self, ms: float) -> None:
        self.latencies_ms.append(ms)
        while len(self.latencies_ms) > self.window:
            self.latencies_ms.popleft()

    def percentiles(self) -> dict[str, float | None]:
        if not self.latencies_ms:
            return {"p50": None, "p90": None, "p99": None, "max": None}
        values = np.asarray(self.latencies_ms)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99),
                "max": float(values.max())}


@dataclasses.dataclass
class _Queued:
    row: EncodedRow
    future: asyncio.Future
    enqueued: float


class QueueFull(Exception):
    """More rows than the queue has room for."""


class Batcher:
    """The bounded queue, the batching loop and the one worker thread."""

    def __init__(self, classifier: MixedClassifier, config: ServerConfig, metrics: Metrics):
        if config.max_batch > classifier.max_batch:
            raise ValueError(f"max_batch {config.max_batch} exceeds the largest batch bucket "
                             f"({classifier.max_batch})")
        self.classifier = classifier
        self.config = config
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompt-jax-serve")
        self._queue: collections.deque[_Queued] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=True)

    def submit(self, rows: list[EncodedRow]) -> list[asyncio.Future]:
        """Queues rows (all or none). Raises QueueFull when they do not fit."""
        if len(self._queue) + len(rows) > self.config.queue_limit:
            raise QueueFull
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        queued = [_Queued(row, loop.create_future(), now) for row in rows]
        self._queue.extend(queued)
        self._arrived.set()
        return [q.future for q in queued]

    async def in_worker(self, fn, *args):
        """Runs `fn(*args)` in the worker thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _loop(self) -> None:
        wait = self.config.max_wait_ms / 1000
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._queue[0].enqueued + wait
            while len(self._queue) < self.config.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
            taken = [self._queue.popleft()
                     for _ in range(min(self.config.max_batch, len(self._queue)))]
            taken = [q for q in taken if not q.future.done()]  # clients that went away
            if not taken:
                continue
            self.metrics.batches += 1
            self.metrics.batch_sizes[len(taken)] += 1
            try:
                results = await self.in_worker(self.classifier.run, [q.row for q in taken])
            except Exception as e:  # a bug, not a bad request: fail this batch, keep serving
                results = [e] * len(taken)
            for q, result in zip(taken, results, strict=True):
                if q.future.done():
                    continue
                if isinstance(result, Exception):
                    q.future.set_exception(result)
                else:
                    q.future.set_result(result)
