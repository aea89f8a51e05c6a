"""The results of docs/results.md (and the README's demo table): prompt tuning real models
(SmolLM2-135M-Instruct, and Gemma 3 270M on SST-2) on real tasks, row by row.

Every row is one command; it trains (or scores) on the task's local train split and evaluates on
its validation split, then writes `benchmarks/results/<task>/<row>.json` (SmolLM2) or
`benchmarks/results/<model>/<task>/<row>.json` (the numbers the docs show, and the
accuracy-vs-step curve). `report` turns those files into docs/results.md's markdown
tables and the SST-2 training curves (`benchmarks/results/sst2_curves.png`).

    python benchmarks/results.py run sst2 soft-text-20   # one row
    python benchmarks/results.py run sst2                # every row of SST-2 not measured yet
    python benchmarks/results.py run --model gemma3-270m sst2   # Gemma 3 270M's rows
    python benchmarks/results.py report                  # tables + curves from the JSON files
    python benchmarks/results.py report --docs           # ... into docs/results.md, README

The shared recipe is the demo's (and the PEFT comparison's): 20 prompt vectors, AdamW 3e-2
(weight decay 0.01), batch 8, 320 steps, inputs truncated to 128 tokens, rank classification
between the verbalizers. SST-2's text-init run goes on to 1280 steps at the same constant rate
(its step-320 evaluation is the 320-step row), a second 1280-step run decays the rate to 0
on a cosine (the longer documented budget), and a third takes the library's default optimizer
(Adafactor at a constant 0.3) instead of AdamW. During training a fixed subset (the first 192
validation examples) is scored every `eval_every` steps for the curves; the whole evaluation
split (or `eval_limit` examples of it) at step 320 and at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from prompt_jax import provenance, stats
from prompt_jax.provenance import write_result

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from readme_block import link  # noqa: E402

RESULTS = HERE / "results"
CURVE_BATCHES = 6  # x eval batch 32 = the first 192 validation examples

SENTIMENT_TEXT = "Classify if the sentiment of each movie review is positive or negative."
SENTIMENT_TEMPLATES = (
    "Review: {text_a}\nSentiment:",  # the tasks' own template
    "{text_a}\nIs this review positive or negative? Answer:",
    "Movie review: {text_a}\nThe sentiment of this review is",
)
TASKS = {
    "sst2": dict(init_text=SENTIMENT_TEXT, templates=SENTIMENT_TEMPLATES, eval_limit=0,
                 name="SST-2 validation (872)"),
    "rotten_tomatoes": dict(init_text=SENTIMENT_TEXT, templates=SENTIMENT_TEMPLATES,
                            eval_limit=0, eval_split="test", name="Rotten Tomatoes test (1,066)"),
    "imdb": dict(init_text=SENTIMENT_TEXT, templates=SENTIMENT_TEMPLATES, eval_limit=500,
                 name="IMDB held-out train reviews (a seeded random 500), truncated to 128 tokens"),
    "rte": dict(init_text="Does the premise entail the hypothesis? Answer yes or no.",
                templates=(
                    "Premise: {text_a}\nHypothesis: {text_b}\n"
                    "Does the premise entail the hypothesis? Answer:",  # the task's own
                    "{text_a}\nQuestion: {text_b} Yes or no?\nAnswer:",
                    "{text_a}\nBased on that, is it true that \"{text_b}\"? Answer:",
                ), eval_limit=0, name="RTE validation (277)"),
}

# name -> (label in the table, RunConfig overrides, extra settings)
ROWS = {
    "zero-shot": ("hand-written prompt, zero-shot (best of the templates)", {}, {}),
    "soft-text-20": ("soft prompt, text init, 20 tokens", {}, {}),
    "soft-random-20": ("soft prompt, random-uniform init, 20 tokens",
                       {"init": "random_uniform"}, {}),
    "soft-sampled-20": ("soft prompt, sampled-vocab init, 20 tokens",
                        {"init": "sampled_vocab"}, {}),
    "soft-class-20": ("soft prompt, class-label init, 20 tokens", {"init": "class_labels"}, {}),
    "soft-text-5": ("soft prompt, text init, 5 tokens", {"prompt_length": 5}, {}),
    "soft-text-100": ("soft prompt, text init, 100 tokens", {"prompt_length": 100}, {}),
    "model-tuning": ("model tuning (every weight, AdamW 2e-5), upper reference",
                     {"tune": "model"}, {"learning_rate": 2e-5}),
    "soft-text-20-adafactor": ("soft prompt, text init, 20 tokens, Adafactor 0.3 (the "
                               "library's default optimizer)", {},
                               {"optimizer": "adafactor", "learning_rate": 0.3,
                                "weight_decay": 0.0}),
    "soft-text-20-cosine": ("soft prompt, text init, 20 tokens, rate decayed to 0 on a cosine",
                            {}, {"schedule": "cosine", "steps": 1280}),
}
# SST-2's text-init run goes on to a longer budget; its step-320 evaluation is the 320-step
# row (the same run up to there: constant learning rate, same batches).
LONG = {"sst2": 1280}
TASK_ROWS = {
    "sst2": ("zero-shot", "soft-text-20", "soft-text-20-adafactor", "soft-text-20-cosine",
             "soft-random-20", "soft-sampled-20", "soft-class-20", "soft-text-5", "soft-text-100",
             "model-tuning"),
}
VARIANT_ROWS = ("zero-shot", "soft-text-20", "soft-random-20", "soft-sampled-20", "soft-class-20",
                "soft-text-5", "soft-text-100", "model-tuning")
TASK_ROWS |= {task: VARIANT_ROWS for task in ("rotten_tomatoes", "rte", "imdb")}
STEPS = 320
DEFAULT_MODEL = "smollm2-135m-instruct"
# model -> (name in tables, {task: rows}); the default model's rows are TASK_ROWS.
MODELS = {
    DEFAULT_MODEL: ("SmolLM2-135M-Instruct", TASK_ROWS),
    "gemma3-270m": ("Gemma 3 270M", {"sst2": ("zero-shot", "soft-text-5", "soft-text-20",
                                              "soft-text-100", "model-tuning")}),
}


def results_dir(model: str) -> Path:
    return RESULTS if model == DEFAULT_MODEL else RESULTS / model


def config_for(task: str, row: str, output_dir: Path, model: str = DEFAULT_MODEL):
    from prompt_jax.training import run
    from prompt_jax.training.train import OptimizerConfig

    _, overrides, extra = ROWS[row]
    long = LONG.get(task, STEPS) if model == DEFAULT_MODEL else STEPS
    steps = extra.get("steps", long if row == "soft-text-20" else STEPS)
    fields = dict(
        model=model, task=task, output_dir=str(output_dir),
        prompt_length=20, init="text", init_text=TASKS[task]["init_text"],
        optimizer=OptimizerConfig(name=extra.get("optimizer", "adamw"),
                                  learning_rate=extra.get("learning_rate", 3e-2),
                                  weight_decay=extra.get("weight_decay", 0.01),
                                  schedule=extra.get("schedule", "constant"), total_steps=steps),
        steps=steps, batch_size=8, max_input_length=128, eval_limit=TASKS[task]["eval_limit"],
        eval_split=TASKS[task].get("eval_split", "validation"),
        eval_every=80 if steps <= STEPS else 160, checkpoint_every=steps, keep_checkpoints=1,
        mesh_data=1)
    return run.RunConfig(**(fields | overrides))


def run_zero_shot(task: str, model: str) -> dict:
    from prompt_jax.training import run

    config = config_for(task, "soft-text-20", runs_dir(model) / task / "zero-shot", model)
    loaded = run.load(config)[0]
    scores = []
    for template in TASKS[task]["templates"]:
        t0 = time.perf_counter()
        templated = dataclasses.replace(config, template=template)
        metrics = run.evaluator(loaded, run.task_for(loaded, templated), templated)(None)
        scores.append({"template": template, **metrics,
                       "seconds": time.perf_counter() - t0})
        print(f"{template!r}: {metrics['accuracy']:.1%}", flush=True)
    best = max(scores, key=lambda s: s["accuracy"])
    return {"task": task, "row": "zero-shot", "final": {k: best[k] for k in
                                                       ("accuracy", "macro_f1")},
            "template": best["template"], "templates": scores, "trainable_params": 0}


def runs_dir(model: str) -> Path:
    return Path("runs/results") if model == DEFAULT_MODEL else Path("runs/results") / model


def run_training(task: str, row: str, model: str) -> dict:
    from prompt_jax import scoring
    from prompt_jax.tasks.metrics import classification_metrics
    from prompt_jax.training import run

    config = config_for(task, row, runs_dir(model) / task / row, model)
    out = Path(config.output_dir)
    loaded, task_handle = run.load(config)
    trainable = run.trainable_for(config)
    full_batches = list(task_handle.batches(
        config.eval_split, config.eval_batch_size, limit=config.eval_limit,
        packer=task_handle.packer(run.prefix_length(config))))
    eval_step = loaded.eval_step(task_handle.placement)
    num_classes = len(task_handle.labels)
    decayed = config.optimizer.schedule != "constant"  # then only the end of the run counts
    full_at = {config.steps} if decayed else {STEPS, config.steps}
    curve_size = sum(int((b["weight"] > 0).sum()) for b in full_batches[:CURVE_BATCHES])

    def evaluate(state):
        full = int(state.step) in full_at
        prompt, params = trainable.apply(state.trainable, loaded.params)
        predictions, labels = scoring.classify(
            eval_step, prompt, params, full_batches if full else
            full_batches[:CURVE_BATCHES], task_handle.candidates)
        metrics = {"accuracy": float(np.mean(predictions[:curve_size] == labels[:curve_size]))}
        if full:
            metrics.update({f"full_{k}": v for k, v in classification_metrics(
                predictions, labels, num_classes).items()})
        return metrics

    summary = run.train_prompt(config, overwrite=True, loaded=loaded, evaluate=evaluate)
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["split"] == "eval"]
    full = {e["step"]: {"accuracy": e["full_accuracy"], "macro_f1": e["full_macro_f1"]}
            for e in evals if "full_accuracy" in e}
    return {
        "task": task, "row": row, "final": full[config.steps if decayed else STEPS],
        "final_long": full[config.steps],
        "curve": [(e["step"], e["accuracy"]) for e in evals], "curve_examples": curve_size,
        "trainable_params": summary["trainable_params"],
        "train_examples_per_second": summary["train_examples_per_second"],
        "steps": config.steps, "config": dataclasses.asdict(config),
    }


def run_row(task: str, row: str, model: str = DEFAULT_MODEL) -> None:
    print(f"== {model} / {task} / {row}", flush=True)
    t0 = time.perf_counter()
    result = (run_zero_shot(task, model) if row == "zero-shot"
              else run_training(task, row, model))
    result["wall_seconds"] = time.perf_counter() - t0
    sys.path.insert(0, str(HERE))
    import machine

    result["machine"] = machine.describe()
    path = results_dir(model) / task / f"{row}.json"
    write_result(path, result, indent=1)
    print(f"{task} / {row}: {result['final']['accuracy']:.1%} -> {path}", flush=True)


def load(task: str, row: str, model: str = DEFAULT_MODEL) -> dict | None:
    path = results_dir(model) / task / f"{row}.json"
    return json.loads(path.read_text()) if path.is_file() else None


@functools.cache
def scored_rows(task: str) -> int:
    """How many rows a task's results score: its `eval_limit`, else its whole evaluation split
    (the stored files before provenance do not say)."""
    from prompt_jax import tasks

    settings = TASKS[task]
    total = len(tasks.read_split(task, settings.get("eval_split", "validation"))[0])
    return min(settings["eval_limit"], total) if settings["eval_limit"] else total


def with_interval(metrics: dict, task: str) -> str:
    """'86.1% [83.6, 88.2]': accuracy with its 95% Wilson interval over the rows scored."""
    n = metrics.get("examples") or scored_rows(task)
    return stats.accuracy(np.arange(n) < round(metrics["accuracy"] * n)).text()


def table(task: str, model: str = DEFAULT_MODEL) -> str:
    name, rows = MODELS[model]
    title = TASKS[task]["name"] if model == DEFAULT_MODEL else f"{name}: {TASKS[task]['name']}"
    flag = "" if model == DEFAULT_MODEL else f"--model {model} "
    paths = [results_dir(model) / task / f"{row}.json" for row in rows[task]]
    paths = [path for path in paths if path.is_file()]
    lines = [f"### {title}", ""]
    if paths:
        lines += [f"Results {stored(paths)}. Accuracy with its 95% Wilson interval.", ""]
    lines += ["| method | accuracy | macro-F1 | trainable params | train examples/s | command |",
              "|---|---|---|---|---|---|"]
    for row in rows[task]:
        r = load(task, row, model)
        label = ROWS[row][0]
        command = f"`python benchmarks/results.py run {flag}{task} {row}`"
        if r is None:
            lines.append(f"| {label} | not measured | | | | {command} |")
            continue
        if row == "zero-shot":
            rows = [(label, r["final"])]
        elif r["config"]["optimizer"]["schedule"] != "constant":  # only its end counts
            rows = [(f"{label} ({r['steps']} steps)", r["final"])]
        else:  # a constant rate: step 320 of a longer run is the 320-step row
            rows = [(f"{label} ({STEPS} steps)", r["final"])]
            if r.get("steps", STEPS) > STEPS:
                rows.append((f"{label} ({r['steps']} steps, the same run)", r["final_long"]))
        speed = r.get("train_examples_per_second")
        speed = f"{speed:.1f}" if speed else "-"
        for name, m in rows:
            lines.append(f"| {name} | {with_interval(m, task)} | {m['macro_f1']:.3f} | "
                         f"{r['trainable_params']:,} | {speed} | {command} |")
    zero = load(task, "zero-shot", model)
    if zero:
        lines += ["", "Zero-shot templates: " + "; ".join(
            f"`{t['template']!r}` {t['accuracy']:.1%}" for t in zero["templates"]) + "."]
    return "\n".join(lines)


def curves(task: str, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = 0
    for row in TASK_ROWS[task]:
        r = load(task, row)
        if r is None or not r.get("curve"):
            continue
        steps, acc = zip(*r["curve"], strict=True)
        ax.plot(steps, acc, marker="o", ms=3, label=ROWS[row][0])
        drawn += 1
    zero = load(task, "zero-shot")
    if zero:
        ax.axhline(zero["final"]["accuracy"], color="gray", ls="--", lw=1,
                   label="zero-shot, best template (whole split)")
    if not drawn:
        plt.close(fig)
        return None
    size = next(r["curve_examples"] for row in TASK_ROWS[task]
                if (r := load(task, row)) and r.get("curve_examples"))
    ax.set(xlabel="training step (batch 8)",
           ylabel=f"accuracy, first {size} validation examples",
           title=f"SmolLM2-135M-Instruct on {TASKS[task]['name']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


PEFT_NOTE = (
    "The same recipe through both libraries, each side in its own process: the SmolLM2 GGUF "
    "(PEFT's through transformers' GGUF loader), the same batches, template and initial prompt "
    "(20 vectors, text init), AdamW 3e-2 (constant, or decayed to 0 on a cosine on both "
    "sides), batch 8, 320 steps; accuracy on all 872 validation sentences. "
    "`tests/test_peft_recipe.py` checks on a tiny Llama that the two steps are the same "
    "(losses and prompt). Float32 rounding grows over training, so each run's end point is a "
    "draw: the constant-rate table draws seed 0 four times (the initial prompt scaled by "
    "1 + EPS, `--perturb`). Examples/s: median step, first excluded; train time: all steps, "
    "compilation included. Machines differ between tables: compare ratios within a table. "
    "`benchmarks/peft_vs_prompt_jax.py`'s docstring says more; `benchmarks/step_bench.py` "
    "compares the steps alone, against PEFT at its best too.")


def loss_difference(result: dict) -> list[str]:
    """Per run: the mean per-step training-loss difference (ours - PEFT, paired by batch) and
    its standard error, from the stored losses."""
    lines = []
    labels = [f"seed {seed}" + (f" x(1+{eps:g})" if eps else "")
              for seed, eps in zip(result["seeds"], result.get("perturbs") or
                                   [0.0] * len(result["seeds"]), strict=True)]
    for label, run in zip(labels, result["runs"], strict=True):
        ours, peft = run["ours"].get("losses"), run["peft"].get("losses")
        if not ours or not peft:
            continue
        diff = np.asarray(ours) - np.asarray(peft)
        se = diff.std(ddof=1) / np.sqrt(len(diff))
        lines.append(f"{label}: {diff.mean():+.4f} +- {se:.4f} ({abs(diff.mean()) / se:.1f} "
                     "standard errors)")
    return lines


GEMMA_PEFT_NOTE = (
    "The same comparison on Gemma 3 270M (`--model gemma3-270m`): the same batches, template "
    "and text init (PEFT's own: the scaled embeddings, as ours), AdamW 3e-2 decayed to 0 on a "
    "cosine, batch 8, accuracy on all 872 validation sentences, for fewer steps than SmolLM2's "
    "because PEFT is slow here: as users write it, it computes the 262,144-wide vocabulary's "
    "logits at every position of every row, while prompt_jax computes the head at the one "
    "position that predicts the verbalizer. One seed of 80 steps: both start from the same "
    "loss and end within a point of each other, so the table speaks to speed and memory more "
    "than to accuracy.")
GEMMA_STEP_BENCH = "step_bench_real_gemma3.json"


def gemma_peft_reading(side_by_side: dict) -> str | None:
    """This side by side against the step benchmark's run of the same model
    (`GEMMA_STEP_BENCH`): PEFT at its best, and why the ratio against PEFT as users write it
    is not the step benchmark's, computed from the two stored files."""
    path = RESULTS / GEMMA_STEP_BENCH
    if not path.is_file():
        return None
    bench = json.loads(path.read_text())
    sides = bench["shapes"]["gemma3-270m"]["sides"]
    from step_bench import best_peer

    ours, peft, best = sides["ours"], sides["peft"], best_peer(sides)
    run = side_by_side["runs"][0]
    here_ours, here_peft = run["ours"]["examples_per_second"], run["peft"]["examples_per_second"]

    def ratios(side: dict) -> str:
        return (f"{ours['examples_per_second'] / side['examples_per_second']:.2f}x per step, "
                f"{side['total_seconds'] / ours['total_seconds']:.2f}x on total time")

    return (
        f"PEFT at its best (the head only at the positions the loss reads) was measured on "
        f"Gemma 3 too, by the step benchmark (`benchmarks/results/{GEMMA_STEP_BENCH}`, "
        f"{bench['recipe']['steps']} steps): ours / PEFT at its best (the fastest of its "
        f"variants run) {ratios(best)}"
        + (", so prompt_jax is slower in total there" if best["total_seconds"]
           < ours["total_seconds"] else "") + "; ours / PEFT as users write it "
        f"{ratios(peft)}. The side by side below finds {here_ours / here_peft:.2f}x against "
        f"PEFT as users write it, not the step benchmark's "
        f"{ours['examples_per_second'] / peft['examples_per_second']:.2f}x: ours runs at "
        f"{here_ours:.2f} examples/s here and {ours['examples_per_second']:.2f} there, PEFT at "
        f"{here_peft:.2f} here against {peft['examples_per_second']:.2f} there, with a peak "
        f"RSS of {run['peft']['max_rss_mb'] / 1024:.2f} GB here against "
        f"{peft['memory']['max_rss_mb'] / 1024:.2f} GB there. The two runs of PEFT differ in "
        "its batches' padding (here our 16-token buckets plus one column, there each batch's "
        "exact longest row: every padded position costs a 262,144-wide row of logits), in "
        "whether the peak RSS covers the evaluation pass (here it does), in their length and "
        "in the day the shared machine ran them; no stored measurement separates these, so "
        "read the step benchmark's ratios, taken side by side in one run, as the comparison, "
        "and this table for accuracy and memory.")


def peft_table(model: str = DEFAULT_MODEL) -> str | None:
    """The side-by-side PEFT comparisons (benchmarks/peft_vs_prompt_jax.py's JSON for each
    schedule run) on `model`, if any."""
    sys.path.insert(0, str(HERE))
    import peft_vs_prompt_jax

    parts = []
    for schedule, draws in itertools.product(peft_vs_prompt_jax.SCHEDULES, (False, True)):
        path = peft_vs_prompt_jax.output_path(schedule, draws, model)
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        flag = "" if model == DEFAULT_MODEL else f" --model {model}"
        flag += "" if schedule == "constant" else f" --schedule {schedule}"
        if draws:
            perturbs = dict.fromkeys(result["perturbs"])
            flag += f" --perturb {' '.join(map(peft_vs_prompt_jax.eps_text, perturbs))}"
        command = (f"`python benchmarks/peft_vs_prompt_jax.py --steps {result['recipe']['steps']} "
                   f"--seeds {' '.join(map(str, dict.fromkeys(result['seeds'])))}{flag}`")
        parts += [peft_vs_prompt_jax.table(result), f"Reproduce: {command}."]
        diffs = loss_difference(result)
        if diffs:
            parts.append("Mean per-step training-loss difference, ours - PEFT (paired by "
                         "batch): " + "; ".join(diffs) + ".")
    if not parts:
        return None
    if model != DEFAULT_MODEL:
        reading = gemma_peft_reading(result) if model == "gemma3-270m" else None
        return "\n\n".join([f"#### prompt_jax vs Hugging Face PEFT on {MODELS[model][0]}",
                             GEMMA_PEFT_NOTE, *([reading] if reading else []), *parts])
    return "\n\n".join(["#### prompt_jax vs Hugging Face PEFT, side by side", PEFT_NOTE, *parts])


def gap_table(task: str = "sst2") -> str | None:
    """Prompt tuning against model tuning on `task` for every model with both rows, at the
    same 320 steps (Lester et al.: the gap closes as models grow)."""
    lines = ["| model | weights | soft prompt, 5 / 20 / 100 tokens (text init) | model tuning "
             "| gap: model tuning - best soft prompt |", "|---|---|---|---|---|"]
    for model, (name, _) in MODELS.items():
        tuned = load(task, "model-tuning", model)
        soft = [load(task, f"soft-text-{n}", model) for n in (5, 20, 100)]
        if tuned is None or None in soft:
            continue
        accuracy = [r["final"]["accuracy"] for r in soft]
        lines.append(f"| {name} | {tuned['trainable_params'] / 1e6:.1f}M | "
                     + " / ".join(f"{a:.1%}" for a in accuracy)
                     + f" | {tuned['final']['accuracy']:.1%} | "
                     f"{100 * (tuned['final']['accuracy'] - max(accuracy)):+.1f} points |")
    if len(lines) < 4:
        return None
    return "\n".join([
        f"#### Prompt tuning vs model tuning at two sizes ({TASKS[task]['name']}, "
        f"{STEPS} steps)", "",
        "Lester et al. find that the gap between prompt tuning and model tuning closes as the "
        "frozen model grows (T5 from 60M to 11B). Here are two sizes of two different families, "
        "one seed each, on one task: too thin to show a trend, listed so that it can be read "
        "beside theirs. Each cell is the row of the same name in the tables above.", "",
        *lines])


def stored(paths: list[Path]) -> str:
    """When and where the result files `paths` were measured: the machine line each records
    (`results.py run` stores one), else the date and commit that last stored them (git)."""
    import subprocess

    sys.path.insert(0, str(HERE))
    import machine

    results = [json.loads(p.read_text()) for p in paths]
    lines = {provenance.line(r) if "provenance" in r else machine.line(r["machine"])
             for r in results if "provenance" in r or "machine" in r}
    if len(lines) == 1:
        return f"measured {lines.pop()}"
    if len(lines) > 1:
        return "measured " + "; ".join(sorted(lines))
    log = subprocess.run(["git", "log", "-1", "--format=%ad %h", "--date=short", "--",
                          *map(str, paths)], cwd=HERE.parent, capture_output=True, text=True)
    date, _, commit = log.stdout.strip().partition(" ")
    return (f"stored {date} in commit {commit}; these files do not record the machine "
            "(every result written since does)" if date else "date and machine not recorded")


DEMO_RESULT = RESULTS / "demo" / "demo.json"


def demo_table() -> str | None:
    """The README's demo table: from a stored `prompt-jax demo` run (its `demo.json`, copied to
    benchmarks/results/demo/) when there is one, else from the stored SST-2 rows (the demo's
    template and the first 320 steps of the text-init row: the same recipe and batches)."""
    if DEMO_RESULT.is_file():
        return stored_demo_table(json.loads(DEMO_RESULT.read_text()))
    zero, soft = load("sst2", "zero-shot"), load("sst2", "soft-text-20")
    if zero is None or soft is None:
        return None
    own = zero["templates"][0]  # the task's own template, which the demo scores
    best = max(zero["templates"], key=lambda t: t["accuracy"])
    minutes = STEPS * 8 / soft["train_examples_per_second"] / 60
    paths = [results_dir(DEFAULT_MODEL) / "sst2" / f"{row}.json"
             for row in ("zero-shot", "soft-text-20")]
    return "\n".join([
        f"{MODELS[DEFAULT_MODEL][0]} (frozen) on {TASKS['sst2']['name']}; "
        f"{stored(paths)}.", "",
        "| method | accuracy | macro-F1 | trainable params | training time |",
        "|---|---|---|---|---|",
        f"| hand-written prompt, zero-shot (the task's template) | {own['accuracy']:.1%} | "
        f"{own['macro_f1']:.3f} | 0 | - |",
        f"| hand-written prompt, zero-shot (best of {len(zero['templates'])} templates: "
        f"`{best['template']!r}`) | {best['accuracy']:.1%} | {best['macro_f1']:.3f} | 0 | - |",
        f"| soft prompt (20 tokens, {STEPS} steps) | {soft['final']['accuracy']:.1%} | "
        f"{soft['final']['macro_f1']:.3f} | {soft['trainable_params']:,} | about "
        f"{minutes:.1f} min ({soft['train_examples_per_second']:.1f} examples/s) |",
        "", "From `benchmarks/results/sst2/zero-shot.json` and `soft-text-20.json` "
        "(`python benchmarks/results.py run sst2 zero-shot soft-text-20`; the demo runs the "
        "same recipe)."])


def stored_demo_table(demo: dict) -> str:
    """The table a stored `prompt-jax demo` run printed, with intervals and its timings."""
    soft, zero = demo["soft_prompt"], demo["zero_shot"]
    n_rank = demo["templates"][0]["examples"]
    lines = [f"`prompt-jax demo`, {provenance.line(demo)}: the whole command took "
             f"{demo['total_seconds'] / 60:.1f} min once installed (model loaded, "
             f"{len(demo['templates'])} templates ranked on {n_rank} rows, the best scored on all "
             f"{zero['examples']:,}, {soft['steps']} training steps, the prompt scored). "
             "Accuracy with its 95% Wilson interval.", "",
             "| method | accuracy | macro-F1 | trainable params | training time |",
             "|---|---|---|---|---|"]
    for ranked in demo["templates"]:
        own = ", the task's own" if ranked["own"] else ""
        lines.append(f"| template `{ranked['template']!r}`{own}, zero-shot, ranking sample of "
                     f"{ranked['examples']} | {with_interval(ranked, 'sst2')} | "
                     f"{ranked['macro_f1']:.3f} | 0 | - |")
    lines += [f"| the best template, zero-shot, all {zero['examples']:,} rows | "
              f"{with_interval(zero, 'sst2')} | {zero['macro_f1']:.3f} | 0 | - |",
              f"| soft prompt ({soft['trainable_params'] // demo['d_model']} tokens, "
              f"{soft['steps']} steps), all {soft['final']['examples']:,} rows | "
              f"{with_interval(soft['final'], 'sst2')} | "
              f"{soft['final']['macro_f1']:.3f} | {soft['trainable_params']:,} | "
              f"{soft['train_seconds'] / 60:.1f} min ({soft['train_examples_per_second']:.1f} "
              "examples/s) |", "",
              f"From `{link(DEMO_RESULT, 'demo')}`, the `demo.json` that `prompt-jax demo` writes "
              "beside its prompt (copied here)."]
    return "\n".join(lines)


def report(draw: bool = True) -> str:
    """docs/results.md's results block: every task's table, the SST-2 curves, the PEFT comparison;
    then the other models' tables, their PEFT comparisons and the prompt-vs-model-tuning gap.
    `draw=False` links the stored curves instead of drawing them again."""
    parts = []
    for task in TASK_ROWS:
        parts.append(table(task))
        if task == "sst2":
            png = RESULTS / "sst2_curves.png"  # drawn anew, or the stored one
            png = curves("sst2", png) if draw else png if png.is_file() else None
            if png:
                parts.append(f"![SST-2 training curves]({link(png)})")
            peft = peft_table()
            if peft:
                parts.append(peft)
    for model, (_, rows) in MODELS.items():
        if model == DEFAULT_MODEL:
            continue
        parts += [table(task, model) for task in rows]
        peft = peft_table(model)
        if peft:
            parts.append(peft)
    gap = gap_table()
    if gap:
        parts.append(gap)
    return "\n\n".join(parts)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="measure rows (all rows of the task not yet measured)")
    p.add_argument("task", choices=sorted(TASK_ROWS))
    p.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS),
                   help="the real model (default %(default)s)")
    p.add_argument("rows", nargs="*", help=f"rows (default: all not measured): {list(ROWS)}")
    p = sub.add_parser("report", help="print the markdown tables and draw the curves")
    p.add_argument("--docs", "--readme", dest="readme", action="store_true",
                   help="also write them into docs/results.md (its results block) and the demo "
                   "table into README.md (its demo block)")
    args = parser.parse_args()
    if args.command == "run":
        rows = MODELS[args.model][1].get(args.task, ())
        unknown = [r for r in args.rows if r not in rows]
        if unknown or not rows:
            sys.exit(f"unknown rows {unknown} for {args.model} on {args.task}; rows: {rows}")
        todo = args.rows or [r for r in rows if load(args.task, r, args.model) is None]
        for row in todo:
            run_row(args.task, row, args.model)
        return
    block = report()
    print(block)
    demo = demo_table()
    if args.readme:
        from readme_block import write_block

        write_block("results", block)
        if demo:
            write_block("demo", demo)


if __name__ == "__main__":
    main()
