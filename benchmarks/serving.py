"""Serving a bank of prompts: what a mixed-task batch costs, and latency under load.

A bank of random prompts for `--tasks` tasks (saved with their sidecars and read back as
`prompt-jax serve` reads them) on one model, then:

  throughput  rows/s of one batch mixing every task, of a single-task batch of the same size,
              and of serving each task in its own smaller batch one after another (the same
              rows); the median of `--repeats` timed forwards after warm-up
  latency     p50/p99 of requests sent open-loop (Poisson arrivals) at each of `--rates`
              requests/s for `--seconds` to the real HTTP server (dynamic batching), with the
              mean batch size and the compilations after warm-up (should be 0)

    python benchmarks/serving.py                                   # SmolLM2-135M, 16 tasks
    python benchmarks/serving.py --model path/to/tiny --seconds 1 --rates 5,20   # a quick look

Writes `benchmarks/results/serving_<model>.json` and prints a markdown table;
`--report` prints the stored one instead of measuring, `--docs` also puts it into
docs/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from prompt_jax.provenance import write_result

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = ("the film was a witty gorgeous mess of boring long scenes and great acting but "
         "the plot felt thin").split()


def _texts(n: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


def build(args):
    """The loaded model, a classifier over a bank of `args.tasks` random prompts, the tasks."""
    import jax
    import numpy as np

    from prompt_jax import engine, prompts, tasks
    from prompt_jax.prompts.files import save_prompt
    from prompt_jax.serving.bank import PromptBank
    from prompt_jax.serving.classifier import Buckets, MixedClassifier

    loaded = engine.load_model(args.model, mesh_data=args.mesh_data)
    names = [n for n in tasks.list_tasks() if not tasks.get_task(n).is_generation][:args.tasks]
    if len(names) < args.tasks:
        raise SystemExit(f"only {len(names)} classification tasks are registered")
    folder = Path(tempfile.mkdtemp(prefix="serving-bank-"))
    for i, name in enumerate(names):
        prompt = prompts.random_uniform(jax.random.key(i), args.prompt_length,
                                        loaded.model.d_model)
        save_prompt(np.asarray(prompt), folder / f"{name}.npy", format="prompt_jax",
                    metadata={"backbone": loaded.model.family, "model": args.model,
                              "task": name, "placement": loaded.model.default_placement})
    bank = PromptBank(loaded, slots=args.tasks, prompt_length=args.prompt_length,
                      max_input_length=args.length)
    bank.load_dir(folder)
    small = max(args.batch // args.tasks, loaded.mesh.shape["data"])
    buckets = Buckets(tuple(sorted({small, args.batch})), (args.length,))
    return loaded, MixedClassifier(bank, buckets), names


def _request(classifier, name: str, text: str) -> dict:
    """A request body; a pair task gets the text twice (text and text_b)."""
    pair = classifier.bank.get(name).task.spec.pair
    return {"task": name, "text": text, **({"text_b": text} if pair else {})}


def throughput(classifier, names, args) -> dict:
    """Rows/s of a mixed batch, a single-task batch and per-task batches in turn."""
    texts = _texts(args.batch, args.words)
    def encode(name, text):
        body = _request(classifier, name, text)
        return classifier.encode(name, text, body.get("text_b"))

    mixed = [encode(names[i % len(names)], t) for i, t in enumerate(texts)]
    single = [encode(names[0], t) for t in texts]
    per_task = [[r for r in mixed if r.entry.name == n] for n in names]

    def timed(fn) -> float:
        fn()  # warm (compiles nothing after warm_up; first-call overheads)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    # The same rows scored in one mixed batch and task by task: how far apart the scores are.
    together = dict(zip(map(id, mixed), classifier.run(mixed), strict=True))
    alone = {id(r): p for rows in per_task for r, p in zip(rows, classifier.run(rows), strict=True)}
    difference = max(abs(together[k].scores[label] - alone[k].scores[label])
                     for k in together for label in together[k].scores)
    seconds = {
        "mixed": timed(lambda: classifier.run(mixed)),
        "single_task": timed(lambda: classifier.run(single)),
        "per_task_batches": timed(lambda: [classifier.run(rows) for rows in per_task]),
    }
    return {**{k: {"seconds": s, "rows_per_second": args.batch / s} for k, s in seconds.items()},
            "max_score_difference": difference}


async def _load(url: str, bodies: list[dict], rate: float, seconds: float, seed: int) -> dict:
    import httpx

    rng = random.Random(seed)
    latencies, codes = [], []

    async def one(client, body):
        start = time.perf_counter()
        r = await client.post("/classify", json=body)
        codes.append(r.status_code)
        if r.status_code == 200:
            latencies.append((time.perf_counter() - start) * 1000)

    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        pending = []
        start = time.perf_counter()
        at = 0.0
        while at < seconds:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(client, rng.choice(bodies))))
            at += rng.expovariate(rate)
        await asyncio.gather(*pending)
        wall = time.perf_counter() - start
    lat = sorted(latencies)

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

    return {"rate": rate, "sent": len(codes), "ok": codes.count(200),
            "rejected": codes.count(503), "answered_per_second": codes.count(200) / wall,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def latency(classifier, names, args) -> list[dict]:
    """p50/p99 at each request rate against the real server, in a thread."""
    import httpx
    import uvicorn

    from prompt_jax.serving.server import ServerConfig, create_app

    config = ServerConfig(max_batch=args.batch, max_wait_ms=args.max_wait_ms,
                          queue_limit=args.queue_limit)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(classifier, config), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    bodies = [_request(classifier, names[i % len(names)], t)
              for i, t in enumerate(_texts(256, args.words, seed=1))]
    rows = []
    try:
        for i, rate in enumerate(args.rates):
            before = httpx.get(f"{url}/metrics").json()
            row = asyncio.run(_load(url, bodies, rate, args.seconds, i))
            after = httpx.get(f"{url}/metrics").json()
            sizes = {int(k): v - before["batch_sizes"].get(k, 0)
                     for k, v in after["batch_sizes"].items()}
            batches = sum(sizes.values())
            row["mean_batch_size"] = (sum(k * v for k, v in sizes.items()) / batches
                                      if batches else None)
            row["compilations_after_warm_up"] = after["compilations"]["after_warm_up"]
            rows.append(row)
    finally:
        server.should_exit = True
        thread.join(10)
    return rows


def table(result: dict) -> str:
    """The markdown of a stored result."""
    from machine import line

    t = result["throughput"]
    lines = [f"`{result['command']}` on {result['model']}: {result['tasks']} tasks, batch "
             f"{result['batch']}, prompts of {result['prompt_length']} vectors, inputs of "
             f"{result['words']} words (length bucket {result['length']}); "
             f"{line(result['machine'])}.", "",
             "| batch | seconds | rows/s |", "|---|---|---|"]
    for name, label in (("mixed", f"one batch mixing {result['tasks']} tasks"),
                        ("single_task", "one single-task batch"),
                        ("per_task_batches", "each task in its own batch, in turn")):
        lines.append(f"| {label} | {t[name]['seconds']:.4f} | {t[name]['rows_per_second']:.1f} |")
    ratio = t["mixed"]["rows_per_second"] / t["single_task"]["rows_per_second"]
    per_task = t["per_task_batches"]["rows_per_second"] / t["single_task"]["rows_per_second"]
    lines += ["", f"Mixed over single-task rows/s: {ratio:.2f}x; each task in its own batch over "
              f"single-task rows/s: {per_task:.2f}x ({1 - per_task:.0%} "
              f"{'lower' if per_task < 1 else 'higher'} throughput than one full batch"
              f"{'' if per_task < 1 else ', i.e. none lost'}); "
              f"largest difference of a label's log-likelihood between the mixed batch and the "
              f"same rows scored task by task: {t['max_score_difference']:.1e}."]
    lines += ["", "| rate (req/s) | sent | ok | 503 | answered/s | p50 ms | p99 ms | mean batch | "
              "compilations |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["latency"]:
        def f(x):
            return "-" if x is None else f"{x:.1f}"
        lines.append(f"| {r['rate']:g} | {r['sent']} | {r['ok']} | {r['rejected']} | "
                     f"{r['answered_per_second']:.1f} | {f(r['p50_ms'])} | {f(r['p99_ms'])} | "
                     f"{f(r['mean_batch_size'])} | {r['compilations_after_warm_up']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="REAL_MODELS name, HF directory or GGUF file")
    p.add_argument("--tasks", type=int, default=16)
    p.add_argument("--batch", type=int, default=32, help="rows per batch (and max batch)")
    p.add_argument("--prompt_length", type=int, default=20)
    p.add_argument("--words", type=int, default=12, help="words per input text")
    p.add_argument("--length", type=int, default=64, help="the input length bucket")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                   default=[2.0, 5.0, 10.0, 20.0, 50.0],
                   help="request rates (req/s), comma-separated")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per rate")
    p.add_argument("--max_wait_ms", type=float, default=5.0)
    p.add_argument("--queue_limit", type=int, default=1024)
    p.add_argument("--mesh_data", type=int, default=1)
    p.add_argument("--out", help="JSON results (default benchmarks/results/serving_<model>.json)")
    p.add_argument("--report", action="store_true",
                   help="print the stored result's table instead of measuring")
    p.add_argument("--docs", "--readme", dest="readme", action="store_true",
                   help="also write the table into docs/results.md (its serving block)")
    args = p.parse_args()
    out = Path(args.out) if args.out else RESULTS / f"serving_{Path(args.model).name}.json"
    if args.report:
        if not out.exists():
            sys.exit(f"no stored result {out}: run without --report first")
        result = json.loads(out.read_text())
    else:
        result = measure(args, out)
    print(table(result))
    if args.readme:
        from readme_block import write_block

        write_block("serving", table(result))


def measure(args, out: Path) -> dict:
    """Runs the benchmark and stores its result in `out`."""
    from machine import describe

    started = time.perf_counter()
    loaded, classifier, names = build(args)
    warm = classifier.warm_up()
    result = {"command": " ".join(["python", "benchmarks/serving.py", *sys.argv[1:]]),
              "machine": describe(), "model": args.model, "tasks": len(names), "batch": args.batch,
              "prompt_length": args.prompt_length, "words": args.words, "length": args.length,
              "warm_up_compilations": warm,
              "throughput": throughput(classifier, names, args),
              "latency": latency(classifier, names, args)}
    result["compilations_after_warm_up"] = classifier.compilations_since_warm_up
    result["wall_seconds"] = time.perf_counter() - started
    write_result(out, result)
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
