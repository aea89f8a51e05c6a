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


def report() -> str:
    """docs/results.md's block from the stored files (`cross_model_report.report`)."""
    from cross_model_report import report as block

    return block()


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
