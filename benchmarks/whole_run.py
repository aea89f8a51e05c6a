"""Whole runs and evaluation where users feel them: `prompt-jax train` from the command line
against PEFT, the loop against the bare step, and cold against warm compilation cache.

Sides, each its own process, on the same model, recipe (the demo's: 20 prompt vectors from a
text, AdamW 3e-2, batch 8, one evaluation at the end) and SST-2 rows:
  ours-cold, ours-warm  `prompt-jax train --gin_file runs/demo.gin`, the persistent compilation
                        cache empty, then filled by the cold run
  bare                  the library's cached step on the same batches made up front: what the
                        loop's steady state is held against (within 5%); then the loop in the
                        same process, with and without prefetch (`--bare-steps` steps each)
  peft-best, peft-compiled, peft-bf16, peft
                        PEFT at its best (eager; torch.compile; bf16 autocast where the CPU has
                        it; `peft_side.py`) and as users write it: load, data, training, the
                        same evaluation; "at its best" is the fastest whole run of the three
  eval-ours, eval-peft  rank classification of the validation rows, forward only, with one
                        prompt: the engine's evaluator (compiled, then warm) against Hugging
                        Face at its best (inference_mode, the head at the one position, batched,
                        exact padding; also bf16 autocast where the CPU has it) and as written

Each whole-run side is timed from its process's start (imports, loading, data, compiles,
training, evaluation) and says when the first step was done after the model was loaded.

    python benchmarks/whole_run.py --quick           # make bench: a small random Llama
    python benchmarks/whole_run.py --model smollm2-135m-instruct --label smollm2
    python benchmarks/whole_run.py --model gemma3-270m --label gemma3
    python benchmarks/whole_run.py --from-json benchmarks/results/whole_run_quick.json --docs

Writes `benchmarks/results/whole_run[_<label>].json`; `--docs` writes its block into
docs/benchmarks.md (`whole_run_<label>`), each goal of issue 40 marked met or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
CACHE = Path(os.environ.get("PROMPT_JAX_BENCH_CACHE", "/tmp/prompt_jax_bench"))
INIT_TEXT = "Classify if the sentiment of each movie review is positive or negative."
PROMPT_LENGTH, BATCH, LR, WEIGHT_DECAY, MAX_LENGTH = 20, 8, 3e-2, 0.01, 128
PEERS = ("peft-best", "peft-compiled", "peft-bf16", "peft")
SIDES = ("ours-cold", "ours-warm", "bare", *PEERS, "eval-ours", "eval-peft")


def quick_model() -> Path:
    """A small random Llama (4 layers, width 256) with the tests' tiny byte-level BPE (SmolLM2's
    special tokens; every label word one token), saved once."""
    directory = CACHE / "whole-run-tiny-llama"
    if not (directory / "config.json").exists():
        import torch
        import transformers

        from prompt_jax.models import load_tokenizer

        tokenizer = load_tokenizer(ROOT / "tests" / "data" / "tiny-bpe")
        torch.manual_seed(0)
        config = transformers.LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768,
            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)
        transformers.LlamaForCausalLM(config).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return directory


def model_path(args) -> Path:
    from prompt_jax.models import fetch

    return quick_model() if args.quick else Path(fetch(args.model))


# -- our sides -------------------------------------------------------------------------------

def run_cli(args, cache_dir: str, output_dir: str) -> dict:
    """`prompt-jax train` with the demo's recipe, timed from outside; its summary."""
    cmd = [sys.executable, "-m", "prompt_jax", "train", "--gin_file", "runs/demo.gin",
           "--model", str(model_path(args)), "--output_dir", output_dir, "--overwrite",
           "--steps", str(args.steps), "--eval_limit", str(args.eval_limit)]
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache_dir}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"prompt-jax train failed:\n{out.stderr[-4000:]}")
    summary = json.loads((Path(output_dir) / "summary.json").read_text())
    return {"process_seconds": wall, "train_seconds": summary["train_seconds"],
            "median_step_seconds": summary["median_step_seconds"],
            "loaded_to_first_step_seconds": summary["loaded_to_first_step_seconds"],
            "accuracy": summary["final"]["accuracy"], "examples": summary["final"]["examples"],
            "command": " ".join(["prompt-jax", *cmd[3:]])}


def _config(args):
    from prompt_jax.training import run, train

    return run.RunConfig(model=str(model_path(args)), task="sst2", prompt_length=PROMPT_LENGTH,
                         init="text", init_text=INIT_TEXT, batch_size=BATCH,
                         max_input_length=MAX_LENGTH, steps=args.steps,
                         eval_limit=args.eval_limit, mesh_data=1,
                         optimizer=train.OptimizerConfig(name="adamw", learning_rate=LR,
                                                         weight_decay=WEIGHT_DECAY))


def run_bare(args) -> dict:
    """The cached step of `prompt-jax train` on the loop's own batches made up front, then in
    the same process (the step compiled already) the loop itself, with and without its
    background prefetch: the loop's cost, measured beside the step it runs."""
    import dataclasses

    from prompt_jax.training import run, train

    config = dataclasses.replace(_config(args), steps=args.bare_steps)
    loaded, task = run.load(config)
    batches = run.train_batches(task, config, loaded.mesh)(0)
    data = [next(batches) for _ in range(config.steps)]
    batches.close()  # the pipeline stopped: nothing runs beside the timed steps
    step = loaded.train_step(task, config.optimizer)
    opt = train.make_optimizer(config.optimizer)
    state = train.place_state(train.init_state(run.initial_trainable(loaded, task, config), opt),
                              loaded.mesh)
    times = []
    for batch in data:
        t0 = time.perf_counter()
        state, metrics = step(state, loaded.params, batch)
        float(metrics["loss"])
        times.append(time.perf_counter() - t0)
    out = {"median_step_seconds": statistics.median(times[1:]), "first_step_seconds": times[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for prefetch in (2, 0):
            loop_config = dataclasses.replace(config, output_dir=f"{tmp}/{prefetch}",
                                              prefetch=prefetch, eval_limit=32)
            summary = run.train_prompt(loop_config, loaded=loaded)
            out[f"loop_prefetch{prefetch}_median_step_seconds"] = summary["median_step_seconds"]
    return out


def run_eval_ours(args) -> dict:
    """The engine's evaluator on the validation rows with the initial prompt: the first call
    (compiles) and the second (warm)."""
    from prompt_jax.training import run

    config = _config(args)
    loaded, task = run.load(config)
    prompt = run.initial_trainable(loaded, task, config)
    evaluate = run.evaluator(loaded, task, config)
    out = {}
    for key in ("first", "warm"):
        t0 = time.perf_counter()
        metrics = evaluate(prompt)
        out[f"{key}_seconds"] = time.perf_counter() - t0
    return {**out, "accuracy": metrics["accuracy"], "examples": metrics["examples"]}


# -- the peer --------------------------------------------------------------------------------

def _peer_model(args, speedups, best: bool):
    """The base model (Hugging Face), the PEFT model with our initial prompt, the tokenizer."""
    import peft_side
    import torch
    import transformers

    from prompt_jax.models import load_tokenizer

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    path = model_path(args)
    tok = load_tokenizer(path)
    if path.is_dir():
        base = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        base = transformers.AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32)
    ids = tok(INIT_TEXT, add_special_tokens=False)["input_ids"]
    ids = np.resize(np.asarray(ids), PROMPT_LENGTH)  # as the library's text init
    with torch.no_grad():
        prompt = base.get_input_embeddings()(torch.tensor(ids))
    model, weight = peft_side.wrap(base, "causal", PROMPT_LENGTH, prompt, best=best,
                                   speedups=speedups)
    return base, model, weight, tok


def _peer_data(args, tok):
    from prompt_jax import tasks

    task = tasks.get_task("sst2")
    train = tasks.batches(task, "train", tok, "causal", BATCH, max_length=MAX_LENGTH, seed=0,
                          shuffle=True, repeat=True)
    evals = tasks.batches(task, "validation", tok, "causal", 32, max_length=MAX_LENGTH,
                          shuffle=False, limit=args.eval_limit or None)
    return train, evals, tasks.candidates(task, tok, "causal")[0][:, 0]


def _accuracy(predictions) -> tuple[float, int]:
    correct = total = 0
    for pred, b in predictions:
        real = b["weight"] > 0
        correct += int((pred == b["label"])[real].sum())
        total += int(real.sum())
    return correct / total, total


def run_peer(args, side: str, start: float) -> dict:
    """A whole PEFT run: load, data, `args.steps` steps, the evaluation."""
    import peft_side
    from step_bench import PEER_VARIANTS, peer_speedups

    best, speedups = PEER_VARIANTS[side]["best"], peer_speedups(side)
    base, model, weight, tok = _peer_model(args, speedups, best)
    loaded_at = time.perf_counter()
    train, evals, candidates = _peer_data(args, tok)
    one = peft_side.trainer(model, base, weight, "causal", PROMPT_LENGTH, best=best, lr=LR,
                            weight_decay=WEIGHT_DECAY, speedups=speedups)
    times = []
    for _ in range(args.steps):
        batch = next(train)
        t0 = time.perf_counter()
        float(one(batch))
        times.append(time.perf_counter() - t0)
        if len(times) == 1:
            first = time.perf_counter() - loaded_at
    accuracy, examples = _accuracy(peft_side.rank_predictions(
        model, evals, candidates, PROMPT_LENGTH, best=best, speedups=speedups))
    return {"process_seconds": time.perf_counter() - start, "train_seconds": sum(times[1:]),
            "median_step_seconds": statistics.median(times[1:]),
            "loaded_to_first_step_seconds": first, "accuracy": accuracy,
            "examples": examples, "speedups": speedups.label()}


def run_eval_peer(args) -> dict:
    """Hugging Face's evaluation of the same rows with the same prompt: at its best (fp32,
    and bf16 autocast where the CPU has it) and as users write it, each timed twice."""
    import dataclasses

    import peft_side

    found = peft_side.Speedups.detect()
    variants = {"best": (True, dataclasses.replace(found, bf16_autocast=False)),
                "as-written": (False, dataclasses.replace(found, bf16_autocast=False))}
    if found.bf16_autocast:
        variants["best-bf16"] = (True, found)
    _, model, _, tok = _peer_model(args, variants["best"][1], True)
    out = {}
    for name, (best, speedups) in variants.items():
        for key in ("first", "warm"):
            _, evals, candidates = _peer_data(args, tok)
            evals = list(evals)  # the rows made before the clock starts
            t0 = time.perf_counter()
            accuracy, examples = _accuracy(peft_side.rank_predictions(
                model, evals, candidates, PROMPT_LENGTH, best=best, speedups=speedups))
            out[name] = out.get(name, {}) | {f"{key}_seconds": time.perf_counter() - t0,
                                             "accuracy": accuracy, "examples": examples,
                                             "speedups": speedups.label()}
    return out


# -- the parent ------------------------------------------------------------------------------

def child(side: str) -> dict:
    cmd = [sys.executable, __file__, *sys.argv[1:], "--only", side]
    out = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        sys.exit(f"{side} failed:\n{out.stderr[-4000:]}")
    return json.loads(line[len("RESULT "):])


def run_child(args, side: str) -> dict:
    start = time.perf_counter()
    if side == "bare":
        return run_bare(args)
    if side == "eval-ours":
        return run_eval_ours(args)
    if side == "eval-peft":
        return run_eval_peer(args)
    return run_peer(args, side, start)


def measure(args) -> dict:
    import machine
    from peft_side import Speedups

    model_path(args)  # fetched or built before any timing
    sides = [s for s in args.sides if s != "peft-bf16" or Speedups.detect().bf16_autocast]
    result = {"machine": machine.describe(), "command": " ".join(sys.argv[1:]),
              "recipe": {"model": "quick" if args.quick else args.model, "steps": args.steps,
                         "bare_steps": args.bare_steps,
                         "eval_limit": args.eval_limit, "batch_size": BATCH,
                         "prompt_length": PROMPT_LENGTH}, "sides": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            load = round(os.getloadavg()[0], 2)
            if side in ("ours-cold", "ours-warm"):  # the warm run reads the cold one's cache
                result["sides"][side] = run_cli(args, f"{tmp}/jax-cache", f"{tmp}/{side}")
            else:
                result["sides"][side] = child(side)
            result["sides"][side]["load_average_before"] = load
            print(f"{side}: {json.dumps(result['sides'][side])}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="a real model (prompt_jax's name for it)")
    parser.add_argument("--quick", action="store_true",
                        help="a small random Llama, 40 steps, 64 validation rows")
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--eval-limit", type=int, default=0, help="0 = all 872 rows")
    parser.add_argument("--bare-steps", type=int, default=120,
                        help="steps of the bare side's step and of each of its loops (medians)")
    parser.add_argument("--sides", nargs="+", choices=SIDES,
                        help="default: all of them (--quick: all but peft-compiled, whose "
                        "compiles alone take minutes)")
    parser.add_argument("--label", default="", help="results file suffix")
    parser.add_argument("--docs", action="store_true", help="write the block into the docs")
    parser.add_argument("--from-json", metavar="PATH", help="the tables of a stored result")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_limit = min(args.steps, 40), args.eval_limit or 64
        args.bare_steps = min(args.bare_steps, args.steps)
        args.label = args.label or "quick"
    if args.sides is None:
        args.sides = [s for s in SIDES if not (args.quick and s == "peft-compiled")]
    if args.only:
        print("RESULT " + json.dumps(run_child(args, args.only)))
        return
    import whole_run_report

    from prompt_jax.provenance import write_result

    if args.from_json:
        path = Path(args.from_json)
        result = json.loads(path.read_text())
    else:
        path = RESULTS / f"whole_run{'_' + args.label if args.label else ''}.json"
        result = measure(args)
        write_result(path, result, indent=1)
    print(whole_run_report.table(result))
    if args.docs:
        from readme_block import DOCS, ensure_block, write_block

        ensure_block(path.stem, f"### Whole runs: `{path.name}`", DOCS / "benchmarks.md")
        write_block(path.stem, whole_run_report.block(result, path))


if __name__ == "__main__":
    main()
