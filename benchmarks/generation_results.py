"""The generation tasks on a real model: the hand-written template zero-shot against soft prompts
of 20 and 100 tokens (and, with `--arms model`, model tuning, the upper reference), each scored
with the task's own metric on a seeded sample with 95% intervals; and greedy decoding's speed
against Hugging Face's `generate` (greedy, KV cache, the same batches) on the same rows.

    python benchmarks/generation_results.py --model smollm2-135m-instruct
    python benchmarks/generation_results.py --model smollm2-135m-instruct --arms model
    python benchmarks/generation_results.py --model gemma3-270m --tasks squad
    taskset -c 1 python benchmarks/generation_results.py --tasks squad --speed  # 1 core each

Writes one JSON per cell, `benchmarks/results/generation/<model>/<task>/<arm>.json` (a cell
already there is kept, so an interrupted study resumes), each with its per-row scores, the
budget, the command, date, commit and machine, and each trained prompt beside it
(`<arm>_prompt.npy` and its sidecar); `speed.json` beside the arms holds the decoding
comparison. `python benchmarks/readme_block.py` turns them into docs/results.md's
generation table.

The budget is small and stated in every cell: a 2-core CPU trains each prompt for `--steps`
steps of `--batch` rows. Splits (none trains on what it scores): SQuAD's dev set split by
article, NQ-Open trained on EfficientQA and scored on NQ-Open dev, SAMSum trained on its
validation split and scored on its test split.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prompt_jax import engine, generation, provenance, stats, tasks  # noqa: E402
from prompt_jax.tasks import metrics  # noqa: E402
from prompt_jax.training import run, train  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "generation"
ARMS = ("template", "prompt20", "prompt100", "model")
INPUT_LENGTH = {"squad": 192, "nq_open": 48, "samsum": 192}  # input tokens kept (prompt apart)
MODEL_TUNING = train.OptimizerConfig(name="adamw", learning_rate=2e-5)


def interval(values: np.ndarray, name: str) -> dict:
    """The mean of per-row scores with its 95% interval: Wilson for exact match (0/1 rows), a
    percentile bootstrap for F1 and ROUGE."""
    if name == "exact_match":
        estimate = stats.accuracy(values.astype(bool))
        low, high = estimate.low, estimate.high
    else:
        low, high = stats.bootstrap_interval(lambda x, axis=-1: np.mean(x, axis=axis), [values])
    return {"value": float(values.mean()), "low": low, "high": high, "n": int(values.size)}


def score(loaded, task, batches, golds, prompt, params=None) -> dict:
    """Per-row scores, their means with intervals, and the predictions of one arm."""
    started = time.perf_counter()
    rows, predictions = generation.predict(loaded, task, batches, prompt, params)
    per_row = metrics.per_row(task.spec, predictions, [golds[r] for r in rows])
    return {"metrics": {k: interval(v, k) for k, v in per_row.items()},
            "per_row": {k: v.tolist() for k, v in per_row.items()}, "rows": rows,
            "predictions": predictions, "score_seconds": time.perf_counter() - started}


def trained_arm(loaded, task, batches, golds, args, arm: str, out: Path) -> dict:
    """Trains the arm's prompt (or the model) for the budget; scored once, at the end."""
    tune = "model" if arm == "model" else "prompt"
    config = run.RunConfig(
        model=args.model, task=task.name,
        output_dir=str(Path(args.runs_dir) / args.model / task.name / arm),
        prompt_length=int(arm.removeprefix("prompt")) if tune == "prompt" else 20,
        tune=tune, steps=args.steps, batch_size=args.batch, eval_every=0,
        max_input_length=task.max_input_length, checkpoint_every=args.steps,
        keep_checkpoints=1, log_every=max(1, args.steps // 10), seed=args.seed,
        **({"optimizer": MODEL_TUNING} if tune == "model" else {}))
    trainable = run.trainable_for(config)
    scored = {}

    def evaluate(state):  # the run's one evaluation, at its last step
        prompt, params = trainable.apply(state.trainable, None)
        scored.update(score(loaded, task, batches, golds, prompt, params))
        return {k: m["value"] for k, m in scored["metrics"].items()}

    summary = run.train_prompt(config, overwrite=True, loaded=loaded, evaluate=evaluate)
    if tune == "prompt":  # kept beside the cell (a few KB): a source for transfer
        for suffix in (".npy", ".json"):
            shutil.copyfile(Path(config.output_dir) / f"prompt{suffix}",
                            out / f"{arm}_prompt{suffix}")
    return {**scored, "train_seconds": summary["train_seconds"], "steps": summary["steps"],
            "optimizer": str(config.optimizer), "trainable_params": summary["trainable_params"]}


def hf_speed(loaded, task, batches, args) -> dict:
    """Ours against Hugging Face's greedy `generate` on the same batches (each side's wall time
    after one warm-up batch; tokens per second of real rows), and how many rows agree token for
    token."""
    import torch
    import transformers

    from prompt_jax.models import fetch
    from prompt_jax.tasks.vocabulary import pad_id

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores this process may use
    load_before = os.getloadavg()[0]
    gguf = fetch(args.model)
    hf = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                           dtype=torch.float32).eval()
    options = generation.decode_options(task, loaded.tokenizer)
    n_new, pad = options["max_new_tokens"], pad_id(loaded.tokenizer)
    options.update(stop=None, decode=None)
    ours_s, theirs_s, agree, rows, new_tokens = 0.0, 0.0, 0, 0, 0
    timed = batches[:args.speed_batches + 1]
    for batch in timed[1:]:  # ours compiles each shape bucket once: not timed
        generation.decoding.greedy(loaded.model, loaded.params, None, batch["inputs"],
                                   batch["input_mask"], **options)
    for i, batch in enumerate(timed):
        real = batch["weight"] > 0
        started = time.perf_counter()
        ours = generation.decoding.greedy(loaded.model, loaded.params, None, batch["inputs"],
                                          batch["input_mask"], **options)
        ours_time = time.perf_counter() - started
        ids, mask = batch["inputs"], batch["input_mask"]
        width = ids.shape[1]
        left_ids = np.full_like(ids, pad)
        left_mask = np.zeros_like(mask)
        for b in range(len(ids)):  # HF's decoder-only generate wants left padding
            n = int(mask[b].sum())
            left_ids[b, width - n:], left_mask[b, width - n:] = ids[b, :n], 1
        started = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(input_ids=torch.tensor(left_ids, dtype=torch.long),
                              attention_mask=torch.tensor(left_mask, dtype=torch.long),
                              max_new_tokens=n_new, do_sample=False, num_beams=1,
                              eos_token_id=loaded.tokenizer.eos_token_id, pad_token_id=pad)
        theirs_time = time.perf_counter() - started
        theirs = out[:, width:].numpy()
        if i == 0:
            continue  # warm-up for both sides (ours compiled its buckets above)
        ours_s, theirs_s = ours_s + ours_time, theirs_s + theirs_time
        for b in np.flatnonzero(real):
            k = int(ours.lengths[b])
            mine = ours.token_ids[b, :k]
            agree += int(theirs.shape[1] >= k and np.array_equal(mine, theirs[b, :k]))
            rows += 1
            new_tokens += k
    return {"rows": rows, "new_tokens": new_tokens, "ours_seconds": ours_s,
            "hf_seconds": theirs_s, "speedup": theirs_s / ours_s if ours_s else None,
            "rows_token_identical": agree, "batch": args.eval_batch,
            "cores": len(os.sched_getaffinity(0)),
            "load_average": [load_before, os.getloadavg()[0]],
            "max_new_tokens": n_new, "hf": "transformers generate, greedy, use_cache, "
                                           "torch.inference_mode, float32"}


ARM_NAMES = {"template": "hand-written template, zero-shot", "prompt20": "soft prompt, 20 tokens",
             "prompt100": "soft prompt, 100 tokens", "model": "model tuning (every weight)"}


def _difference(a: list[float], b: list[float]) -> dict:
    """Mean per-row difference a - b on the same rows, with its paired bootstrap interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    low, high = stats.bootstrap_interval(
        lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis), [a, b])
    return {"value": float(np.mean(a - b)), "low": low, "high": high}


def _pct(m: dict) -> str:
    return f"{100 * m['value']:.1f} [{100 * m['low']:.1f}, {100 * m['high']:.1f}]"


def report(root: Path = OUT) -> str:
    """docs/results.md's generation block, from the stored cells alone."""
    lines, readings, speed_rows, speedups, provenances = [], [], [], [], set()
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for task_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
            cells = {arm: json.loads((task_dir / f"{arm}.json").read_text())
                     for arm in ARMS if (task_dir / f"{arm}.json").exists()}
            if not cells:
                continue
            spec = tasks.get_task(task_dir.name)
            primary, base = spec.primary_metric, cells.get("template")
            budget = next(iter(cells.values()))["budget"]
            lines += [f"**{model_dir.name}, {task_dir.name}** ({spec.description}; a seeded "
                      f"{budget['eval_limit']} validation rows, inputs cut to "
                      f"{budget['max_input_length']} tokens, at most "
                      f"{budget['max_new_tokens']} new tokens, greedy)", "",
                      "| arm | " + " | ".join(spec.metric_names) + f" | {primary} vs template "
                      "| empty answers | n | training |",
                      "|---|" + "---|" * (len(spec.metric_names) + 4)]
            for arm, cell in cells.items():
                provenances.add(provenance.line(cell))
                diff = "-"
                if base is not None and arm != "template":
                    d = _difference(cell["per_row"][primary], base["per_row"][primary])
                    beyond = d["low"] > 0 or d["high"] < 0
                    readings.append((beyond, d["value"] > 0))
                    diff = (f"{100 * d['value']:+.1f} [{100 * d['low']:+.1f}, "
                            f"{100 * d['high']:+.1f}]" + (" *" if beyond else ""))
                train_text = ("-" if arm == "template" else
                              f"{cell['steps']} steps x {cell['budget']['batch']} rows, "
                              f"{cell['train_seconds']:.0f} s")
                lines.append(f"| {ARM_NAMES[arm]} | " + " | ".join(
                    _pct(cell["metrics"][m]) for m in spec.metric_names)
                    + f" | {diff} | {sum(not p for p in cell['predictions'])} | "
                    f"{cell['metrics'][primary]['n']} | {train_text} |")
            lines.append("")
            if (task_dir / "speed.json").exists():
                sp = json.loads((task_dir / "speed.json").read_text())
                provenances.add(provenance.line(sp))
                speedups.append(sp["speedup"])
                speed_rows.append(
                    f"| {model_dir.name} | {task_dir.name} | {sp['rows']} (batches of "
                    f"{sp['batch']}) | {sp['new_tokens']} | {sp['ours_seconds']:.1f} | "
                    f"{sp['hf_seconds']:.1f} | "
                    f"{'-' if sp['speedup'] is None else format(sp['speedup'], '.2f') + 'x'} | "
                    f"{sp['rows_token_identical']} of {sp['rows']} | "
                    + (f"{sp['cores']}, {sp['load_average'][0]:.1f} / "
                       f"{sp['load_average'][1]:.1f} |" if "cores" in sp else "- |"))
    out = ["Scores in percent with 95% intervals (Wilson for exact match, a percentile "
           "bootstrap over rows for F1 and ROUGE); the difference to the template is paired "
           "on the same rows (bootstrap), * where its interval excludes 0. "
           + stats.reading([b for b, _ in readings], "differences to the template")
           + f" ({sum(b and up for b, up in readings)} above it, "
           f"{sum(b and not up for b, up in readings)} below).", "", *lines]
    if speed_rows:
        out += ["Greedy decoding, ours against Hugging Face `generate` (greedy, KV cache, "
                "`torch.inference_mode`, float32) on the same batches of the template's rows, "
                "each side's wall time after one warm-up batch (ours compiled for every shape "
                "bucket first: its steady state); rows token-identical = ours equals HF's up "
                "to its EOS:", "",
                "| model | task | rows | new tokens (ours) | ours s | HF s | speedup | rows "
                "token-identical | cores, load before / after |",
                "|---|---|---|---|---|---|---|---|---|", *speed_rows, "",
                f"Of {len(speedups)} rows, ours is at least 5% faster than HF on "
                f"{sum(x >= 1.05 for x in speedups if x)}, within 5% on "
                f"{sum(0.95 < x < 1.05 for x in speedups if x)} and at least 5% slower on "
                f"{sum(x <= 0.95 for x in speedups if x)} (speedups "
                f"{min(x for x in speedups if x):.2f}x to {max(x for x in speedups if x):.2f}x; "
                "one timed pass per side, so read a few percent as noise).", "",
                "Both sides run in one process pinned to the cores shown (`taskset`), torch with "
                "as many threads; the load average says how busy the machine was (other work "
                "shared it), so read the ratio, not the seconds.", ""]
    where = sorted({p.rsplit(", commit ", 1)[0] for p in provenances})
    commits = sorted({p.rsplit(", commit ", 1)[-1] for p in provenances if ", commit " in p})
    out += ["Stored: " + "; ".join(where) + f" (commits {', '.join(commits)}). Command: "
            "`python benchmarks/generation_results.py` (see its docstring for each run)."]
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--tasks", nargs="+", default=["squad", "nq_open", "samsum"])
    p.add_argument("--arms", nargs="+", default=["template", "prompt20", "prompt100"],
                   choices=ARMS)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--eval_limit", type=int, default=100, help="scored rows (a seeded sample)")
    p.add_argument("--eval_batch", type=int, default=16)
    p.add_argument("--speed", action="store_true", help="also time decoding against HF")
    p.add_argument("--speed_batches", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT), help="where the cells go")
    p.add_argument("--runs_dir", default=str(Path(tempfile.gettempdir()) / "generation_runs"),
                   help="the training runs' folders (checkpoints: kept out of the repository)")
    args = p.parse_args(argv)

    loaded = engine.load_model(args.model)
    for name in args.tasks:
        out = Path(args.out) / args.model / name
        task = loaded.task(name, max_input_length=INPUT_LENGTH[name])
        batches = list(task.batches("validation", args.eval_batch, limit=args.eval_limit))
        golds = generation.references(task, "validation")
        budget = {"steps": args.steps, "batch": args.batch, "eval_limit": args.eval_limit,
                  "max_input_length": task.max_input_length,
                  "max_new_tokens": task.spec.max_new_tokens, "split": "validation",
                  "seed": args.seed}
        for arm in args.arms:
            path = out / f"{arm}.json"
            if path.exists():
                print(f"{name} {arm}: kept {path}")
                continue
            print(f"{name} {arm} ...", flush=True)
            cell = (score(loaded, task, batches, golds, None) if arm == "template" else
                    trained_arm(loaded, task, batches, golds, args, arm, out))
            provenance.write_result(path, {"model": args.model, "task": name, "arm": arm,
                                           "budget": budget, **cell})
            print(f"{name} {arm}: " + ", ".join(
                f"{k} {m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"
                for k, m in cell["metrics"].items()), flush=True)
        if args.speed and not (out / "speed.json").exists():
            provenance.write_result(out / "speed.json", {"model": args.model, "task": name,
                                                         **hf_speed(loaded, task, batches,
                                                                    args)})
            print(f"{name} speed: written", flush=True)


if __name__ == "__main__":
    main()
