"""Prompt tuning a real model on SST-2: prompt_jax vs Hugging Face PEFT, side by side.

Both sides get the same frozen model (the SmolLM2-135M-Instruct GGUF, or with `--model
gemma3-270m` the Gemma 3 270M one: ours through our loader, PEFT's through transformers' GGUF
loader), the same batches (prompt_jax's SST-2 task, causal
template "Review: {sentence}\\nSentiment:"), the same initial prompt (the embeddings of one
text), the same optimizer (AdamW), batch size and step count, and the same evaluation (rank
classification between " negative" and " positive" on the validation split). Each side runs in
its own subprocess so that its peak memory (max RSS) is its own. prompt_jax runs as the library
does by default: the prompt's keys and values computed once per batch, and the batch's examples
packed into one row (`prompt_jax.training.packing`; `--no-pack` turns that off).

    python benchmarks/peft_vs_prompt_jax.py --steps 320 --seeds 0        # constant rate
    python benchmarks/peft_vs_prompt_jax.py --steps 320 --seeds 0 3 --schedule cosine
    python benchmarks/peft_vs_prompt_jax.py --steps 320 --seeds 0 --perturb 0 1e-6 2e-6 3e-6
    python benchmarks/peft_vs_prompt_jax.py --steps 20 --eval-limit 64   # a quick look
    python benchmarks/peft_vs_prompt_jax.py --model gemma3-270m --steps 320 --seeds 0 \
        --schedule cosine

Why the two sides' accuracies differ by a point or two at a constant rate although their steps
are the same: `tests/test_peft_recipe.py` checks on a tiny Llama that prompt_jax's step (packed
or not, either rate) reproduces PEFT's losses and prompt, and the first step's loss is equal on
the real model (the table's step-1 column); but float32 rounding differs between the two
programs and grows over training, so each run's end point is a draw, and a constant learning
rate lets it vary by a few points (a cosine decay to 0 lets each run settle). The tables of
docs/results.md list the stored runs; their mean per-step training-loss differences (ours -
PEFT, paired by batch, with standard errors) are computed from the stored losses by
`results.py report`.
prompt_jax is faster because it computes the prompt's keys and values once per batch instead of
once per row, packs the batch's examples into one row instead of computing their padding
(`prompt_jax/training/packing.py`), and computes the head at the one position the loss
reads; PEFT here is run as users write it (`labels=`, exact padding; the one PEFT setup of
every benchmark, `peft_side.py`); `benchmarks/step_bench.py` and `whole_run.py` also run it at
its best (the head at the last positions only, torch.compile, bf16 autocast).

`--perturb` draws more end points of one recipe: each EPS runs both sides again with the initial
prompt scaled by 1 + EPS, a nudge the size of float32 rounding, which float32 training grows
until the run ends elsewhere (docs/results.md's PEFT section), so that the two sides are compared
over several draws instead of one.

Prints a markdown table (accuracy, the first step's and the last quarter's training loss,
training examples/s from the median step time with the first step excluded, training time, peak
RSS, and ours/PEFT ratios) and writes the numbers to
`benchmarks/results/peft_vs_prompt_jax.json` (`_cosine.json` for the cosine rate, `_draws.json`
for a run with `--perturb`, `_gemma3-270m` before those for that model), from which
`results.py report` puts the tables in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from prompt_jax.provenance import write_result

sys.path.insert(0, str(Path(__file__).resolve().parent))  # peft_side, run as a script or not
RESULTS = Path(__file__).resolve().parent / "results"
SCHEDULES = ("constant", "cosine")  # the rates both sides can take (train.make_schedule's)
INIT_TEXT = "Classify if the sentiment of each movie review is positive or negative."
MODELS = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct", "gemma3-270m": "Gemma 3 270M"}
DEFAULT_MODEL = "smollm2-135m-instruct"


def output_path(schedule: str, draws: bool = False, model: str = DEFAULT_MODEL) -> Path:
    """Where a schedule's results go by default (and where `results.py report` reads them);
    `draws` for a run with `--perturb`."""
    suffix = ("" if model == DEFAULT_MODEL else f"_{model}") + (
        "" if schedule == "constant" else f"_{schedule}") + ("_draws" if draws else "")
    return RESULTS / f"peft_vs_prompt_jax{suffix}.json"


def eps_text(eps: float) -> str:
    """A `--perturb` value as the command line would take it: 1e-6, not 1e-06."""
    return f"{eps:g}".replace("e-0", "e-")


def learning_rates(schedule: str, lr: float, steps: int) -> list[float]:
    """The rate of each of the `steps` updates, in plain Python for the PEFT side:
    `train.make_schedule`'s (optax) constant rate, or its cosine from 0 (one warm-up update)
    up to `lr` and down towards 0 (reached one update after the last)."""
    if schedule == "constant":
        return [lr] * steps
    decay = max(steps, 2) - 1
    return [0.0] + [lr * 0.5 * (1 + math.cos(math.pi * min(t - 1, decay) / decay))
                    for t in range(1, steps)]


def _data(args, tok):
    from prompt_jax import tasks

    task = tasks.get_task("sst2")
    train = tasks.batches(task, "train", tok, "causal", args.batch_size, max_length=args.max_length,
                          seed=args.seed, shuffle=True, repeat=True)
    evals = list(tasks.batches(task, "validation", tok, "causal", args.eval_batch_size,
                               max_length=args.max_length, shuffle=False,
                               limit=args.eval_limit or None))
    cands = tasks.candidates(task, tok, "causal")
    init_ids = tok(INIT_TEXT, add_special_tokens=False)["input_ids"]
    return train, evals, cands, init_ids


def run_ours(args) -> dict:
    """prompt_jax as a user runs it: the engine's loaded model and task, the library's step."""
    from prompt_jax import engine, prompts
    from prompt_jax.training import train

    loaded = engine.load_model(args.model, mesh_data=1)
    # The library's default (RunConfig.pack): same examples, less padding.
    task = loaded.task("sst2", max_input_length=args.max_length, pack=not args.no_pack)
    packer = task.packer(args.prompt_length)
    batches = task.batches("train", args.batch_size, seed=args.seed, shuffle=True, repeat=True,
                           packer=packer)
    evaluate = loaded.evaluator(task, "validation", batch_size=args.eval_batch_size,
                                limit=args.eval_limit, prompt_length=args.prompt_length)
    opt = train.make_optimizer(train.OptimizerConfig(
        name="adamw", learning_rate=args.lr, weight_decay=args.weight_decay,
        schedule=args.schedule, total_steps=args.steps))
    step = train.jit_train_step(
        train.make_train_step(loaded.model, opt, placement=task.placement), loaded.model,
        loaded.mesh)
    prompt = prompts.initial_prompt(loaded, task, "text", args.prompt_length, init_text=INIT_TEXT)
    state = train.place_state(train.init_state(prompt * (1 + args.scale), opt), loaded.mesh)
    times, losses = [], []
    for _ in range(args.steps):
        batch = next(batches)
        t0 = time.perf_counter()
        state, metrics = step(state, loaded.params, batch)
        losses.append(float(metrics["loss"]))
        times.append(time.perf_counter() - t0)
    metrics = evaluate(train.PROMPT.prompt(state.trainable))
    return {"accuracy": metrics["accuracy"], "examples": metrics["examples"],
            "step_seconds": times, "losses": losses}


def run_peft(args) -> dict:
    """PEFT as users write it (`peft_side`: `labels=`, exact padding, the logits of every
    position), on the GPU when there is one."""
    import numpy as np
    import peft_side
    import torch
    import transformers

    from prompt_jax.models import fetch, load_tokenizer

    torch.manual_seed(args.seed)
    gguf = fetch(args.model)
    tok = load_tokenizer(gguf)
    base = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    batches, evals, cands, init_ids = _data(args, tok)
    ids = np.resize(np.asarray(init_ids), args.prompt_length)  # the same text init as ours
    with torch.no_grad():  # PEFT's own text init: the embedding module (Gemma's scales)
        prompt = base.get_input_embeddings()(torch.tensor(ids)) * (1 + args.scale)
    speedups = peft_side.Speedups(device=peft_side.Speedups.detect().device)
    model, weight = peft_side.wrap(base, "causal", args.prompt_length, prompt, best=False,
                                   speedups=speedups)
    one = peft_side.trainer(model, base, weight, "causal", args.prompt_length, best=False,
                            lr=args.lr, weight_decay=args.weight_decay, speedups=speedups)
    times, losses = [], []
    for lr in learning_rates(args.schedule, args.lr, args.steps):
        b = next(batches)
        t0 = time.perf_counter()
        losses.append(float(one(b, lr)))
        times.append(time.perf_counter() - t0)
    correct = total = 0
    for pred, b in peft_side.rank_predictions(model, evals, cands[0][:, 0], args.prompt_length,
                                              best=False):
        real = b["weight"] > 0
        correct += int((pred == b["label"])[real].sum())
        total += int(real.sum())
    return {"accuracy": correct / total, "examples": total, "step_seconds": times,
            "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-2)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--schedule", choices=SCHEDULES, default="constant",
                        help="the rate on both sides: constant, or decayed to 0 on a cosine")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--eval-limit", type=int, default=0, help="0 = all 872")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="data-order seeds; each runs both sides")
    parser.add_argument("--perturb", type=float, nargs="+", default=[0.0], metavar="EPS",
                        help="initial-prompt nudges, each a draw of both sides per seed: the "
                        "prompt scaled by 1 + EPS on both (default 0, the plain text init)")
    parser.add_argument("--no-pack", action="store_true",
                        help="prompt_jax without packing (one example per row, as PEFT)")
    parser.add_argument("--output", help="where the JSON of the results goes ('' = nowhere; "
                        "default benchmarks/results/peft_vs_prompt_jax[_cosine][_draws].json)")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["ours", "peft"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        result = (run_ours if args.only == "ours" else run_peft)(args)
        result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return
    draws = any(args.perturb)
    output = (output_path(args.schedule, draws, args.model) if args.output is None
              else args.output)
    per_run, done = [], []
    for seed, eps in [(seed, eps) for seed in args.seeds for eps in args.perturb]:
        rows = {}
        for side in ("ours", "peft"):
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--seed", str(seed),
                                  "--scale", repr(eps), "--only", side],
                                 capture_output=True, text=True)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if out.returncode != 0 or line is None:
                sys.exit(f"{side} (seed {seed}, perturb {eps}) failed:\n{out.stderr[-3000:]}")
            rows[side] = json.loads(line[len("RESULT "):])
            median = statistics.median(rows[side]["step_seconds"][1:]
                                       or rows[side]["step_seconds"])
            rows[side]["examples_per_second"] = args.batch_size / median
        per_run.append(rows)
        done.append((seed, eps))
        result = _result(args, done, per_run)
        if output:  # after every run, so that a long run interrupted keeps what it did
            write_result(output, result, indent=1)
        print("\n" + table(result), flush=True)


def _result(args, done: list[tuple[int, float]], per_run: list[dict]) -> dict:
    return {"recipe": {k: getattr(args, k) for k in (
        "model", "steps", "batch_size", "prompt_length", "lr", "schedule", "weight_decay",
        "max_length", "eval_limit", "no_pack")}, "seeds": [seed for seed, _ in done],
        "perturbs": [eps for _, eps in done],
        "runs": [{side: {k: v for k, v in r[side].items() if k != "step_seconds"}
                  | {"train_seconds": sum(r[side]["step_seconds"])} for side in r}
                 for r in per_run]}


def _loss(run: dict, which: str) -> str:
    """The first step's training loss (the same batch and prompt on both sides, so equal up to
    float32 rounding), or the mean over the last quarter of the steps; '-' for results measured
    before losses were recorded."""
    losses = run.get("losses")
    if not losses:
        return "-"
    return f"{losses[0] if which == 'first' else statistics.mean(losses[-len(losses) // 4:]):.4f}"


def table(result: dict) -> str:
    """The side-by-side comparison as markdown: one row per side and seed, the ratios, and the
    means over seeds."""
    recipe, runs = result["recipe"], result["runs"]
    packed = "unpacked" if recipe.get("no_pack") else "packed"
    rate = ("decayed to 0 on a cosine" if recipe.get("schedule") == "cosine" else "constant")
    model = MODELS[recipe.get("model", DEFAULT_MODEL)]
    lines = [f"SST-2, {model}, {recipe['prompt_length']} prompt tokens (text "
             f"init), AdamW lr {recipe['lr']} ({rate}), batch {recipe['batch_size']}, "
             f"{recipe['steps']} steps, {runs[0]['ours']['examples']} validation examples; "
             f"prompt_jax {packed}", "",
             "| seed | | accuracy | step-1 loss | train loss, last quarter | train examples/s "
             "| train time | peak RSS |",
             "|---|---|---|---|---|---|---|---|"]
    perturbs = result.get("perturbs", [0.0] * len(runs))
    labels = [f"{seed}" + (f", x(1+{eps_text(eps)})" if eps else "")
              for seed, eps in zip(result["seeds"], perturbs, strict=True)]
    for label, rows in zip(labels, runs, strict=True):
        for side, name in (("ours", "prompt_jax"), ("peft", "HF PEFT")):
            r = rows[side]
            lines.append(f"| {label} | {name} | {r['accuracy']:.1%} | {_loss(r, 'first')} | "
                         f"{_loss(r, 'late')} | {r['examples_per_second']:.2f} | "
                         f"{r['train_seconds'] / 60:.1f} min | "
                         f"{r['max_rss_mb'] / 1024:.2f} GB |")
        ours, peft = rows["ours"], rows["peft"]
        lines.append(f"| {label} | prompt_jax / PEFT | "
                     f"{100 * (ours['accuracy'] - peft['accuracy']):+.1f} points | | | "
                     f"{ours['examples_per_second'] / peft['examples_per_second']:.2f}x | | "
                     f"{ours['max_rss_mb'] / peft['max_rss_mb']:.2f}x |")
    if len(runs) > 1:
        mean = {side: statistics.mean(r[side]["accuracy"] for r in runs)
                for side in ("ours", "peft")}
        diffs = [100 * (r["ours"]["accuracy"] - r["peft"]["accuracy"]) for r in runs]
        se = statistics.stdev(diffs) / math.sqrt(len(diffs))
        speed = statistics.median(r["ours"]["examples_per_second"]
                                  / r["peft"]["examples_per_second"] for r in runs)
        memory = statistics.median(r["ours"]["max_rss_mb"] / r["peft"]["max_rss_mb"]
                                   for r in runs)
        lines.append(f"| mean of {len(runs)} | prompt_jax {mean['ours']:.1%}, PEFT "
                     f"{mean['peft']:.1%} | "
                     f"{statistics.mean(diffs):+.1f} +- {se:.1f} points (SE, paired) | | | "
                     f"{speed:.2f}x (median) | | {memory:.2f}x (median) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
