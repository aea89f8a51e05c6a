"""`prompt-jax transfer init` and `domain-shift`: the training studies of a transfer experiment
(transfer-initialized runs of a target; a source's prompt against model tuning across domains),
over the folder `transfer_commands` describes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prompt_jax.commands.transfer_commands import (
    _cells,
    _init_arms,
    _prompt_files,
    _source_names,
)

if TYPE_CHECKING:
    from prompt_jax import engine
    from prompt_jax.transfer import SourceRecipe


def init(loaded: engine.LoadedModel, target: str, arms: Sequence[str], out: Path, *,
         recipe: SourceRecipe, seeds: Sequence[int], eval_every: int, eval_limit: int,
         brief: SourceRecipe, runs: Path | None = None, n_inputs: int = 16) -> dict:
    """Transfer-initialized training of `target` (see `transfer.init_runs`); arms are
    `baseline` (the recipe's init), another init by name (`random_uniform`, `sampled_vocab`;
    `text:<words>` is stored as arm `text` with its words in the notes), `source:<task>`,
    `source:best` (the best other source on the target in the matrix, a source sharing its
    texts left out) and `spot:<indicator>:<k>` (the top-k sources by the indicator against a
    briefly trained target prompt)."""
    import numpy as np

    from prompt_jax import transfer

    sources = [s for s in _source_names(out) if s != target]
    prompts = transfer.load_prompts(loaded, _prompt_files(out, sources))
    starts: dict[str, np.ndarray | str | None] = {}
    init_arms = _init_arms()
    notes = {}
    for arm in arms:
        kind, _, rest = arm.partition(":")
        if arm == transfer.BASELINE:
            starts[arm] = None
        elif kind == "text":  # stored as arm "text", its words in the notes
            if "text" in starts:
                raise ValueError("one text:<words> arm per study (its files are named 'text')")
            starts["text"], notes["text"] = arm, rest
        elif kind in init_arms:
            starts[arm] = arm  # another init by name, e.g. random_uniform
        elif kind == "source":
            name = rest
            if rest == "best":
                names, targets, score, _ = transfer.matrix_arrays(_cells(out))
                col = targets.index(target)
                ranked = sorted((s for s in sources if not transfer.shares_text(s, target)),
                                key=lambda s: -score[names.index(s), col])
                name = ranked[0]
                notes[arm] = name
            starts[arm] = prompts[name]
        elif kind == "spot":
            indicator, _, k = rest.partition(":")
            brief_file = transfer.train_sources(loaded, [target], out / "brief", brief,
                                                runs_dir=(runs or out / "runs") / "brief")
            own = transfer.load_prompts(loaded, brief_file)[target]
            sims = transfer.similarity_to(loaded, prompts, own, target, indicator,
                                          n_inputs=n_inputs)
            starts[arm], notes[arm] = transfer.spot_mix(prompts, sims, int(k or 3))
        else:
            raise ValueError(f"unknown arm {arm!r}: baseline, {', '.join(init_arms)}, "
                             "source:<task>, source:best or spot:<indicator>:<k>")
    zero_path = out / "init" / target / "zero_shot.json"
    if not zero_path.exists():
        task = loaded.task(target)
        zero = loaded.evaluator(task, "validation", limit=eval_limit)(None)
        transfer.write_json(zero_path, zero)
    zero = json.loads(zero_path.read_text())["accuracy"]
    # Arms split over several processes each store their runs; the summary is built from every
    # stored run of the target (the baseline, then this call's arms first), so the last
    # process to finish writes it whole. The speedups are relative to the baseline: no
    # summary before its runs are in.
    baseline_files = [transfer.init_run_path(out, target, transfer.BASELINE, s) for s in seeds]
    if transfer.BASELINE not in starts and not all(p.exists() for p in baseline_files):
        print(f"[init {target}] no baseline among the arms and not all of its runs stored: "
              "training these arms, but the summary (speedups are relative to the baseline) "
              "waits for a run with baseline among --arms (finished runs are read back)",
              flush=True)
    transfer.init_runs(loaded, target, starts, out, recipe=recipe, seeds=seeds,
                       eval_every=eval_every, eval_limit=eval_limit, runs_dir=runs)
    if not all(p.exists() for p in baseline_files):
        return {"target": target, "zero_shot": zero, "arms": [], "notes": notes}
    summary_path = out / "init" / target / "summary.json"
    earlier = transfer.read_json(summary_path) if summary_path.exists() else {}
    notes = {**earlier.get("notes", {}), **notes}
    results = transfer.stored_init_runs(
        out, target, seeds, steps=recipe.steps, eval_every=eval_every, eval_limit=eval_limit,
        first=[transfer.BASELINE, *starts, *(a["arm"] for a in earlier.get("arms", []))])
    summary = transfer.init_summary(results, zero)
    transfer.plot_init_curves(results, zero, out / f"init_{target}.png",
                              f"{loaded.name}: {target}, from each starting prompt")
    report = {"target": target, "zero_shot": zero, "arms": summary, "notes": notes,
              "recipe": dataclasses.asdict(recipe), "eval_limit": eval_limit,
              "eval_every": eval_every}
    transfer.write_json(out / "init" / target / "summary.json", report)
    return report


def domain_shift(loaded: engine.LoadedModel, source: str, targets: Sequence[str], out: Path, *,
                 tuning: SourceRecipe, learning_rate: float, limit: int,
                 runs: Path | None = None) -> list[dict]:
    """The source task's prompt (from the matrix's sources) and the model tuned on the same
    task (every weight, AdamW at `learning_rate`, `tuning`'s steps and batch), each zero-shot
    on the targets."""
    from prompt_jax import transfer
    from prompt_jax.training.train import OptimizerConfig

    prompt = transfer.load_prompts(loaded, _prompt_files(out, [source]))[source]
    config = tuning.config(loaded.name, source, (runs or out / "runs") / f"model-{source}",
                           tune="model", optimizer=OptimizerConfig(
                               name="adamw", learning_rate=learning_rate,
                               weight_decay=tuning.weight_decay))

    def tuned_params():  # trained (or its finished run read back) only for a missing cell
        summary = transfer.train_run(loaded, config)
        transfer.write_json(out / "domain_shift" / "model_tuning_run.json", summary)
        return transfer.restore_tuned_params(loaded, config)

    rows = transfer.domain_shift(loaded, prompt, tuned_params, targets, out, limit=limit)
    by = {(r["row"], r["target"]): r["accuracy"] for r in rows}
    lines = [f"| target | soft prompt ({source}) | model tuning ({source}) | "
             "prompt - model tuning |", "|---|---|---|---|"]
    for t in targets:
        p, m = by[("prompt", t)], by[("model_tuning", t)]
        mark = " (same task)" if t == source else (" †" if transfer.shares_text(source, t)
                                                   else "")
        lines.append(f"| {t}{mark} | {p:.1%} | {m:.1%} | {100 * (p - m):+.1f} points |")
    (out / "domain_shift.md").write_text("\n".join(lines) + "\n")
    return rows
