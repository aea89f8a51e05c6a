"""Cross-model prompt transfer between two real models with different widths and tokenizers:
SmolLM2-135M-Instruct (576 wide) and Gemma 3 270M (640 wide).

Both models get a source prompt for each of `TASKS` (the transfer experiment's recipe: 20
vectors, class-label init, 320 steps; SmolLM2's are the transfer matrix's own prompts). Then,
every projected prompt scored ON THE TARGET MODEL on its task (a seeded sample of `LIMIT`
validation examples, the same rows for every prompt of a task):

- distance: in each direction, leave-one-task-out projectors fitted on the other tasks' prompt
  pairs (the paper's flat projector, the per-vector MLP, least squares), the held-out task's
  source prompt projected; beside the target's own prompt, no prompt, a random prompt of the
  target prompts' mean norm, the flat projector fed a random array of the source prompts' mean
  norm, and the flat projector fed another task's source prompt (the next task in `TASKS`);
- task: a flat projector task-tuned on `TUNED_TASK` (the source prompt projected, the target
  model's loss back-propagated into the projector only), applied to every other task's source
  prompt, to the next task's, and to a random array: a projector that ignores its input scores
  the same on all, and its projections of different tasks are one prompt (their mean pairwise
  cosine is stored);
- init: prompt tuning of `INIT_TASK` on Gemma 3 from its class-label init (the recipe's),
  random, text, and SmolLM2's prompt projected by the held-out distance projector; two seeds,
  steps to 90% of the baseline's final gain over zero-shot.

    python benchmarks/cross_model.py run               # all of it, resumable (CPU-hours)
    python benchmarks/cross_model.py run --parts sources,distance
    python benchmarks/cross_model.py run --parts init --arms text,projected  # beside another
    python benchmarks/cross_model.py report --docs     # docs/results.md's block, stored files

Every evaluation is one JSON under `benchmarks/results/cross_model/` (a killed run continues
where it stopped); the runs (checkpoints) go to `runs/cross_model/`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from prompt_jax import transfer  # noqa: E402
from prompt_jax.transfer import SourceRecipe, read_json, write_json  # noqa: E402

MODELS = {"smollm2": "smollm2-135m-instruct", "gemma3": "gemma3-270m"}
LABELS = {"smollm2": "SmolLM2-135M", "gemma3": "Gemma 3 270M"}
DIRECTIONS = (("smollm2", "gemma3"), ("gemma3", "smollm2"))
TASKS = ("sst2", "rotten_tomatoes", "laptop", "restaurant", "trec", "tweet_emotion",
         "tweet_hate", "tweet_irony")
LIMIT = 200
TUNED_TASK = "sst2"
INIT_TASK = "laptop"
INIT_TEXT = "Is the opinion of this review about the aspect positive, negative or neutral?"
INIT_SEEDS = (0, 1)
INIT_EVAL_EVERY = 40
INIT_ARMS = (transfer.BASELINE, "random", "text", "projected")
METHODS = ("flat", "token", "linear")
# Task tuning: the paper's flat projector at its hidden width, AdamW as `prompt-jax project
# train --mode task` defaults to, the recipe's 320 steps of 8 examples.
TASK_HIDDEN = 768
TASK_OPTIMIZER = {"name": "adamw", "learning_rate": 1e-3, "weight_decay": 0.01}
OUT = HERE / "results" / "cross_model"
SOURCES = HERE / "results" / "transfer"
RUNS = HERE.parent / "runs" / "cross_model"
PARTS = ("sources", "distance", "task", "init")


def sources_dir(model: str) -> Path:
    """Where a model's source prompts are kept (shared with the transfer experiment)."""
    return SOURCES / MODELS[model]


def load(model: str):
    from prompt_jax import engine

    return engine.load_model(MODELS[model], mesh_data=1)


def train_sources(model: str, loaded=None) -> dict[str, Path]:
    """The model's source prompt of every task (trained where missing)."""
    loaded = loaded or load(model)
    return transfer.train_sources(loaded, TASKS, sources_dir(model), SourceRecipe(),
                                  runs_dir=HERE.parent / "runs" / "transfer" / MODELS[model])


def prompts_of(model: str) -> np.ndarray:
    """[N, P, d] source prompts of `TASKS` on `model`, in order."""
    from prompt_jax.prompts.files import load_prompt

    missing = [t for t in TASKS if not (sources_dir(model) / "sources" / f"{t}.json").exists()]
    if missing:
        raise FileNotFoundError(f"no {model} source prompt for {missing}: run the sources part")
    return np.stack([np.asarray(load_prompt(sources_dir(model) / "prompts" / f"{t}.npy").array,
                                np.float32) for t in TASKS])


def _norm_matched(shape, norm: float, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return x * (norm / np.linalg.norm(x))


def _mean_norm(stack: np.ndarray) -> float:
    return float(np.linalg.norm(stack.reshape(len(stack), -1), axis=-1).mean())


def score_cells(loaded, task: str, prompts: dict[str, np.ndarray | None], folder: Path
                ) -> dict[str, dict]:
    """Scores each named prompt (None = no prompt) on `task`, one JSON per prompt in `folder`
    (`<name>__<task>.json`); stored ones are read back."""
    import jax.numpy as jnp

    evaluate, results = None, {}
    for name, prompt in prompts.items():
        path = folder / f"{name}__{task}.json"
        if not path.exists():
            if evaluate is None:
                evaluate = loaded.evaluator(loaded.task(task), "validation", limit=LIMIT)
            metrics = evaluate(None if prompt is None else jnp.asarray(prompt))
            write_json(path, {"prompt": name, "task": task, **metrics})
        results[name] = read_json(path)
    return results


def distance(source: str, target: str, loaded=None) -> None:
    """Leave-one-task-out distance projectors source -> target, scored on the target."""
    from released_projectors import fit

    from prompt_jax import projectors

    loaded = loaded or load(target)
    xs, ys = prompts_of(source), prompts_of(target)
    folder = OUT / "distance" / f"{source}_to_{target}"
    random_target = transfer.random_control(dict(enumerate(ys)), seed=0)
    for i, task in enumerate(TASKS):
        print(f"[distance {source} -> {target}] {task} ({i + 1}/{len(TASKS)})", flush=True)
        keep = [j for j in range(len(TASKS)) if j != i]
        other = (i + 1) % len(TASKS)
        candidates: dict[str, np.ndarray | None] = {"own": ys[i], "none": None,
                                                    "random": random_target}
        for method in METHODS:  # fitting takes seconds; stored scores are read back
            config, params, _ = fit(method, xs[keep], ys[keep])
            candidates[method] = np.asarray(projectors.apply(config, params, xs[i]))
            if method == "flat":
                noise = _norm_matched(xs[i].shape, _mean_norm(xs), seed=i)
                candidates["flat_random_input"] = np.asarray(
                    projectors.apply(config, params, noise))
                candidates["flat_other_task"] = np.asarray(
                    projectors.apply(config, params, xs[other]))
        score_cells(loaded, task, candidates, folder)


def task_tuning(source: str, target: str, loaded=None) -> None:
    """A flat projector task-tuned on `TUNED_TASK`, applied to every task's source prompt."""
    from prompt_jax import projectors
    from prompt_jax.commands import projector_commands
    from prompt_jax.training import loop
    from prompt_jax.training.train import OptimizerConfig

    loaded = loaded or load(target)
    xs = prompts_of(source)
    folder = OUT / "task" / f"{source}_to_{target}"
    run_dir = RUNS / "task" / f"{source}_to_{target}" / TUNED_TASK
    if not (run_dir / "summary.json").exists():
        print(f"[task {source} -> {target}] tuning a projector on {TUNED_TASK}", flush=True)
        config = SourceRecipe().config(MODELS[target], TUNED_TASK, run_dir,
                                       optimizer=OptimizerConfig(**TASK_OPTIMIZER))
        source_prompt = xs[TASKS.index(TUNED_TASK)]
        projector, params = projector_commands.new_projector(
            "flat", source_prompt.shape, loaded.model.d_model, hidden=TASK_HIDDEN)
        projector_commands.task_tune(config, projector, params, source_prompt, loaded=loaded,
                                     resume=loop.holds_run(run_dir),
                                     metadata={"source_backbone": MODELS[source],
                                               "source_prompt": f"{TUNED_TASK}.npy"})
    saved = projectors.load_projector(run_dir / "projector.safetensors")
    projected = np.stack([saved.apply(x) for x in xs])
    noise = saved.apply(_norm_matched(xs[0].shape, _mean_norm(xs), seed=0))
    for i, task in enumerate(TASKS):
        print(f"[task {source} -> {target}] {task}", flush=True)
        score_cells(loaded, task, {"projected": projected[i],
                                   "other_task": projected[(i + 1) % len(TASKS)],
                                   "random_input": noise, "none": None}, folder)
    others = [i for i, t in enumerate(TASKS) if t != TUNED_TASK]
    write_json(folder / "projections.json",
               {"tuned_task": TUNED_TASK, "tasks": [TASKS[i] for i in others],
                "mean_pairwise_cosine": _mean_pairwise_cosine(projected[others]),
                "source_mean_pairwise_cosine": _mean_pairwise_cosine(xs[others])})


def _mean_pairwise_cosine(stack: np.ndarray) -> float:
    flat = stack.reshape(len(stack), -1)
    flat = flat / np.linalg.norm(flat, axis=-1, keepdims=True)
    cos = flat @ flat.T
    return float(cos[~np.eye(len(stack), dtype=bool)].mean())


def init(source: str = "smollm2", target: str = "gemma3", loaded=None,
         arms: Sequence[str] | None = None) -> None:
    """Prompt tuning of `INIT_TASK` on the target from several starting prompts.

    `arms` trains only those (all of `INIT_ARMS` by default), so that processes can share the
    runs; the summary and plot are written once every arm's runs are stored.
    """
    from released_projectors import fit

    from prompt_jax import projectors

    loaded = loaded or load(target)
    xs, ys = prompts_of(source), prompts_of(target)
    i = TASKS.index(INIT_TASK)
    keep = [j for j in range(len(TASKS)) if j != i]
    config, params, _ = fit("flat", xs[keep], ys[keep])
    starts = {transfer.BASELINE: None, "random": "random_uniform",
              "text": f"text:{INIT_TEXT}",
              "projected": np.asarray(projectors.apply(config, params, xs[i]))}
    out = OUT / "init" / f"{source}_to_{target}"
    zero_path = out / "init" / INIT_TASK / "zero_shot.json"
    if not zero_path.exists():
        write_json(zero_path, loaded.evaluator(loaded.task(INIT_TASK), "validation",
                                               limit=LIMIT)(None))
    settings = dict(recipe=SourceRecipe(), seeds=INIT_SEEDS, eval_every=INIT_EVAL_EVERY,
                    eval_limit=LIMIT, runs_dir=RUNS / "init" / f"{source}_to_{target}")
    transfer.init_runs(loaded, INIT_TASK, {a: starts[a] for a in arms or INIT_ARMS}, out,
                       **settings)
    waiting = [a for a in INIT_ARMS for seed in INIT_SEEDS
               if not transfer.init_run_path(out, INIT_TASK, a, seed).exists()]
    if waiting:
        print(f"[init {source} -> {target}] the summary waits for {sorted(set(waiting))}",
              flush=True)
        return
    results = transfer.init_runs(loaded, INIT_TASK, starts, out, **settings)  # all stored
    zero = read_json(zero_path)["accuracy"]
    transfer.plot_init_curves(results, zero, out / f"init_{INIT_TASK}.png",
                              f"{LABELS[target]}: {INIT_TASK}, from each starting prompt")
    write_json(out / "summary.json", {"target": INIT_TASK, "zero_shot": zero,
                                      "eval_every": INIT_EVAL_EVERY,
                                      "arms": transfer.init_summary(results, zero)})


def run(parts, arms: Sequence[str] | None = None) -> None:
    """The parts in order, each model loaded once per part that scores on it (`arms`: the
    init part's arms to train, default all)."""
    if "sources" in parts:
        for model in MODELS:
            train_sources(model)
    for source, target in DIRECTIONS:
        todo = [p for p in ("distance", "task") if p in parts]
        if not todo and not ("init" in parts and target == "gemma3"):
            continue
        loaded = load(target)
        if "distance" in parts:
            distance(source, target, loaded)
        if "task" in parts:
            task_tuning(source, target, loaded)
        if "init" in parts and (source, target) == ("smollm2", "gemma3"):
            init(source, target, loaded, arms)


# --------------------------------------------------------------------------------------------
# The docs block (docs/results.md), from the stored files
# --------------------------------------------------------------------------------------------


def _cells(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {tuple(p.stem.split("__")): read_json(p) for p in folder.glob("*__*.json")}


def _sizes(cells) -> str:
    """The sample sizes behind a table's cells: '200 examples per cell' or the range."""
    n = sorted({c["examples"] for c in cells.values() if "examples" in c})
    return "?" if not n else str(n[0]) if len(n) == 1 else f"{n[0]} to {n[-1]}"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def distance_table(source: str, target: str) -> list[str]:
    cells = _cells(OUT / "distance" / f"{source}_to_{target}")
    if not cells:
        return []
    rows = [("own", f"{LABELS[target]}'s own prompt"), ("none", "no prompt (template alone)"),
            ("random", "random prompt, matched norm"),
            ("flat", "paper's projector (flat)"), ("token", "per-vector MLP"),
            ("linear", "least-squares linear"),
            ("flat_random_input", "flat projector fed a random array"),
            ("flat_other_task", "flat projector fed the next task's prompt")]
    head = (f"| {LABELS[source]} -> {LABELS[target]} | " + " | ".join(TASKS)
            + " | mean | mean relative to own |")
    lines = [head, "|" + "---|" * (len(TASKS) + 3)]
    own = _scores(cells, "own")
    for key, label in rows:
        values = _scores(cells, key)
        done = None not in values and None not in own
        mean = float(np.mean(values)) if done else None
        relative = float(np.mean([v / o for v, o in zip(values, own, strict=True)])) if done \
            else None
        lines.append(f"| {label} | " + " | ".join(_pct(v) for v in values)
                     + f" | {_pct(mean)} | {_pct(relative)} |")
    return [f"Scored on a seeded sample of {_sizes(cells)} validation examples per cell (the "
            "same rows for every prompt of a task), one projector fit and one source prompt "
            "per task:", "", *lines, *_distance_reading(cells)]


def _scores(cells, key: str) -> list[float | None]:
    """`key`'s accuracy on each of `TASKS` (None where not measured)."""
    return [cells.get((key, t), {}).get("accuracy") for t in TASKS]


def _wins(cells, key: str, against: str) -> str:
    """'k of N' tasks where `key` scores above `against`."""
    pairs = [(a, b) for a, b in zip(_scores(cells, key), _scores(cells, against), strict=True)
             if a is not None and b is not None]
    return f"{sum(a > b for a, b in pairs)} of {len(pairs)}"


def _distance_reading(cells) -> list[str]:
    """One computed sentence per projector: how often the held-out projection beats the
    controls."""
    if any(None in _scores(cells, k) for k in ("none", "random", "flat")):
        return []
    lines = ["", "Held-out projections, tasks where each beats a control (no prompt / random "
                 "prompt / the flat projector fed a random array / fed the next task's prompt):"]
    for key, label in (("flat", "flat"), ("token", "per-vector"), ("linear", "linear")):
        lines.append(f"- {label}: {_wins(cells, key, 'none')} / {_wins(cells, key, 'random')} "
                     f"/ {_wins(cells, key, 'flat_random_input')} / "
                     f"{_wins(cells, key, 'flat_other_task')}")
    return lines


def task_table(source: str, target: str) -> list[str]:
    folder = OUT / "task" / f"{source}_to_{target}"
    cells = _cells(folder)
    if not cells or not (folder / "projections.json").exists():
        return []
    info = read_json(folder / "projections.json")
    # The random prompt of matched norm is the distance part's (the same prompt and rows).
    distance_cells = _cells(OUT / "distance" / f"{source}_to_{target}")
    cells.update({k: v for k, v in distance_cells.items() if k[0] == "random"})
    lines = [f"One projector task-tuned on {TUNED_TASK}; {_sizes(cells)} validation examples "
             "per cell:", "",
             f"| {LABELS[source]} -> {LABELS[target]}, tuned on {TUNED_TASK} | "
             + " | ".join(TASKS) + " |", "|" + "---|" * (len(TASKS) + 1)]
    for key, label in (("projected", "the task's source prompt projected"),
                       ("other_task", "the next task's source prompt projected"),
                       ("random_input", "a random array projected"),
                       ("random", "random prompt, matched norm"),
                       ("none", "no prompt")):
        lines.append(f"| {label} | " + " | ".join(_pct(v) for v in _scores(cells, key)) + " |")
    unseen = [t for t in TASKS if t != TUNED_TASK]
    unseen_cells = {k: v for k, v in cells.items() if k[1] in unseen}
    lines += ["", f"On the {len(unseen)} tasks other than {TUNED_TASK}, the projected source "
                  f"prompt beats the projected random array on "
                  f"{_wins(unseen_cells, 'projected', 'random_input')}, the next task's "
                  f"prompt projected on {_wins(unseen_cells, 'projected', 'other_task')} and "
                  f"no prompt on {_wins(unseen_cells, 'projected', 'none')}. Mean pairwise "
                  f"cosine of their projections: {info['mean_pairwise_cosine']:.4f} (of their "
                  f"source prompts: {info['source_mean_pairwise_cosine']:.4f})."]
    return lines


def init_table(source: str = "smollm2", target: str = "gemma3") -> list[str]:
    path = OUT / "init" / f"{source}_to_{target}" / "summary.json"
    if not path.exists():
        return []
    summary = read_json(path)
    zero = path.parent / "init" / summary["target"] / "zero_shot.json"
    examples = read_json(zero)["examples"] if zero.exists() else "?"
    lines = [f"{LABELS[target]}, {summary['target']} (zero-shot {_pct(summary['zero_shot'])}; "
             f"every score on the same {examples} validation examples, {len(INIT_SEEDS)} seeds "
             "per start):",
             "", "| start | accuracy at step 0 (per seed) | final accuracy (mean of seeds) | "
             "steps to 90% of the gain (per seed) | speedup |", "|---|---|---|---|---|"]
    for arm in summary["arms"]:
        firsts = ", ".join(_pct(read_json(transfer.init_run_path(
            path.parent, summary["target"], arm["arm"], seed))["curve"][0][1])
            for seed in INIT_SEEDS)
        steps = ", ".join("-" if s is None else str(s) for s in arm["steps"])
        lines.append(f"| {arm['arm']} | {firsts} | {_pct(arm['final'])} | {steps} | "
                     f"{transfer.speedup_text(arm)} |")
    from readme_block import link

    plot = link(path.parent / f"init_{summary['target']}.png")
    return lines + _init_reading(summary) + [
        "", f"![{LABELS[target]} {summary['target']}, from each starting prompt]({plot})"]


def _init_reading(summary: dict[str, Any]) -> list[str]:
    """The projected start against each other start: faster or slower to 90% of the gain by
    at least one evaluation interval (the resolution of a steps count), and the final gap."""
    arms = {a["arm"]: a for a in summary["arms"]}
    projected, interval = arms.get("projected"), summary["eval_every"]
    if projected is None:
        return []
    parts = []
    for name, arm in arms.items():
        if name == "projected":
            continue
        a, b = projected["mean_steps"], arm["mean_steps"]
        pace = ("neither start reached 90% of the gain on every seed" if a is None and b is None
                else "projected did not reach 90% of the gain on every seed" if a is None
                else "it did not reach 90% of the gain on every seed" if b is None
                else "projected faster" if b - a >= interval
                else "projected slower" if a - b >= interval
                else "within one evaluation interval")
        gap = 100 * (projected["final"] - arm["final"])
        parts.append(f"{name}: {pace}, final {gap:+.1f} pts")
    return ["", f"The projected start against each other start (steps counted every {interval}"
                f"): " + "; ".join(parts) + "."]


def report() -> str:
    parts = []
    for source, target in DIRECTIONS:
        parts.append(distance_table(source, target))
    for source, target in DIRECTIONS:
        parts.append(task_table(source, target))
    parts.append(init_table())
    measured = [p for p in parts if p]
    if not measured:
        return ("Not measured yet: run `python benchmarks/cross_model.py run` (CPU-hours), "
                "then `python benchmarks/cross_model.py report --docs`.")
    missing = [name for name, p in zip(
        ["distance SmolLM2 -> Gemma", "distance Gemma -> SmolLM2", "task SmolLM2 -> Gemma",
         "task Gemma -> SmolLM2", "init"], parts, strict=True) if not p]
    tail = [f"Not measured yet: {', '.join(missing)}."] if missing else []
    import results

    when = f"Results {results.stored(sorted(OUT.rglob('*.json')))}."
    return "\n\n".join([when] + ["\n".join(p) for p in measured] + tail)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="measure (resumable)")
    r.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {PARTS}")
    r.add_argument("--arms", default=",".join(INIT_ARMS),
                   help=f"the init part's arms to train, comma-separated: {INIT_ARMS} (split "
                        "them across processes; the last one to finish writes the summary)")
    s = sub.add_parser("report", help="print the tables from the stored files")
    s.add_argument("--docs", "--readme", dest="readme", action="store_true",
                   help="also write them into docs/results.md")
    args = p.parse_args()
    if args.command == "run":
        parts = args.parts.split(",")
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            sys.exit(f"unknown parts {unknown}; use {PARTS}")
        arms = args.arms.split(",")
        unknown = sorted(set(arms) - set(INIT_ARMS))
        if unknown:
            sys.exit(f"unknown arms {unknown}; use {INIT_ARMS}")
        run(parts, arms)
    block = report()
    print(block)
    if args.command == "report" and args.readme:
        from readme_block import write_block

        write_block("cross_model", block)


if __name__ == "__main__":
    main()
