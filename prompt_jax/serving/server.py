"""HTTP serving of a prompt bank: FastAPI endpoints over a dynamic batcher.

Requests wait in one bounded queue; a batcher collects them until a batch is full
(`max_batch` rows) or the oldest has waited `max_wait_ms`, then runs the mixed batch in a
single worker thread (which also applies prompt additions and removals, so they never race a
forward). A request that would overflow the queue is answered 503 with Retry-After at once;
a client that disconnects has its rows dropped, never its batch.

Before any of that, every request meets `guard.Guard` (the API key on every path but /health,
the body size) and an endpoint that takes texts `guard.Gate` (rows per request, characters per
text, before tokenization): all limits are `guard.Limits`, all shown by /metrics. Prompts come
in as bytes or as the bare name of a file in the bank folder, and are written there
crash-safely (`store`) before the answer, so a restart serves what was added.

    POST   /classify       {"task", "text"[, "text_b"]} or a list of them
    POST   /generate       {"task", "text"[, "text_b", "max_new_tokens"]} or a list of them
                           (generation tasks: decoded together, apart from classification)
    GET    /tasks          the bank's prompts (name, task, labels, length, template)
    POST   /prompts        {"name", "prompt": base64 npy/safetensors, "sidecar"} or
                           {"file": "<name>.npy"[, "name", "task"]}: add or replace a prompt
    DELETE /prompts/{name} remove one (its files move to removed/)
    GET    /health         {"status": "ok", ...} (no key needed)
    GET    /metrics        queue depth, batch sizes, latency percentiles, compilations, limits
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response

from prompt_jax.serving import api, guard, store
from prompt_jax.serving.batcher import Batcher, Metrics, QueueFull
from prompt_jax.serving.classifier import MixedClassifier, PromptChanged


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How the server batches, limits and refuses.

    Attributes:
      max_batch: rows per forward (at most the classifier's largest batch bucket).
      max_wait_ms: how long the oldest queued row waits for a batch to fill.
      queue_limit: rows waiting at most; beyond it requests get 503 with Retry-After.
      retry_after_s: the Retry-After a 503 suggests.
      overlong: "truncate" (said in the answer) or "reject" (422 over max_input_length tokens,
        413 over max_text_chars characters) an over-long input.
      latency_window: requests kept for the latency percentiles.
      limits: the body, row and text limits met before any work (`guard.Limits`).
      api_key: the key every endpoint but /health needs (None: none; see `guard.check_bind`).
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue_limit: int = 256
    retry_after_s: int = 1
    overlong: str = "truncate"
    latency_window: int = 10_000
    limits: guard.Limits = guard.Limits()
    api_key: str | None = dataclasses.field(default=None, repr=False)


async def _until_disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class NoFolder(Exception):
    """The bank was not read from a folder, so it has nowhere to keep an added prompt."""


def create_app(classifier: MixedClassifier, config: ServerConfig = ServerConfig(), *,
               folder: str | os.PathLike | None = None) -> FastAPI:
    """The FastAPI app serving `classifier`'s bank (warm it up first: see `serve`).

    Args:
      classifier: the bank's classifier.
      config: batching, limits and the API key.
      folder: where added prompts are written and removed ones moved out of (default: the
        folder the bank was read from, `PromptBank.folder`); without one, additions and
        removals live in memory only, and a `file` addition is refused.
    """
    metrics = Metrics(window=config.latency_window)
    refusals = guard.Refusals()
    gate = guard.Gate(config.limits, refusals, config.queue_limit)
    batcher = Batcher(classifier, config, metrics)
    bank = classifier.bank
    folder = Path(folder) if folder is not None else bank.folder

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="prompt_jax", lifespan=lifespan)
    app.add_middleware(guard.Guard, api_key=config.api_key, limits=config.limits,
                       refusals=refusals)
    guard.document(app, secured=config.api_key is not None)
    app.state.batcher = batcher
    app.state.metrics = metrics

    def busy() -> HTTPException:
        metrics.rejected += 1
        return HTTPException(status_code=503, detail=f"the queue is full ({config.queue_limit} "
                             f"rows waiting); retry later",
                             headers={"Retry-After": str(config.retry_after_s)})

    @app.post("/classify", response_model=api.Answer | list[api.Answer],
              response_model_exclude_none=True, responses=api.errors(404, 409, 413, 422, 503))
    async def classify(payload: api.ClassifyRequest | list[api.ClassifyRequest],
                       request: Request):
        started = time.perf_counter()
        single, items, rows, cut = encode_all(payload, generates=False)
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
        metrics.latency((time.perf_counter() - started) * 1000)
        out = answers([f.result() for f in futures], rows, cut)
        return out[0] if single else out

    def encode_all(payload, *, generates: bool):
        """(single, items, encoded rows, characters cut per row) of a request, every row
        checked against the limits and its task before any is run."""
        single = not isinstance(payload, list)
        items = [payload] if single else payload
        if not items:
            raise HTTPException(status_code=422, detail="an empty list of inputs")
        gate.rows(len(items))
        rows, cut = [], []
        for i, item in enumerate(items):
            where = "" if single else f"input {i}: "
            text, text_b, chars = gate.texts(item.text, item.text_b, config.overlong, where)
            cut.append(chars)
            try:
                row = classifier.encode(item.task, text, text_b, overlong=config.overlong)
            except KeyError as e:
                raise HTTPException(status_code=404, detail=where + e.args[0]) from None
            except ValueError as e:  # empty, over-long (reject), pair without text_b
                raise HTTPException(status_code=422, detail=where + str(e)) from None
            if row.entry.generates != generates:
                other = ("POST /generate: it generates text" if row.entry.generates
                         else "POST /classify: it picks a label")
                raise HTTPException(status_code=422, detail=f"{where}task {item.task!r}: use "
                                                            f"{other}")
            rows.append(row)
        return single, items, rows, cut

    def answers(results, rows, cut) -> list[dict]:
        out = [r.to_json() for r in results]
        for row, chars, o in zip(rows, cut, out, strict=True):
            if row.truncated:
                o["input_tokens"] = row.input_tokens
                o["kept_tokens"] = int(len(row.ids))
            if chars:
                o["truncated"] = True
                o["input_chars"] = chars
        return out

    @app.post("/generate", response_model=api.Generated | list[api.Generated],
              response_model_exclude_none=True, responses=api.errors(404, 409, 413, 422))
    async def generate(payload: api.GenerateRequest | list[api.GenerateRequest]):
        """Generation tasks' rows, decoded together (any mix of the bank's generation prompts)
        in the worker thread between classification batches: the two kinds never share a
        batch."""
        started = time.perf_counter()
        single, items, rows, cut = encode_all(payload, generates=True)
        limits = []
        for i, (item, row) in enumerate(zip(items, rows, strict=True)):
            most = row.entry.task.spec.max_new_tokens
            limit = item.max_new_tokens or most
            if limit > most:
                raise HTTPException(status_code=422, detail=(
                    f"{'' if single else f'input {i}: '}max_new_tokens {limit} exceeds task "
                    f"{item.task!r}'s maximum of {most}"))
            limits.append(limit)
        metrics.requests += 1
        metrics.rows += len(rows)
        try:
            results = await batcher.in_worker(classifier.generate, rows, limits)
        except Exception as e:  # a bug, not a bad request
            metrics.errors += 1
            raise HTTPException(status_code=500, detail=f"{type(e).__name__}: {e}") from None
        changed = [r for r in results if isinstance(r, PromptChanged)]
        if changed:
            raise HTTPException(status_code=409, detail=str(changed[0]))
        metrics.latency((time.perf_counter() - started) * 1000)
        out = answers(results, rows, cut)
        return out[0] if single else out

    @app.get("/tasks", response_model=api.TaskList)
    async def list_tasks():
        _, entries = bank.snapshot()
        return {"tasks": [entries[n].describe() for n in sorted(entries)]}

    def public(message: str) -> str:
        """An error message without the bank folder's path (a client names files by their bare
        names only)."""
        if folder is None:
            return message
        for prefix in {str(folder), os.path.abspath(folder), os.path.realpath(folder)}:
            message = message.replace(prefix + os.sep, "")
        return message

    def add(body: api.AddPromptRequest) -> tuple[dict, int, str | None]:
        """Reads, checks, writes (before anything changes in memory) and installs a prompt; runs
        in the worker thread, so bank changes never overlap."""
        from prompt_jax.prompts.files import load_prompt

        if (body.file is None) == (body.prompt is None):
            raise ValueError("give either 'prompt' (a prompt's bytes, base64) or 'file' (the "
                             "name of a prompt file in the bank folder)")
        if folder is None and body.file is not None:
            raise NoFolder
        if body.file is not None:
            if body.sidecar is not None:
                raise ValueError("'sidecar' goes with 'prompt'; a file's sidecar is beside it")
            path = store.resolve(folder, body.file)
            name = body.name or path.stem
            loaded = load_prompt(path)
            prepared = bank.prepare_loaded(loaded, name=name, task=body.task, source=str(path))
            # Already served from its own file as it is: nothing to write.
            in_place = path.name == f"{name}.npy" and body.task in ("", loaded.metadata.get("task"))
        else:
            if not body.name:
                raise ValueError("an uploaded prompt needs a 'name'")
            name = store.check_name(body.name)
            try:
                data = base64.b64decode(body.prompt, validate=True)
            except binascii.Error as e:
                raise ValueError(f"'prompt' is not base64: {e}") from None
            loaded = store.read_upload(data)
            loaded = dataclasses.replace(loaded, metadata={**loaded.metadata,
                                                           **(body.sidecar or {})})
            prepared = bank.prepare_loaded(loaded, name=name, task=body.task)
            in_place = False
        saved = prepared.source if in_place else None
        if folder is not None and not in_place:
            saved = str(store.write(folder, store.check_name(name), prepared.prompt,
                                    prepared.sidecar()))
            prepared = dataclasses.replace(prepared, source=saved)
        entry, compiled = classifier.add_prompt(lambda: bank.install(prepared))
        return entry.describe(), compiled, None if saved is None else Path(saved).name

    @app.post("/prompts", response_model=api.Added, responses=api.errors(403, 404, 409, 422))
    async def add_prompt(body: api.AddPromptRequest):
        try:
            added, compiled, saved = await batcher.in_worker(add, body)
        except store.OutsideBank as e:
            raise HTTPException(status_code=403, detail=str(e)) from None
        except NoFolder:
            raise HTTPException(status_code=409, detail="the bank was not read from a folder, "
                                "so no file can be named; send the prompt's bytes") from None
        except FileNotFoundError as e:
            raise HTTPException(status_code=404, detail=public(str(e))) from None
        except KeyError as e:
            raise HTTPException(status_code=404, detail=public(e.args[0])) from None
        except ValueError as e:
            raise HTTPException(status_code=422, detail=public(str(e))) from None
        return {"added": added, "compilations": compiled, "file": saved}

    def remove(name: str) -> str | None:
        entry = bank.get(name)
        moved = folder is not None and store.remove(folder, entry.source)
        bank.remove(name)
        return f"{store.REMOVED}/{Path(entry.source).name}" if moved else None

    @app.delete("/prompts/{name}", response_model=api.Removed, responses=api.errors(404))
    async def remove_prompt(name: str):
        try:
            moved = await batcher.in_worker(remove, name)
        except KeyError as e:
            raise HTTPException(status_code=404, detail=e.args[0]) from None
        return {"removed": name, "file": moved}

    @app.get("/health", response_model=api.Health)
    async def health():
        return {"status": "ok", "warm": classifier.warm, "prompts": len(bank),
                "queue_depth": batcher.depth}

    @app.get("/metrics", response_model=api.Metrics)
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
            **guard.describe(config.limits, refusals, config.api_key),
        }

    return app


def serve(classifier: MixedClassifier, config: ServerConfig = ServerConfig(), *,
          host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          sockets: list[Any] | None = None, insecure: bool = False) -> None:
    """Warms the classifier up (unless it is) and serves it with uvicorn until stopped.

    Raises:
      ValueError: `host` is not loopback and there is no API key, unless `insecure`
        (`guard.check_bind`).
    """
    import uvicorn

    guard.check_bind(host, config.api_key, insecure)
    if not classifier.warm:
        classifier.warm_up()
    server = uvicorn.Server(uvicorn.Config(create_app(classifier, config), host=host, port=port,
                                           log_level=log_level))
    server.run(sockets=sockets)
