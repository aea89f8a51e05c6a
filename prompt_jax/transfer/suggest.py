"""`prompt-jax transfer suggest`: which saved prompt to start a task from, and how much it helps.

Given a task (usually a file task) and a library of saved prompts, it

1. trains a brief prompt on the task's train split (the brief recipe: 40 steps by default);
2. ranks the library by an indicator between the brief prompt and each library prompt: the one
   the stored retrieval benchmark of this model finds best at top-1, or the one asked for;
3. scores the top k, the template alone (no prompt) and a SPoT mix of the top k zero-shot on a
   seeded sample of the task's validation rows, each accuracy with its 95% Wilson interval and
   each prompt's difference from the template paired on the same rows (`prompt_jax.stats`);
4. writes `suggestion.json`, the best start as `start.npy` (+ sidecar), the task's definition
   as `task_spec.json`, and the `prompt-jax train` command that starts from it.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from prompt_jax import engine, provenance, stats
from prompt_jax.tasks import task_spec
from prompt_jax.transfer.indicators import EMBEDDING_INDICATORS, similarity_to
from prompt_jax.transfer.init import spot_mix
from prompt_jax.transfer.library import read_library
from prompt_jax.transfer.matrix import NO_PROMPT, scored_split
from prompt_jax.transfer.runs import SourceRecipe, load_prompts, train_run

DEFAULT_INDICATOR = "E_cos"  # where no retrieval benchmark of the model is stored
SPOT = "spot_mix"
BRIEF = SourceRecipe(steps=40)  # the brief prompt's recipe
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "transfer"


def stored_retrieval(model: str) -> Path:
    """Where this repository keeps the retrieval benchmark of `model` (`transfer retrieve`)."""
    return RESULTS / Path(model).name / "retrieval.json"


def best_indicator(retrieval: Path | None) -> tuple[str, str]:
    """(indicator, why): the indicator with the highest stored top-1 hit rate (top-3 breaks a
    tie) in a `retrieval.json`, or `DEFAULT_INDICATOR` when there is none, said in `why`."""
    if retrieval is None or not retrieval.is_file():
        return DEFAULT_INDICATOR, (f"no stored retrieval benchmark for this model "
                                   f"({retrieval}); ranked by {DEFAULT_INDICATOR}")
    rates = json.loads(retrieval.read_text())["accuracy"]
    name = max(rates, key=lambda k: (rates[k].get("1", 0.0), rates[k].get("3", 0.0)))
    return name, (f"the best top-1 indicator of the stored retrieval benchmark "
                  f"{_shown(retrieval)} ({rates[name]['1']:.0%} of its targets)")


def _shown(path: Path) -> str:
    """`path` as a reader finds it: inside this repository, relative to its root."""
    try:
        return str(path.resolve().relative_to(RESULTS.parents[2]))
    except ValueError:
        return str(path)


def _estimate(e: stats.Estimate) -> dict[str, float]:
    return {"value": e.value, "low": e.low, "high": e.high, "n": e.n}


def score_candidates(loaded: engine.LoadedModel, task: str, candidates: Mapping[str, Any], *,
                     sample: int, seed: int) -> tuple[str, dict[str, dict]]:
    """Each candidate prompt ([P, H], or None for the template alone) zero-shot on the same
    seeded sample of the task's validation rows: accuracy with its Wilson interval, and the
    paired difference from the template alone (`NO_PROMPT`). Returns (split, name -> scores)."""
    handle = loaded.task(task)
    split = scored_split(task, "validation", handle.data or None)
    lengths = [p.shape[0] for p in candidates.values() if p is not None]
    evaluate = loaded.evaluator(handle, split, limit=sample, seed=seed, per_row=True,
                                prompt_length=lengths[0] if lengths else 0)
    rows = {name: np.asarray(evaluate(None if p is None else jnp.asarray(p))["correct"], bool)
            for name, p in candidates.items()}
    out = {}
    for name, correct in rows.items():
        entry = {"accuracy": _estimate(stats.accuracy(correct)),
                 "correct": correct.astype(int).tolist()}
        if name != NO_PROMPT:
            d = stats.paired_difference(correct, rows[NO_PROMPT], seed=seed)
            entry["vs_template"] = {"difference": _estimate(d.difference), "a_only": d.a_only,
                                    "b_only": d.b_only, "p_value": d.p_value,
                                    "beyond_noise": d.beyond_noise}
        out[name] = entry
    return split, out


def start_reading(scores: Mapping[str, dict]) -> str:
    """'X of Y starts beyond noise (A above the template, B below), Z within'."""
    vs = [s["vs_template"] for n, s in scores.items() if n != NO_PROMPT]
    above = sum(v["beyond_noise"] and v["difference"]["value"] > 0 for v in vs)
    below = sum(v["beyond_noise"] and v["difference"]["value"] < 0 for v in vs)
    return (stats.reading([v["beyond_noise"] for v in vs], "starts")
            + f" ({above} above the template, {below} below)")


def chosen_text(result: Mapping[str, Any]) -> str:
    """The suggested start with what its interval says: a start within noise of the template
    is the best point estimate, not a start shown to help."""
    vs = result["scores"][result["chosen"]]["vs_template"]
    if not vs["beyond_noise"]:
        return (f"{result['chosen']} (the highest accuracy of the starts, but within noise of "
                "the template: not shown to help)")
    side = "above" if vs["difference"]["value"] > 0 else "below"
    return f"{result['chosen']} ({side} the template beyond noise)"


def _verdict(name: str, scores: dict) -> str:
    vs = scores["vs_template"]
    d = stats.Estimate(**{k: vs["difference"][k] for k in ("value", "low", "high", "n")})
    where = ("beyond noise" if vs["beyond_noise"] else "within noise")
    return f"{name}: {stats.Estimate(**scores['accuracy']).text()} vs the template, " \
           f"{100 * d.value:+.1f} points [{100 * d.low:+.1f}, {100 * d.high:+.1f}] ({where})"


def suggest(loaded: engine.LoadedModel, task: str, library_dir: str | Path, out: str | Path, *,
            brief: SourceRecipe = BRIEF, indicator: str | None = None,
            top_k: int = 3, sample: int = 500, seed: int = 0,
            projector: str | Path | None = None, retrieval: Path | None = None,
            n_inputs: int = 16) -> dict[str, Any]:
    """Suggests the library prompt to start `task` from (see the module docstring).

    Args:
      loaded: the model.
      task: a registered task (a file task is made again from its definition later).
      library_dir: the folder of saved prompts ranked.
      out: where suggestion.json, start.npy (+ .json), task_spec.json and the brief run go.
      brief: the brief prompt's recipe (its length is the length library prompts are fitted
        to).
      indicator: rank by this (None: `best_indicator` of the stored retrieval benchmark).
      top_k: library prompts scored (and mixed).
      sample: validation rows scored (a seeded sample; 0 = all).
      seed: the sample's seed and the bootstrap's.
      projector: maps library prompts of another width to the model's.
      retrieval: the retrieval benchmark to read (default: `stored_retrieval(model)`).

    Returns:
      What suggestion.json holds.
    """
    out = Path(out)
    timings = {}
    started = time.perf_counter()
    library = read_library(library_dir, loaded.model.d_model, brief.prompt_length,
                           projector=projector)
    if len(library) < top_k:
        raise ValueError(f"{library_dir}: {len(library)} prompts, fewer than --top_k {top_k}")
    prompts = {item.name: item.array for item in library}
    t0 = time.perf_counter()
    summary = train_run(loaded, brief.config(loaded.name, task, out / "brief_run"))
    own = load_prompts(loaded, {task: out / "brief_run" / "prompt.npy"})[task]
    timings["brief_training"] = time.perf_counter() - t0
    if indicator:
        why = "asked for (--indicator)"
    else:
        indicator, why = best_indicator(retrieval or stored_retrieval(loaded.name))
    t0 = time.perf_counter()
    values = similarity_to(loaded, prompts, own, task, indicator, n_inputs=n_inputs)
    timings["ranking"] = time.perf_counter() - t0
    ranked = sorted(values, key=lambda n: -values[n])
    mix, weights = spot_mix(prompts, values, top_k)
    candidates = {NO_PROMPT: None, **{n: prompts[n] for n in ranked[:top_k]}, SPOT: mix}
    t0 = time.perf_counter()
    split, scores = score_candidates(loaded, task, candidates, sample=sample, seed=seed)
    timings["scoring"] = time.perf_counter() - t0
    starts = [n for n in candidates if n != NO_PROMPT]
    chosen = max(starts, key=lambda n: scores[n]["accuracy"]["value"])
    by_name = {item.name: item for item in library}
    start_path = out / "start.npy"
    from prompt_jax.prompts.files import save_prompt

    spec = task_spec.definition(task)
    save_prompt(candidates[chosen], start_path, format="prompt_jax", overwrite=True, metadata={
        "backbone": loaded.model.family, "model": loaded.name, "task": task,
        "init": "suggested", "suggested": chosen,
        "sources": weights if chosen == SPOT else {chosen: 1.0},
        **({task_spec.SIDECAR_KEY: spec} if spec else {})})
    task_flag = ["--task", task]
    if task_spec.write_spec(task, out):
        task_flag = ["--task_spec", str(out / task_spec.SPEC_FILE)]
    command = shlex.join(["prompt-jax", "train", "--model", loaded.name, *task_flag,
                          "--init", "from_array", "--init_prompt", str(start_path),
                          "--prompt_length", str(brief.prompt_length),
                          "--output_dir", str(out / "train")])
    timings["total"] = time.perf_counter() - started
    result = {
        "task": task, "model": loaded.name, "library": str(library_dir),
        "indicator": indicator, "indicator_why": why,
        "ranking": [{"name": n, "value": values[n], "task": by_name[n].task,
                     "handling": by_name[n].handling} for n in ranked],
        "spot_weights": weights, "split": split, "sample": sample, "seed": seed,
        "scores": scores, "chosen": chosen, "start": str(start_path), "command": command,
        "reading": start_reading(scores),
        "brief": {"recipe": dataclasses.asdict(brief), "final": summary.get("final")},
        "seconds": timings,
    }
    provenance.write_result(out / "suggestion.json", result)
    return result


def report(result: Mapping[str, Any]) -> str:
    """The suggestion in a few lines, for the terminal."""
    lines = [f"ranked {len(result['ranking'])} library prompts by {result['indicator']} "
             f"({result['indicator_why']}):"]
    for row in result["ranking"]:
        lines.append(f"  {row['name']:<24} {row['value']:+.4f}  task {row['task'] or '?'}; "
                     f"{row['handling']}")
    n = result["scores"][NO_PROMPT]["accuracy"]["n"]
    lines.append(f"zero-shot on {n} {result['split']} rows of {result['task']} (95% "
                 "intervals; differences paired on the same rows):")
    template = stats.Estimate(**result["scores"][NO_PROMPT]["accuracy"])
    lines.append(f"  template alone: {template.text()}")
    for name, scores in result["scores"].items():
        if name != NO_PROMPT:
            lines.append("  " + _verdict(name, scores))
    lines += [f"{result['reading']}; the best start: {chosen_text(result)} -> {result['start']}",
              "train from it:", "  " + result["command"],
              "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items())]
    return "\n".join(lines)


def main(loaded: engine.LoadedModel, task: str | None, args, *, recipe: SourceRecipe,
         brief: SourceRecipe) -> dict[str, Any]:
    """The `transfer suggest` action (its flags in `commands.transfer_commands`)."""
    if not task:
        raise ValueError("transfer suggest needs a task: --task_file (with its task flags) or "
                         "--task_spec")
    if not args.prompts:
        raise ValueError("transfer suggest needs --prompts (the library of saved prompts)")
    if args.indicator and args.indicator not in EMBEDDING_INDICATORS \
            and not args.indicator.startswith("ON_"):
        raise ValueError(f"unknown --indicator {args.indicator!r}")
    result = suggest(loaded, task, args.prompts, args.out, brief=brief, indicator=args.indicator,
                     top_k=args.top_k, sample=args.sample, seed=recipe.seed,
                     projector=args.projector,
                     retrieval=Path(args.retrieval) if args.retrieval else None,
                     n_inputs=args.n_inputs)
    print(report(result))
    return result
