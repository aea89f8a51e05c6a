"""Transfer initialization: a target prompt trained from a source prompt, a SPoT-style mix of
sources, or the recipe's own init, and the steps each start takes to reach the baseline's
gain over zero-shot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prompt_jax import engine
from prompt_jax.training import run
from prompt_jax.transfer.runs import SourceRecipe, read_json, train_run, write_json

BASELINE = "baseline"  # the init arm that starts from the recipe's own init
DEFAULT_RECIPE = SourceRecipe()


def spot_mix(sources: Mapping[str, np.ndarray], indicator: Mapping[str, float], k: int
             ) -> tuple[np.ndarray, dict[str, float]]:
    """A SPoT-style starting prompt (Vu et al. 2022): the k sources the indicator ranks highest,
    averaged with weights proportional to their indicator values (equal weights when those
    are not all positive).

    Returns:
      (the mixed [P, H] prompt, source -> weight).
    """
    ranked = sorted((name for name in indicator if name in sources),
                    key=lambda name: -indicator[name])[:k]
    if len(ranked) < k:
        raise ValueError(f"k={k} but only {len(ranked)} sources have an indicator value")
    values = np.array([indicator[n] for n in ranked], np.float64)
    weights = values / values.sum() if (values > 0).all() else np.full(k, 1.0 / k)
    mixed = sum(w * sources[n].astype(np.float64) for n, w in zip(ranked, weights, strict=True))
    return np.asarray(mixed, np.float32), dict(zip(ranked, weights.tolist(), strict=True))


def steps_to_fraction(curve: Sequence[tuple[int, float]], zero_shot: float, final: float,
                      fraction: float = 0.9) -> int | None:
    """The first step whose score has `fraction` of the gain `final - zero_shot`.

    The yardstick is the gain over zero-shot, not the score itself: on tasks where the
    template alone is already near the final score, "90% of the final score" holds at step 0
    for every start and says nothing. None when the curve never gets there (or there is no
    gain to reach).
    """
    gain = final - zero_shot
    if gain <= 0:
        return None
    for step, score in curve:
        if score - zero_shot >= fraction * gain:
            return int(step)
    return None


def _curve(run_dir: Path, metric: str) -> list[list]:
    """[[step, score], ...] of a run's evaluations (lists, as JSON reads them back)."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [[r["step"], r[metric]] for r in rows if r["split"] == "eval"]


def init_run_name(arm: str, seed: int) -> str:
    """The file and folder stem of one (arm, seed) of `init_runs`."""
    return f"{arm.replace(':', '-')}__seed{seed}"


def init_run_path(out_dir: str | Path, target: str, arm: str, seed: int) -> Path:
    """The result file `init_runs` writes for one (arm, seed) under `out_dir`."""
    return Path(out_dir) / "init" / target / f"{init_run_name(arm, seed)}.json"


def init_runs(loaded: engine.LoadedModel, target: str,
              arms: Mapping[str, np.ndarray | str | None],
              out_dir: str | Path, *, recipe: SourceRecipe = DEFAULT_RECIPE,
              seeds: Sequence[int] = (0, 1), eval_every: int = 40, eval_limit: int = 300,
              runs_dir: str | Path | None = None, metric: str = "accuracy"
              ) -> list[dict[str, Any]]:
    """Trains the target's prompt from each starting point, with each seed.

    Each (arm, seed) writes `out_dir/init/<target>/<arm>__seed<seed>.json`: the curve of
    `metric` on a seeded sample of `eval_limit` validation examples every `eval_every` steps
    (step 0 = the starting prompt itself) and the final score. Finished runs are read back.

    Args:
      loaded: the model.
      target: the task trained.
      arms: arm name -> starting [P, H] prompt; None for the recipe's own init; or another
        init by name (`prompts.INITS`; `text:<words>` for the text init).
      out_dir: where the results go.
      recipe: steps, optimizer and batch of every run (its seed is replaced by each seed).
      seeds: one run per seed per arm (the seed orders the batches and draws the init).
      eval_every: steps between evaluations.
      eval_limit: examples per evaluation.
      runs_dir: the runs' folders (default `out_dir/runs`).
      metric: the score of the curves.
    """
    runs_dir = Path(runs_dir) if runs_dir else Path(out_dir) / "runs"
    results = []
    for arm, start in arms.items():
        for seed in seeds:
            path = init_run_path(out_dir, target, arm, seed)
            if path.exists():
                results.append(_stored_run(path, recipe.steps, eval_every, eval_limit))
                continue
            print(f"[init {target}] {arm}, seed {seed}", flush=True)
            folder = runs_dir / "init" / target / init_run_name(arm, seed)
            overrides = dict(seed=seed, eval_every=eval_every, eval_limit=eval_limit,
                             checkpoint_every=eval_every)
            if isinstance(start, str):
                init, _, words = start.partition(":")
                overrides.update(init=init, init_text=words)
            elif start is not None:
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / "init_prompt.npy", start)
                overrides.update(init="from_array", init_prompt=str(folder / "init_prompt.npy"),
                                 prompt_length=start.shape[0])
            config = recipe.config(loaded.name, target, folder, **overrides)
            task = run.task_for(loaded, config)
            first = run.evaluator(loaded, task, config)(
                run.initial_trainable(loaded, task, config))
            summary = train_run(loaded, config)
            curve = [[0, first[metric]]] + _curve(folder, metric)
            write_json(path, {"target": target, "arm": arm, "seed": seed, "curve": curve,
                              "final": curve[-1][1], "metric": metric, "eval_limit": eval_limit,
                              "steps": recipe.steps, "eval_every": eval_every,
                              "train_seconds": summary["train_seconds"]})
            results.append(read_json(path))  # as a resumed call reads it, provenance included
    return results


def stored_init_runs(out_dir: str | Path, target: str, seeds: Sequence[int], *, steps: int,
                     eval_every: int, eval_limit: int, first: Sequence[str] = ()
                     ) -> list[dict[str, Any]]:
    """Every stored run of `target` under `out_dir` with one of `seeds`, whichever call trained
    it (arms split over several processes each store their own), refused as `_stored_run`
    refuses a run of another recipe. The arms named in `first` come first, in that order, then
    the others by file name.
    """
    folder = Path(out_dir) / "init" / target
    runs = []
    for path in sorted(folder.glob("*__seed*.json")):
        seed = path.stem.rpartition("__seed")[2]
        if seed.isdigit() and int(seed) in seeds:
            runs.append(_stored_run(path, steps, eval_every, eval_limit))
    order = {arm: i for i, arm in enumerate(dict.fromkeys(first))}
    return sorted(runs, key=lambda r: (order.get(r["arm"], len(order)), r["arm"], r["seed"]))


def _stored_run(path: Path, steps: int, eval_every: int, eval_limit: int) -> dict[str, Any]:
    """A finished run read back, refused when it was trained or scored otherwise than this
    call asks (its steps, evaluation interval and examples, read from its curve where an older
    file does not state them): a curve of another recipe is not this study's."""
    run = read_json(path)
    curve_steps = [s for s, _ in run["curve"]]
    stored = {"steps": run.get("steps", curve_steps[-1]),
              "eval_every": run.get("eval_every", curve_steps[1] if len(curve_steps) > 1 else 0),
              "eval_limit": run["eval_limit"]}
    wanted = {"steps": steps, "eval_every": eval_every, "eval_limit": eval_limit}
    if stored != wanted:
        differ = ", ".join(f"{k} {stored[k]} (asked {wanted[k]})" for k in wanted
                           if stored[k] != wanted[k])
        raise ValueError(f"{path} is a run with {differ}: use another results folder, or "
                         "remove the target's init files to run it again")
    return run


def init_summary(results: Sequence[dict[str, Any]], zero_shot: float,
                 fraction: float = 0.9) -> list[dict[str, Any]]:
    """Per arm: mean final score over seeds, steps to `fraction` of the baseline's final gain
    over zero-shot (per seed, and their mean), and the speedup over the baseline."""
    arms = list(dict.fromkeys(r["arm"] for r in results))
    if BASELINE not in arms:
        raise ValueError(f"no {BASELINE!r} arm among {arms}: the speedups are relative to it")
    finals = {a: [r["final"] for r in results if r["arm"] == a] for a in arms}
    reference = float(np.mean(finals[BASELINE]))
    rows = []
    for arm in arms:
        steps = [steps_to_fraction(r["curve"], zero_shot, reference, fraction)
                 for r in results if r["arm"] == arm]
        reached = [s for s in steps if s is not None]
        rows.append({"arm": arm, "final": float(np.mean(finals[arm])),
                     "finals": finals[arm], "steps": steps,
                     "mean_steps": float(np.mean(reached)) if len(reached) == len(steps)
                     else None})
    base = next(r["mean_steps"] for r in rows if r["arm"] == BASELINE)
    for r in rows:
        r["speedup"] = (base / r["mean_steps"] if base and r["mean_steps"] else None)
    return rows


def speedup_text(arm: Mapping[str, Any]) -> str:
    """An `init_summary` row's speedup for a table: "1.25x", "there at step 0" (a start that
    already holds the gain: the speedup over 0 steps is unbounded) or "-" (a seed never got
    there)."""
    if arm["mean_steps"] == 0:
        return "there at step 0"
    return "-" if arm["speedup"] is None else f"{arm['speedup']:.2f}x"

