"""Do projectors trained by distance minimization carry a task's prompt to the other model's
prompt of the same task? Leave-one-task-out on the prompts Su et al. (2022) released, no model.

Su et al., "On Transferability of Prompt Tuning for Natural Language Processing", released one
100-vector prompt per task and backbone (`prompt_transferability/<Task>Prompt<Backbone>/
task_prompt`: T5Small 512 wide, T5, Roberta and Bert 768) and the prompts their own projector
made from T5-base's for RoBERTa-base (`<Task>Prompt_cross_model_T5_to_Roberta`). For three
model pairs (T5Small -> T5, Roberta -> Bert, T5 -> Roberta), on the classification tasks both
backbones have (`released_indicators.released_prompts`), and for each task in turn:

- train a projector on the (source prompt, target prompt) pairs of every other task
  (`prompt_jax.projectors`): the paper's flat projector, the per-vector MLP, the least-squares
  linear map, and no projector at all where the widths match (Roberta -> Bert);
- project the held-out task's source prompt and rank its own task's target prompt among all
  the target prompts, by cosine of the flattened prompts (E_cos) and by euclidean distance
  (E_euc): rank 1 is nearest, a random ranking's mean rank is (N + 1) / 2 and its top-1 1 / N.

The paper's released T5 -> Roberta prompts are ranked the same way (they were made by task
tuning on all data, not held out), and each of our T5 -> Roberta projections is compared to the
paper's projection of the same task (cosine).

    python benchmarks/released_projectors.py run      # compute, write the JSON, print the table
    python benchmarks/released_projectors.py report   # the table again, from the JSON

`run` writes `benchmarks/results/released_projectors.json`; `markdown` turns it into tables.
It takes about 3 minutes on two CPU cores (5 when another job shares them).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from prompt_jax import indicators, projectors, stats
from prompt_jax.commands import projector_commands
from prompt_jax.prompts.files import load_prompt
from prompt_jax.training.train import OptimizerConfig
from prompt_jax.transfer import report as readings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from released_indicators import (  # noqa: E402
    DEFAULT_PROMPTS,
    PROMPTS_FOLDER,
    REPO,
    RESULTS,
    _clean,
    command_line,
    released_prompts,
)

OUTPUT = RESULTS / "released_projectors.json"
PAIRS = (("T5Small", "T5"), ("Roberta", "Bert"), ("T5", "Roberta"))
MODELS = {"T5Small": "t5-small", "T5": "t5-base", "Roberta": "roberta-base",
          "Bert": "bert-base-uncased"}
METHODS = ("flat", "token", "linear", "none")
METHOD_LABELS = {"flat": "paper's projector (flat, tanh, LayerNorm)",
                 "token": "per-vector MLP", "linear": "least-squares linear",
                 "none": "no projector", "paper": "paper's released projections (task tuning)"}
# Distance training, sized to keep the whole run to a few CPU minutes (the paper's hidden width
# is 768; a dozen training pairs need far fewer units: see the in-sample fit in the JSON).
SETTINGS = {"flat": {"hidden": 16, "steps": 200, "learning_rate": 1e-1},
            "token": {"hidden": 64, "steps": 200, "learning_rate": 1e-2}}
PAPER_PROJECTIONS = ("T5", "Roberta", "{task}Prompt_cross_model_T5_to_Roberta")
SAME_PROMPT_COSINE = 0.999  # the paper's projections this close count as one prompt


def paired_prompts(prompts_dir: str | os.PathLike, source: str, target: str
                   ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The tasks with a released prompt on both backbones, and their prompts.

    Returns:
      (tasks, source prompts [N, 100, d_s], target prompts [N, 100, d_t]).
    """
    sources, targets = (released_prompts(prompts_dir, bb) for bb in (source, target))
    tasks = [t for t in sources if t in targets]
    return (tasks, np.stack([load_prompt(sources[t]).array for t in tasks]),
            np.stack([load_prompt(targets[t]).array for t in tasks]))


def fit(method: str, sources: np.ndarray, targets: np.ndarray
        ) -> tuple[projectors.ProjectorConfig | None, Any, float]:
    """A projector of `method` fitted on paired prompts, and its in-sample fit: the fraction of
    the targets' spread around their mean (sum of squares) that the projections explain.

    Returns:
      (config, params, fit); "none" returns (None, None, fit of the source prompts as they are).
    """
    x, y = jnp.asarray(sources), jnp.asarray(targets)
    if method == "none":
        config, params = None, None
        loss = float(jnp.square(x - y).sum(axis=(1, 2)).mean())
    elif method == "linear":
        config, params = projectors.fit_linear(x, y)
        loss = float(projectors.distance_loss(config, params, x, y))
    else:
        settings = SETTINGS[method]
        init = projectors.init_flat if method == "flat" else projectors.init_token
        shape = (*x.shape[1:], y.shape[1], y.shape[2]) if method == "flat" else \
            (x.shape[2], y.shape[2])
        config, params = init(jax.random.PRNGKey(0), *shape, hidden=settings["hidden"])
        with tempfile.TemporaryDirectory() as run_dir:  # the engine's loop, a throwaway run
            params, _ = projector_commands.train_distance(
                config, params, x, y, run_dir, steps=settings["steps"],
                optimizer=OptimizerConfig(name="adamw",
                                          learning_rate=settings["learning_rate"]),
                checkpoint_every=settings["steps"])
        loss = float(projectors.distance_loss(config, params, x, y))
    spread = float(jnp.square(y - y.mean(0)).sum(axis=(1, 2)).mean())
    return config, params, 1.0 - loss / spread


def leave_one_out(method: str, sources: np.ndarray, targets: np.ndarray, label: str = ""
                  ) -> tuple[np.ndarray, list[float]]:
    """Each task's source prompt projected by a projector fitted on every other task's pair.

    Returns:
      (projections [N, 100, d_t], the in-sample fit of each fold).
    """
    projected, fits = [], []
    for held_out in tqdm(range(len(sources)), desc=label or method, unit="task", leave=False):
        keep = [i for i in range(len(sources)) if i != held_out]
        config, params, in_sample = fit(method, sources[keep], targets[keep])
        source = jnp.asarray(sources[held_out])
        projected.append(np.asarray(source if config is None else
                                    projectors.apply(config, params, source)))
        fits.append(in_sample)
    return np.stack(projected), fits


def own_ranks(projected: np.ndarray, targets: np.ndarray, rows: list[int] | None = None
              ) -> dict[str, Any]:
    """Where each projection's own task's target prompt ranks among all the target prompts.

    Args:
      projected: [M, P, d] projections; projection m belongs to task `rows[m]` (default m).
      targets: [N, P, d], every task's target prompt.

    Returns:
      Per indicator ("E_cos", "E_euc"): each projection's rank of its own target (1 = the
      nearest), top-1 rate and mean rank; and the cosine of each projection with its own target
      and, averaged, with the other targets.
    """
    rows = list(range(len(projected))) if rows is None else rows
    own = np.arange(len(rows)), np.asarray(rows)
    result: dict[str, Any] = {}
    for name, fn in (("E_cos", indicators.flat_cosine), ("E_euc", indicators.flat_euclidean)):
        sim = np.asarray(indicators.pairwise(fn, jnp.asarray(projected), jnp.asarray(targets)))
        ranks = 1 + (sim > sim[own][:, None]).sum(1)
        result[name] = {"ranks": ranks.tolist(), "top1": float(np.mean(ranks == 1)),
                        "mean_rank": float(np.mean(ranks))}
        if name == "E_cos":
            others = np.ones_like(sim, bool)
            others[own] = False
            result["cos_own"] = sim[own].tolist()
            result["cos_others_mean"] = [float(row[ok].mean()) for row, ok in zip(sim, others,
                                                                                  strict=True)]
    return result


def evaluate_pair(prompts_dir: str | os.PathLike, source: str, target: str
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One model pair: every method's leave-one-task-out projections, ranked.

    Returns:
      (the JSON-ready result, method -> projections [N, 100, d_t] for later comparisons).
    """
    tasks, sources, targets = paired_prompts(prompts_dir, source, target)
    methods = [m for m in METHODS if m != "none" or sources.shape[2] == targets.shape[2]]
    result = {"source": MODELS[source], "target": MODELS[target], "tasks": tasks,
              "source_shape": list(sources.shape[1:]), "target_shape": list(targets.shape[1:]),
              "chance": {"top1": 1 / len(tasks), "mean_rank": (len(tasks) + 1) / 2},
              "methods": {}}
    projections = {}
    for method in methods:
        started = time.perf_counter()
        projections[method], fits = leave_one_out(method, sources, targets,
                                                  f"{source} -> {target}: {method}")
        result["methods"][method] = {
            **own_ranks(projections[method], targets), "in_sample_fit": fits,
            "seconds": time.perf_counter() - started}
    return result, projections


def paper_comparison(prompts_dir: str | os.PathLike, projections: dict[str, np.ndarray],
                     tasks: list[str]) -> dict[str, Any]:
    """The paper's released T5 -> Roberta projections: ranked against the Roberta prompts like
    ours, grouped (how many distinct prompts they are), and compared with our projections of
    the same tasks (T5 -> Roberta, held out).

    Args:
      projections: method -> our projections [N, 100, 768] of `tasks`, in that order.
      tasks: the T5 -> Roberta pair's tasks.
    """
    folder = Path(prompts_dir, PROMPTS_FOLDER)
    pattern = PAPER_PROJECTIONS[2]
    paper = {t: load_prompt(folder / pattern.format(task=t) / "task_prompt").array
             for t in tasks if (folder / pattern.format(task=t) / "task_prompt").is_file()}
    names = list(paper)
    rows = [tasks.index(t) for t in names]
    stack = jnp.asarray(np.stack([paper[t] for t in names]))
    roberta = released_prompts(prompts_dir, "Roberta")
    targets = np.stack([load_prompt(roberta[t]).array for t in tasks])
    among = np.asarray(indicators.pairwise(indicators.flat_cosine, stack, stack))
    groups: list[list[str]] = []
    for i, task in enumerate(names):
        group = next((g for g in groups if among[i, names.index(g[0])] >= SAME_PROMPT_COSINE),
                     None)
        if group is None:
            groups.append([task])
        else:
            group.append(task)
    ours = {method: np.asarray(indicators.flat_cosine(jnp.asarray(p[rows]), stack)).tolist()
            for method, p in projections.items()}
    return {"tasks": names, "ranks": own_ranks(np.asarray(stack), targets, rows),
            "groups": groups, "token_norm": [float(np.linalg.norm(paper[t], axis=1).mean())
                                             for t in names],
            "cos_ours_to_paper": ours}


def evaluate(prompts_dir: str | os.PathLike = DEFAULT_PROMPTS) -> dict[str, Any]:
    """Every model pair, and the comparison with the paper's own T5 -> Roberta projections."""
    prompts_dir = Path(prompts_dir)
    result: dict[str, Any] = {
        "prompts": os.path.relpath(prompts_dir.resolve(), REPO),
        "protocol": "leave one task out: fit on the other tasks' (source, target) prompt "
                    "pairs, project the held-out task's source prompt, rank its own target "
                    "prompt among all target prompts (1 = nearest)",
        "settings": SETTINGS, "pairs": {}}
    for source, target in PAIRS:
        pair, projections = evaluate_pair(prompts_dir, source, target)
        result["pairs"][f"{source}->{target}"] = pair
        if (source, target) == PAPER_PROJECTIONS[:2]:
            result["paper_T5_to_Roberta"] = paper_comparison(prompts_dir, projections,
                                                             pair["tasks"])
    return _clean(result)


def _mean(values) -> float:
    return float(np.mean(values))


def rank_readings(ranks: dict[str, Any], chance: dict[str, float]) -> dict[str, Any]:
    """One method's rankings with their 95% intervals over the held-out tasks: per indicator
    the top-1 rate (Wilson's interval: a hit or a miss per task) and the mean rank (a bootstrap
    over tasks), and the cosine with the own target minus the mean with the others (a
    bootstrap over tasks), each with whether it is beyond chance (or zero)."""
    out: dict[str, Any] = {}
    for name in ("E_cos", "E_euc"):
        r = np.asarray(ranks[name]["ranks"])
        hits = int((r == 1).sum())
        top1 = stats.Estimate(hits / r.size, *stats.wilson_interval(hits, r.size), r.size)
        mean_rank = readings.bootstrap_mean(r.astype(np.float64))
        out[name] = {"top1": top1, "mean_rank": mean_rank,
                     "top1_beyond": top1.low > chance["top1"],
                     "rank_side": ("nearer" if mean_rank.high < chance["mean_rank"] else
                                   "farther" if mean_rank.low > chance["mean_rank"] else None)}
    if "cos_own" in ranks:
        out["cos_gap"] = readings.bootstrap_mean(np.asarray(ranks["cos_own"])
                                                 - np.asarray(ranks["cos_others_mean"]))
    return out


def _reading(rows: list[dict[str, Any]]) -> str:
    """What the table's intervals say, counted over every (projection, indicator)."""
    per_indicator = [r[name] for r in rows for name in ("E_cos", "E_euc")]
    sides = [p["rank_side"] for p in per_indicator]
    gaps = [r["cos_gap"] for r in rows if "cos_gap" in r]
    above, below, _ = readings.sides(gaps)
    what = "(projection, indicator) pairs"
    return ("Reading it (a top-1 rate is beyond chance when its 95% interval lies above 1 / N, "
            "a mean rank when its interval excludes (N + 1) / 2, a cosine gap when its "
            "interval excludes zero): top-1, "
            + stats.reading([p["top1_beyond"] for p in per_indicator], what)
            .replace("beyond noise", "beyond chance")
            + "; mean rank, " + stats.reading([s is not None for s in sides], what)
            .replace("beyond noise", "beyond chance")
            + f" ({sides.count('nearer')} nearer than chance, {sides.count('farther')} "
            "farther); the cosine with the own target minus the others', "
            + stats.reading([g.excludes(0.0) for g in gaps], "projections")
            + f" ({above} above, {below} below).")


def _interval(e: stats.Estimate, digits: int = 2) -> str:
    """'0.08 [0.01, 0.33]': a value and its interval, unsigned."""
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def markdown(result: dict[str, Any]) -> str:
    """The tables of a result (as `evaluate` returns it, or read back from its JSON), each
    reading with its 95% interval, and what they say."""
    lines = [
        "#### Prompt projectors on the released prompts (leave one task out, no model)", "",
        "For each task, a projector fitted by distance minimization on the other tasks' "
        "(source, target) prompt pairs projects the task's source prompt; is the projection "
        "nearer its own task's target prompt than the other tasks' target prompts? Rank of the "
        "own target among all N targets (1 = nearest) by cosine (E_cos) and by euclidean "
        "distance (E_euc) of the flattened prompts; in-sample fit: the share of the training "
        "targets' spread the projections explain. Each top-1 rate with its 95% Wilson interval "
        "over the held-out tasks; each mean rank and the cosine with the own target minus the "
        "mean with the others (own - others) with a 95% bootstrap interval over the tasks.", "",
        "| source -> target | N | method | top-1 E_cos | mean rank E_cos | top-1 E_euc "
        "| mean rank E_euc | cos own | cos others | own - others | in-sample fit |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    paper = result.get("paper_T5_to_Roberta")
    readings_rows = []
    for key, pair in result["pairs"].items():
        n = len(pair["tasks"])
        rows = [(METHOD_LABELS[m], n, r, _mean(r["in_sample_fit"]))
                for m, r in pair["methods"].items()]
        if paper and key == "->".join(PAPER_PROJECTIONS[:2]):
            rows.append((METHOD_LABELS["paper"], f"{len(paper['tasks'])} of {n}",
                         paper["ranks"], None))
        for label, tasks, r, fit in rows:
            ri = rank_readings(r, pair["chance"])
            readings_rows.append(ri)
            cos = (f"{_mean(r['cos_own']):+.3f} | {_mean(r['cos_others_mean']):+.3f} | "
                   f"{ri['cos_gap'].text(percent=False, digits=3)}" if "cos_gap" in ri
                   else "- | - | -")
            lines.append(
                f"| {pair['source']} -> {pair['target']} | {tasks} | {label} "
                f"| {_interval(ri['E_cos']['top1'])} "
                f"| {_interval(ri['E_cos']['mean_rank'], 1)} "
                f"| {_interval(ri['E_euc']['top1'])} "
                f"| {_interval(ri['E_euc']['mean_rank'], 1)} "
                f"| {cos} | {'-' if fit is None else f'{fit:.2f}'} |")
        chance = pair["chance"]
        lines.append(f"| {pair['source']} -> {pair['target']} | {n} | chance "
                     f"| {chance['top1']:.2f} | {chance['mean_rank']:.1f} "
                     f"| {chance['top1']:.2f} | {chance['mean_rank']:.1f} | - | - | - | - |")
    lines += ["", _reading(readings_rows)]
    if paper:
        groups = "; ".join(", ".join(g) for g in paper["groups"])
        ours = ", ".join(f"{METHOD_LABELS[m]} {_mean(v):+.3f}"
                         for m, v in paper["cos_ours_to_paper"].items())
        lines += [
            "", f"The paper's released T5 -> Roberta projections ({len(paper['tasks'])} tasks) "
            f"are {len(paper['groups'])} distinct prompts (cosine >= {SAME_PROMPT_COSINE} "
            f"within each group: {groups}), with mean vector norms "
            f"{', '.join(sorted({f'{x:.1f}' for x in paper['token_norm']}))} against about 5 "
            f"for RoBERTa's own prompts. Mean cosine of our held-out T5 -> Roberta projections "
            f"with the paper's projection of the same task: {ours}."]
    settings = ", ".join(f"{m}: hidden {s['hidden']}, {s['steps']} Adam steps at "
                         f"{s['learning_rate']:g}" for m, s in result["settings"].items())
    lines += ["", f"Distance training: {settings}, all training pairs every step."]
    return "\n".join(lines)


def main() -> None:
    command_line(__doc__, evaluate, markdown, OUTPUT, "released_projectors.py")


if __name__ == "__main__":
    main()
