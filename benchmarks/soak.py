"""A soak run of `prompt-jax serve`: minutes of bounded mixed load against the real server on
127.0.0.1, to see that nothing grows without bound (a stability test, not a speed one).

The server runs as its own process (`python -m prompt_jax serve`, with an API key) over a bank
of `--tasks` random prompts; `--clients` threads, each waiting 0.1-0.5 s between requests
(closed loop: the load is bounded), send:

  78%  classify: batches of 1-8 rows mixing the bank's tasks (some texts over the token limit,
       some over --max_text_chars, cut before tokenization)
   7%  add: a random prompt uploaded as .npy bytes under one of 4 extra names
   5%  remove: one of those names (404 when it is not there)
  10%  bad input, each refused: an unknown task (404), an empty text (422), too many rows
       (413), malformed JSON (422), a missing key (401), a body over the limit (413)

Every minute: the server's RSS, classify latency p50/p95/p99 (client side), requests and
refusals by kind, answers off what each kind expects ("unexpected": a 500, a dropped
connection, a wrong code), and the server's compilations after warm-up and bank size.

    python benchmarks/soak.py                      # 10 minutes, SmolLM2-135M if cached
    python benchmarks/soak.py --minutes 1 --tiny   # a quick look on a random tiny Llama
    python benchmarks/soak.py --report --docs      # the stored table into docs/serving.md

Writes `benchmarks/results/soak_<model>.json` (through `provenance.write_result`).
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from prompt_jax import provenance

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DEFAULT_MODEL = "smollm2-135m-instruct"
EXTRA_NAMES = tuple(f"soak_{i}" for i in range(4))
WORDS = ("the film was a witty gorgeous mess of boring long scenes and great acting but the "
         "plot felt thin who wrote hamlet where is the river").split()
BAD = {"unknown task": 404, "empty text": 422, "too many rows": 413, "malformed JSON": 422,
       "missing key": 401, "body over the limit": 413}
EXPECTED = {"classify": {200}, "add": {200}, "remove": {200, 404}, **{k: {v} for k, v in
                                                                         BAD.items()}}


def cached(name: str) -> bool:
    """Whether a REAL_MODELS model is already in the model cache (no download)."""
    from prompt_jax.models.fetch import REAL_MODELS, cache_dir

    spec = REAL_MODELS.get(name)
    return spec is not None and (cache_dir() / f"{name}-{spec.version}" / ".complete").exists()


def tiny_model(folder: Path) -> str:
    """A random 2-layer Llama of width 32 with the tests' tiny tokenizer (needs torch)."""
    import torch
    import transformers

    from prompt_jax.models import load_tokenizer

    tokenizer = load_tokenizer(ROOT / "tests" / "data" / "tiny-bpe")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def make_bank(folder: Path, model: str, n_tasks: int, seed: int = 0) -> dict:
    """`n_tasks` random prompts (<name>.npy + sidecar) for `model`; returns what an upload's
    sidecar needs and the tasks (name -> pair)."""
    from prompt_jax import tasks
    from prompt_jax.models import load_pretrained, resolve_model
    from prompt_jax.prompts.files import save_prompt

    backbone = load_pretrained(resolve_model(model)).model  # only its shape is kept
    info = {"model": model, "backbone": backbone.family, "d_model": backbone.d_model,
            "placement": backbone.default_placement}
    names = [n for n in tasks.list_tasks() if not tasks.get_task(n).is_generation][:n_tasks]
    rng = np.random.default_rng(seed)
    for name in names:
        prompt = rng.uniform(-0.5, 0.5, (20, info["d_model"])).astype(np.float32)
        save_prompt(prompt, folder / f"{name}.npy", format="prompt_jax",
                    metadata={"backbone": info["backbone"], "model": model, "task": name,
                              "placement": info["placement"]})
    return {**info, "tasks": {n: bool(tasks.get_task(n).pair) for n in names}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Minutes:
    """Per-minute counters, shared by the client threads."""

    def __init__(self, start: float):
        self.start = start
        self.lock = threading.Lock()
        self.rows: dict[int, dict] = collections.defaultdict(lambda: {
            "sent": collections.Counter(), "codes": collections.Counter(),
            "latency_ms": [], "unexpected": 0, "examples": [], "rss_mb": []})

    def minute(self) -> int:
        return int((time.monotonic() - self.start) // 60)

    def record(self, kind: str, code: int | str, ms: float) -> None:
        with self.lock:
            row = self.rows[self.minute()]
            row["sent"][kind] += 1
            row["codes"][f"{kind} {code}"] += 1
            if kind == "classify" and code == 200:
                row["latency_ms"].append(ms)
            if code not in EXPECTED[kind]:
                row["unexpected"] += 1
                if len(row["examples"]) < 5:
                    row["examples"].append(f"{kind}: {code}")


class Client(threading.Thread):
    """One closed-loop client: a request, a pause of 0.1-0.5 s, the next."""

    def __init__(self, index: int, url: str, key: str, bank: dict, minutes: Minutes,
                 stop: threading.Event, limits: dict):
        super().__init__(daemon=True)
        self.rng = random.Random(index)
        self.url, self.key, self.bank, self.minutes, self.stop = url, key, bank, minutes, stop
        self.limits = limits

    def text(self) -> str:
        roll = self.rng.random()
        n = (self.rng.randint(3, 40) if roll < 0.85 else self.rng.randint(150, 300)
             if roll < 0.95 else self.limits["max_text_chars"] // 3)  # the last: cut
        return " ".join(self.rng.choice(WORDS) for _ in range(n))

    def row(self, task: str | None = None) -> dict:
        task = task or self.rng.choice(list(self.bank["tasks"]))
        row = {"task": task, "text": self.text()}
        if self.bank["tasks"].get(task):
            row["text_b"] = self.text()
        return row

    def upload(self) -> dict:
        buffer = io.BytesIO()
        length = self.rng.randint(4, 20)
        np.save(buffer, np.random.default_rng(self.rng.randrange(2**31)).uniform(
            -0.5, 0.5, (length, self.bank["d_model"])).astype(np.float32))
        return {"name": self.rng.choice(EXTRA_NAMES),
                "prompt": base64.b64encode(buffer.getvalue()).decode(),
                "sidecar": {"task": self.rng.choice(list(self.bank["tasks"])),
                            "model": self.bank["model"], "backbone": self.bank["backbone"],
                            "placement": self.bank["placement"]}}

    def kind(self) -> str:
        roll = self.rng.random()
        if roll < 0.78:
            return "classify"
        if roll < 0.85:
            return "add"
        if roll < 0.90:
            return "remove"
        return self.rng.choice(list(BAD))

    def send(self, client, kind: str):
        json_body = {"content-type": "application/json"}
        if kind == "classify":
            rows = [self.row() for _ in range(self.rng.randint(1, 8))]
            return client.post("/classify", json=rows if len(rows) > 1 else rows[0])
        if kind == "add":
            return client.post("/prompts", json=self.upload())
        if kind == "remove":
            return client.delete(f"/prompts/{self.rng.choice(EXTRA_NAMES)}")
        if kind == "unknown task":
            return client.post("/classify", json={"task": "no_such_task", "text": "hi"})
        if kind == "empty text":
            return client.post("/classify", json=self.row() | {"text": " "})
        if kind == "too many rows":
            return client.post("/classify", json=[self.row()] * (self.limits["max_rows"] + 1))
        if kind == "malformed JSON":
            return client.post("/classify", content=b'{"task": ', headers=json_body)
        if kind == "missing key":
            return client.post("/classify", json=self.row(), headers={"Authorization": ""})
        return client.post("/classify", content=b"x" * (self.limits["max_body_bytes"] + 1),
                           headers=json_body)

    def run(self):
        import httpx

        with httpx.Client(base_url=self.url, timeout=120,
                          headers={"Authorization": f"Bearer {self.key}"}) as client:
            while not self.stop.is_set():
                kind, started = self.kind(), time.perf_counter()
                try:
                    code: int | str = self.send(client, kind).status_code
                except httpx.HTTPError as e:
                    code = type(e).__name__
                self.minutes.record(kind, code, (time.perf_counter() - started) * 1000)
                self.stop.wait(self.rng.uniform(0.1, 0.5))


def measure(args) -> dict:
    """Starts the server, drives the load for `args.minutes`, stops it; returns the result."""
    import httpx

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    model = args.model or (DEFAULT_MODEL if cached(DEFAULT_MODEL) and not args.tiny else "")
    model = model or tiny_model(work / "tiny-llama")
    folder = work / "bank"
    folder.mkdir()
    bank = make_bank(folder, model, args.tasks)
    key, port = secrets.token_hex(16), _free_port()
    limits = {"max_text_chars": 2000, "max_rows": 32, "max_body_bytes": 2**20}
    cmd = [sys.executable, "-m", "prompt_jax", "serve", "--model", model, "--bank", str(folder),
           "--port", str(port), "--batch_buckets", "8,16", "--length_buckets", "64",
           "--max_input_length", "64", "--log_level", "warning",
           *(f"--{k}={v}" for k, v in limits.items())]
    log = open(work / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PROMPT_JAX_API_KEY": key},
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {key}"}
    loading = time.monotonic()
    while True:
        if server.poll() is not None:
            sys.exit(f"the server exited:\n{(work / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    print(f"server up after {time.monotonic() - loading:.0f} s (pid {server.pid}); "
          f"{args.minutes} minutes of load", file=sys.stderr)
    start = time.monotonic()
    minutes, stop = Minutes(start), threading.Event()
    clients = [Client(i, url, key, bank, minutes, stop, limits) for i in range(args.clients)]
    for c in clients:
        c.start()
    snapshots = []
    try:
        for m in range(args.minutes):
            while time.monotonic() < start + 60 * (m + 1):
                rss = _rss_mb(server.pid)
                with minutes.lock:
                    minutes.rows[m]["rss_mb"].append(rss)
                time.sleep(min(2.0, max(0.0, start + 60 * (m + 1) - time.monotonic())))
            metrics = httpx.get(f"{url}/metrics", headers=auth, timeout=60).json()
            snapshots.append({
                "compilations_after_warm_up": metrics["compilations"]["after_warm_up"],
                "bank_prompts": metrics["bank"]["prompts"], "queue_depth": metrics["queue_depth"],
                "refused": metrics["refused"], "errors_500": metrics["errors"],
                "removed_files": len(list((folder / "removed").glob("*.npy"))),
                "pending_files": len(list((folder / ".pending").glob("*"))),
                "load_1min": os.getloadavg()[0]})  # the machine's, other work included
            row = minutes.rows[m]
            print(f"minute {m + 1}: {sum(row['sent'].values())} requests, RSS "
                  f"{row['rss_mb'][-1]:.0f} MB, unexpected {row['unexpected']}",
                  file=sys.stderr)
    finally:
        stop.set()
        for c in clients:
            c.join(150)
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        log.close()
    return {"model": model if model in (args.model, DEFAULT_MODEL) else "tiny random Llama",
            "minutes": args.minutes, "clients": args.clients, "tasks": len(bank["tasks"]),
            "limits": limits, "server_start_seconds": start - loading,
            "per_minute": [_summary(minutes.rows[m], snapshots[m], m)
                           for m in range(args.minutes)]}


def _summary(row: dict, snapshot: dict, minute: int) -> dict:
    lat = np.asarray(row["latency_ms"]) if row["latency_ms"] else None
    p50, p95, p99 = (None,) * 3 if lat is None else (float(x) for x in
                                                        np.percentile(lat, [50, 95, 99]))
    rss = [r for r in row["rss_mb"] if r is not None]
    return {"minute": minute + 1, "requests": dict(row["sent"]), "codes": dict(row["codes"]),
            "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "unexpected": row["unexpected"],
            "unexpected_examples": row["examples"], "rss_mb": rss[-1] if rss else None,
            "rss_mb_max": max(rss) if rss else None, **snapshot}


def table(result: dict) -> str:
    """The markdown of a stored soak result."""
    rows = result["per_minute"]
    model = {DEFAULT_MODEL: "SmolLM2-135M-Instruct"}.get(result["model"], result["model"])
    limits = ", ".join(f"--{k} {v}" for k, v in result["limits"].items())
    cores = result["provenance"]["machine"]["cores"]
    lines = [f"`python {result['provenance']['command']}`: {result['minutes']} minutes, "
             f"{result['clients']} clients each pausing 0.1-0.5 s between requests, a bank of "
             f"{result['tasks']} tasks on {model}, {limits}; {provenance.line(result)}. Run "
             f"under `nice -n 5` on a machine shared with other work (machine load: its 1-minute "
             f"load average at each minute's end, on {cores} cores): a stability test, not a "
             f"speed one.", "",
             "| minute | requests | classify | adds | removes | bad input refused | unexpected "
             "| p50 / p95 / p99 ms | server RSS MB | compilations after warm-up | prompts | "
             "machine load |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def ms(x):
        return "-" if x is None else f"{x:.0f}"

    for r in rows:
        sent = r["requests"]
        bad = sum(n for k, n in sent.items() if k in BAD)
        lines.append(
            f"| {r['minute']} | {sum(sent.values())} | {sent.get('classify', 0)} | "
            f"{sent.get('add', 0)} | {sent.get('remove', 0)} | {bad} | {r['unexpected']} | "
            f"{ms(r['p50_ms'])} / {ms(r['p95_ms'])} / {ms(r['p99_ms'])} | "
            f"{r['rss_mb']:.0f} | {r['compilations_after_warm_up']} | {r['bank_prompts']} | "
            f"{r['load_1min']:.1f} |")
    first, last = rows[min(1, len(rows) - 1)], rows[-1]
    growth = last["rss_mb"] - first["rss_mb"]
    total = sum(sum(r["requests"].values()) for r in rows)
    lines += ["", f"{total:,} requests; {sum(r['unexpected'] for r in rows)} answered off what "
              f"their kind expects (a 500, a dropped connection, a wrong code); server RSS "
              f"{first['rss_mb']:.0f} MB after minute {first['minute']}, {last['rss_mb']:.0f} MB "
              f"after minute {last['minute']} ({growth:+.0f} MB, {growth / first['rss_mb']:+.1%}); "
              f"prompts in removed/ at the end: {last['removed_files']} (the last removed "
              f"version of each name, at most {len(EXTRA_NAMES)}); "
              f"writes left in .pending: {last['pending_files']}."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--model", default="", help="a model name or folder (default: SmolLM2-135M "
                                               "when cached, else a random tiny Llama)")
    p.add_argument("--tiny", action="store_true", help="the random tiny Llama (needs torch)")
    p.add_argument("--tasks", type=int, default=8, help="prompts in the bank")
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--out", help="result JSON (default benchmarks/results/soak_<model>.json)")
    p.add_argument("--report", action="store_true", help="print the stored result's table")
    p.add_argument("--docs", action="store_true", help="also write it into docs/serving.md")
    args = p.parse_args()
    name = Path(args.model).name if args.model else (
        "tiny" if args.tiny or not cached(DEFAULT_MODEL) else DEFAULT_MODEL)
    out = Path(args.out) if args.out else RESULTS / f"soak_{name}.json"
    if args.report:
        if not out.exists():
            sys.exit(f"no stored result {out}: run without --report first")
        result = json.loads(out.read_text())
    else:
        provenance.write_result(out, measure(args))
        result = json.loads(out.read_text())
        print(f"-> {out}", file=sys.stderr)
    print(table(result))
    if args.docs:
        sys.path.insert(0, str(HERE))
        from readme_block import write_block

        write_block("soak", table(result))


if __name__ == "__main__":
    main()
