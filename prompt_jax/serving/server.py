"""HTTP serving of a prompt bank: FastAPI endpoints over a dynamic batcher.

Requests wait in one bounded queue; a batcher collects them until a batch is full
(`max_batch` rows) or the oldest has waited `max_wait_ms`, then runs the mixed batch in a
single worker thread (which also applies prompt additions and removals, so they never race a
forward). A request that would overflow the queue is answered 503 with Retry-After at once;
a client that disconnects has its rows dropped, never its batch. A list of more inputs than the
queue holds is refused with 413.

    POST   /classify       {"task", "text"[, "text_b"]} or a list of them
    GET    /tasks          the bank's prompts (name, task, labels, length, template)
    POST   /prompts        {"path"[, "name", "task"]}: add or replace a saved prompt
    DELETE /prompts/{name} remove one
    GET    /health         {"status": "ok", ...}
    GET    /metrics        queue depth, batch sizes, latency percentiles, compilations
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from prompt_jax.serving.classifier import EncodedRow, MixedClassifier, PromptChanged


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How the server batches and refuses.

    Attributes:
      max_batch: rows per forward (at most the classifier's largest batch bucket).
      max_wait_ms: how long the oldest queued row waits for a batch to fill.
      queue_limit: rows waiting at most; beyond it requests get 503 with Retry-After.
      retry_after_s: the Retry-After a 503 suggests.
      overlong: "truncate" (said in the answer) or "reject" (422) an over-long input.
      latency_window: requests kept for the latency percentiles.
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue_limit: int = 256
    retry_after_s: int = 1
    overlong: str = "truncate"
    latency_window: int = 10_000


class ClassifyRequest(BaseModel):
    """One input for one of the bank's tasks."""

    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1)
    text: str
    text_b: str | None = None


class AddPromptRequest(BaseModel):
    """A saved prompt (`<name>.npy` + sidecar, or any format `prompt_io` reads) to add."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1)
    name: str = ""
    task: str = ""


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


async def _until_disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def create_app(classifier: MixedClassifier, config: ServerConfig = ServerConfig()) -> FastAPI:
    """The FastAPI app serving `classifier`'s bank (warm it up first: see `serve`)."""
    metrics = Metrics(window=config.latency_window)
    batcher = Batcher(classifier, config, metrics)
    bank = classifier.bank
    lock = threading.Lock()  # one bank change at a time

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="prompt_jax", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.metrics = metrics

    def busy() -> HTTPException:
        metrics.rejected += 1
        return HTTPException(status_code=503, detail=f"the queue is full ({config.queue_limit} "
                             f"rows waiting); retry later",
                             headers={"Retry-After": str(config.retry_after_s)})

    @app.post("/classify")
    async def classify(payload: ClassifyRequest | list[ClassifyRequest], request: Request):
        started = time.perf_counter()
        single = not isinstance(payload, list)
        items = [payload] if single else payload
        if not items:
            raise HTTPException(status_code=422, detail="an empty list of inputs")
        if len(items) > config.queue_limit:  # could never fit: no use retrying
            raise HTTPException(status_code=413, detail=f"{len(items)} inputs exceed the queue "
                                f"limit of {config.queue_limit}; send fewer per request")
        rows = []
        for i, item in enumerate(items):
            where = "" if single else f"input {i}: "
            try:
                rows.append(classifier.encode(item.task, item.text, item.text_b,
                                              overlong=config.overlong))
            except KeyError as e:
                raise HTTPException(status_code=404, detail=where + e.args[0]) from None
            except ValueError as e:  # empty, over-long (reject), pair without text_b
                raise HTTPException(status_code=422, detail=where + str(e)) from None
        try:
            futures = batcher.submit(rows)
        except QueueFull:
            raise busy() from None
        metrics.requests += 1
        metrics.rows += len(rows)
        gone = asyncio.ensure_future(_until_disconnected(request))
        try:
            while not gone.done() and not all(f.done() for f in futures):
                await asyncio.wait([*(f for f in futures if not f.done()), gone],
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not all(f.done() for f in futures):  # the client went away: drop its rows only
            for f in futures:
                f.cancel()
            metrics.disconnected += 1
            return Response(status_code=499)
        failures = [f.exception() for f in futures if f.exception() is not None]
        changed = [e for e in failures if isinstance(e, PromptChanged)]
        if changed:
            raise HTTPException(status_code=409, detail=str(changed[0]))
        if failures:
            metrics.errors += 1
            e = failures[0]
            raise HTTPException(status_code=500, detail=f"{type(e).__name__}: {e}")
        results = [f.result() for f in futures]
        metrics.latency((time.perf_counter() - started) * 1000)
        out = [r.to_json() for r in results]
        for row, o in zip(rows, out, strict=True):
            if row.truncated:
                o["input_tokens"] = row.input_tokens
                o["kept_tokens"] = int(len(row.ids))
        return out[0] if single else out

    @app.get("/tasks")
    async def list_tasks():
        _, entries = bank.snapshot()
        return {"tasks": [entries[n].describe() for n in sorted(entries)]}

    def change(fn):
        with lock:
            return classifier.add_prompt(fn)

    @app.post("/prompts")
    async def add_prompt(body: AddPromptRequest):
        before = classifier.compilations
        try:
            entry, _ = await batcher.in_worker(
                change, lambda: bank.add_file(body.path, name=body.name, task=body.task))
        except FileNotFoundError as e:
            raise HTTPException(status_code=404, detail=str(e)) from None
        except KeyError as e:
            raise HTTPException(status_code=404, detail=e.args[0]) from None
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        return {"added": entry.describe(), "compilations": classifier.compilations - before}

    @app.delete("/prompts/{name}")
    async def remove_prompt(name: str):
        try:
            entry = await batcher.in_worker(bank.remove, name)
        except KeyError as e:
            raise HTTPException(status_code=404, detail=e.args[0]) from None
        return {"removed": entry.name}

    @app.get("/health")
    async def health():
        return {"status": "ok", "warm": classifier.warm, "prompts": len(bank),
                "queue_depth": batcher.depth}

    @app.get("/metrics")
    async def get_metrics():
        sizes = metrics.batch_sizes
        batched = sum(sizes.values())
        return {
            "queue_depth": batcher.depth, "queue_limit": config.queue_limit,
            "requests": metrics.requests, "rows": metrics.rows, "rejected": metrics.rejected,
            "disconnected": metrics.disconnected, "errors": metrics.errors,
            "batches": metrics.batches,
            "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
            "mean_batch_size": (sum(k * v for k, v in sizes.items()) / batched
                                if batched else None),
            "latency_ms": metrics.percentiles(),
            "compilations": {"forward": classifier.compilations,
                             "after_warm_up": classifier.compilations_since_warm_up,
                             "bank_writes": bank.write_traces},
            "bank": {"prompts": len(bank), **dataclasses.asdict(bank.shape)},
        }

    return app


def serve(classifier: MixedClassifier, config: ServerConfig = ServerConfig(), *,
          host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          sockets: list[Any] | None = None) -> None:
    """Warms the classifier up (unless it is) and serves it with uvicorn until stopped."""
    import uvicorn

    if not classifier.warm:
        classifier.warm_up()
    server = uvicorn.Server(uvicorn.Config(create_app(classifier, config), host=host, port=port,
                                           log_level=log_level))
    server.run(sockets=sockets)
