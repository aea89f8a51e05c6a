"""Cross-task prompt transfer (Su et al. 2022) on one loaded model.

Everything here stands on `prompt_jax.engine`: the model loads once, and only [P, H] prompts
move between tasks. Each piece of work writes one JSON file when it finishes (a source prompt's
run, a matrix cell, a transfer-initialized run) and skips the work whose file exists, so a
killed command continues where it stopped:

- `train_sources`: one soft prompt per source task, by one recipe (`SourceRecipe`);
- `zero_shot_matrix`: every source prompt, plus the controls "no prompt" and "a random prompt
  of the sources' norm", on every target task, each target with its own template and
  verbalizers; `relative` divides by the target's own prompt's score (the paper's measure);
  `write_matrix` writes the CSV, the markdown tables and the heatmap;
- `init_runs`: a target prompt trained from a source prompt, from a SPoT-style mix of the top-k
  sources ranked by an indicator, or from the recipe's own init, with the steps it takes to
  reach 90% of the baseline's final gain over zero-shot (`steps_to_fraction`);
- `indicator_table`: the indicators of `prompt_jax.indicators` for every pair of prompts (ON
  in the paper's mode and on real target inputs), and their rank correlation with transfer;
- `domain_shift`: a prompt and a tuned model of one task, zero-shot on other tasks (Lester et
  al. 2021: the prompt is more robust).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from prompt_jax import engine, indicators
from prompt_jax.training import loop, run
from prompt_jax.training.train import OptimizerConfig

NO_PROMPT = "none"  # control row: the hand-written template alone
RANDOM_PROMPT = "random"  # control row: a random prompt of the sources' mean norm
CONTROLS = (NO_PROMPT, RANDOM_PROMPT)

# Task pairs whose texts come from the same source: a transfer between them is not to an unseen
# domain (SST-2's sentences are Rotten Tomatoes review snippets, Pang & Lee 2005).
SHARED_TEXT = (frozenset({"sst2", "rotten_tomatoes"}),)


def shares_text(a: str, b: str) -> bool:
    """Whether two tasks' texts come from the same source (see SHARED_TEXT)."""
    return a != b and frozenset({a, b}) in SHARED_TEXT


@dataclasses.dataclass(frozen=True)
class SourceRecipe:
    """How every source prompt is trained: the demo's recipe (20 vectors, AdamW 3e-2, batch 8,
    320 steps), initialized from each task's own class-label words (Lester et al.'s best
    init) rather than one shared text, so that two prompts do not look alike only because
    they started alike."""

    prompt_length: int = 20
    init: str = "class_labels"
    steps: int = 320
    batch_size: int = 8
    learning_rate: float = 3e-2
    weight_decay: float = 0.01
    max_input_length: int = 128
    eval_limit: int = 200  # the run's own check; the matrix scores every prompt again
    seed: int = 0

    def config(self, model: str, task: str, output_dir: str | Path, **overrides) -> run.RunConfig:
        """The run of one task by this recipe (overrides replace RunConfig fields)."""
        fields = dict(
            model=model, task=task, output_dir=str(output_dir),
            prompt_length=self.prompt_length, init=self.init,
            optimizer=OptimizerConfig(name="adamw", learning_rate=self.learning_rate,
                                      weight_decay=self.weight_decay),
            steps=self.steps, batch_size=self.batch_size,
            max_input_length=self.max_input_length, eval_every=0,
            eval_limit=self.eval_limit, checkpoint_every=80, keep_checkpoints=1,
            seed=self.seed, mesh_data=1)
        fields.update(overrides)
        return run.RunConfig(**fields)


def write_json(path: Path, value: Any) -> None:
    """Writes atomically (a killed write leaves no half file that would count as done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def train_run(loaded: engine.LoadedModel, config: run.RunConfig) -> dict[str, Any]:
    """`run.train_prompt`, resumable at the level of whole runs: a finished run (its
    `summary.json` exists) is read back, a killed one resumes from its last checkpoint."""
    out = Path(config.output_dir)
    if (out / "summary.json").exists():
        return read_json(out / "summary.json")
    return run.train_prompt(config, resume=loop.holds_run(out), loaded=loaded)


def train_sources(loaded: engine.LoadedModel, tasks: Sequence[str], out_dir: str | Path,
                  recipe: SourceRecipe = SourceRecipe(), runs_dir: str | Path | None = None
                  ) -> dict[str, Path]:
    """One source prompt per task, kept as `out_dir/prompts/<task>.npy` (with its JSON
    sidecar) and the run's summary as `out_dir/sources/<task>.json`; the runs themselves
    (checkpoints, metrics) go to `runs_dir/<task>` (default `out_dir/runs`). A task whose
    summary exists is not trained again.

    Returns:
      task -> its prompt file.
    """
    out = Path(out_dir)
    runs_dir = Path(runs_dir) if runs_dir else out / "runs"
    paths = {}
    for i, task in enumerate(tasks, 1):
        summary_path = out / "sources" / f"{task}.json"
        paths[task] = out / "prompts" / f"{task}.npy"
        if summary_path.exists():
            print(f"[source {i}/{len(tasks)}] {task}: done", flush=True)
            continue
        print(f"[source {i}/{len(tasks)}] {task}: training", flush=True)
        folder = runs_dir / task
        summary = train_run(loaded, recipe.config(loaded.name, task, folder))
        paths[task].parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".npy", ".json"):
            (paths[task].with_suffix(suffix)).write_bytes(
                (folder / "prompt").with_suffix(suffix).read_bytes())
        write_json(summary_path, {**summary, "recipe": dataclasses.asdict(recipe),
                                   "prompt": str(paths[task])})
    return paths


def load_prompts(loaded: engine.LoadedModel, paths: Mapping[str, str | Path]
                 ) -> dict[str, np.ndarray]:
    """name -> [P, H] prompt, from files in any format `prompt_io` reads."""
    from prompt_jax.prompts.files import load_prompt_for

    return {name: np.asarray(load_prompt_for(loaded.model, str(p)).array, np.float32)
            for name, p in paths.items()}


def random_control(sources: Mapping[str, np.ndarray], seed: int = 0) -> np.ndarray:
    """A Gaussian prompt of the sources' shape, scaled to their mean Frobenius norm."""
    stack = np.stack(list(sources.values()))
    norm = float(np.linalg.norm(stack.reshape(len(stack), -1), axis=-1).mean())
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), stack.shape[1:]), np.float32)
    return x * (norm / np.linalg.norm(x))


def scored_split(task: str, preferred: str = "validation", data: str | None = None) -> str:
    """The split a target is scored on: `preferred`, or the task's test split when
    `preferred` has no local file (AG News has only its test set in ../shared/data)."""
    from prompt_jax.tasks.registry import local_paths, local_splits

    for split in (preferred, "test"):
        if split in local_splits(task) and all(p.is_file()
                                               for p in local_paths(task, split, data)):
            return split
    raise FileNotFoundError(f"task {task!r} has neither a {preferred!r} nor a 'test' split "
                            "in the local data")


def _cell_path(out_dir: Path, source: str, target: str) -> Path:
    return out_dir / "cells" / f"{source}__{target}.json"


def zero_shot_matrix(loaded: engine.LoadedModel, sources: Mapping[str, np.ndarray],
                     targets: Sequence[str], out_dir: str | Path, *, split: str = "validation",
                     limit: int = 500, batch_size: int = 32, controls: bool = True,
                     seed: int = 0) -> list[dict[str, Any]]:
    """Scores every source prompt (and the controls) on every target task.

    Each cell is `out_dir/cells/<source>__<target>.json`; cells already there are read, not
    recomputed. A target's batches are made once and reused by all its prompts.

    Args:
      loaded: the model.
      sources: name -> [P, H] prompt.
      targets: task names; each is scored with its own template and verbalizers.
      out_dir: where the cells go.
      split: the split scored (a target without it locally is scored on its test split).
      limit: a seeded random sample of this many examples per target (0 = all).
      batch_size: evaluation batch size.
      controls: add the NO_PROMPT and RANDOM_PROMPT rows.
      seed: the random control's seed.

    Returns:
      The cells: {"source", "target", "accuracy", "macro_f1", "examples", "seconds", ...}.
    """
    out = Path(out_dir)
    rows: dict[str, np.ndarray | None] = dict(sources)
    if controls:
        rows = {NO_PROMPT: None, RANDOM_PROMPT: random_control(sources, seed), **rows}
    cells = []
    bar = tqdm(total=len(rows) * len(targets), desc="matrix", unit="cell")
    for target in targets:
        todo = [s for s in rows if not _cell_path(out, s, target).exists()]
        evaluate = None
        for source, prompt in rows.items():
            path = _cell_path(out, source, target)
            if source in todo:
                if evaluate is None:  # only for targets with work left
                    task = loaded.task(target)
                    lengths = [p.shape[0] for p in rows.values() if p is not None]
                    target_split = scored_split(target, split, task.data or None)
                    evaluate = loaded.evaluator(task, target_split, batch_size=batch_size,
                                                limit=limit,
                                                prompt_length=lengths[0] if lengths else 0)
                t0 = time.perf_counter()
                metrics = evaluate(None if prompt is None else jnp.asarray(prompt))
                write_json(path, {"source": source, "target": target, "split": target_split,
                                   "limit": limit, "model": loaded.name, **metrics,
                                   "seconds": time.perf_counter() - t0})
            cells.append(read_json(path))
            bar.update(1)
    bar.close()
    return cells


def ordered_cells(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells sorted for tables: the controls first, then tasks in registry order (so that
    a task's family stays together), by source then target."""
    from prompt_jax.tasks import list_tasks

    order = {name: i for i, name in enumerate((*CONTROLS, *list_tasks()))}

    def key(cell):
        return (order.get(cell["source"], len(order)), cell["source"],
                order.get(cell["target"], len(order)), cell["target"])

    return sorted(cells, key=key)


def matrix_arrays(cells: Sequence[dict[str, Any]], metric: str = "accuracy"
                  ) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """The cells as arrays: (sources, targets, score [S, T], relative [S, T]).

    `relative[s, t]` = score[s, t] / score[t, t], the target's own prompt's score (NaN for a
    target with no prompt of its own among the sources); rows in cell order, controls first.
    """
    sources = list(dict.fromkeys(c["source"] for c in cells))
    targets = list(dict.fromkeys(c["target"] for c in cells))
    score = np.full((len(sources), len(targets)), np.nan)
    for c in cells:
        score[sources.index(c["source"]), targets.index(c["target"])] = c[metric]
    own = np.array([score[sources.index(t), j] if t in sources else np.nan
                    for j, t in enumerate(targets)])
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = score / own[None, :]
    return sources, targets, score, relative


def markdown_table(sources: Sequence[str], targets: Sequence[str], values: np.ndarray,
                   fmt: Callable[[float], str], corner: str = "source \\ target") -> str:
    """A source x target markdown table: a task's own prompt in bold, a pair that shares its
    texts marked †, missing values as -."""
    lines = [f"| {corner} | " + " | ".join(targets) + " |",
             "|---" * (len(targets) + 1) + "|"]
    for i, s in enumerate(sources):
        cells = []
        for j, t in enumerate(targets):
            v = values[i, j]
            text = "-" if not np.isfinite(v) else fmt(v)
            if s == t:
                text = f"**{text}**"
            elif shares_text(s, t):
                text += " †"
            cells.append(text)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_matrix(cells: Sequence[dict[str, Any]], out_dir: str | Path,
                 metric: str = "accuracy", title: str = "") -> dict[str, Path]:
    """`matrix.csv` (one row per cell), `matrix.md` (scores and relative performance) and
    `matrix.png` (the relative-performance heatmap) in `out_dir`."""
    out = Path(out_dir)
    sources, targets, score, relative = matrix_arrays(cells, metric)
    lines = [f"source,target,{metric},relative,examples,shares_text"]
    for c in cells:
        i, j = sources.index(c["source"]), targets.index(c["target"])
        rel = "" if not np.isfinite(relative[i, j]) else f"{relative[i, j]:.4f}"
        lines.append(f"{c['source']},{c['target']},{c[metric]:.4f},{rel},{c['examples']},"
                     f"{int(shares_text(c['source'], c['target']))}")
    (out / "matrix.csv").write_text("\n".join(lines) + "\n")
    note = ("Rows: source prompts (none = the template alone, random = a random prompt of the "
            "sources' mean norm); columns: target tasks, each scored with its own template "
            "and verbalizers. Bold: a task's own prompt. †: source and target share their "
            "texts (not an unseen domain).")
    md = [f"{metric} of each source prompt on each target\n", markdown_table(
        sources, targets, score, lambda v: f"{v:.1%}", "source \\ target"),
        "\nrelative performance: the score / the target's own prompt's score\n", markdown_table(
        sources, targets, relative, lambda v: f"{v:.2f}", "source \\ target"), "", note]
    (out / "matrix.md").write_text("\n".join(md) + "\n")
    png = out / "matrix.png"
    _heatmap(sources, targets, score, relative, png, title or f"zero-shot transfer ({metric})")
    return {"csv": out / "matrix.csv", "markdown": out / "matrix.md", "heatmap": png}


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'prompt_jax[bench]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _heatmap(sources, targets, score, relative, path: Path, title: str) -> None:
    """Two panels: the score on every target, and the relative performance on the targets
    that have a prompt of their own."""
    plt = _pyplot()
    own = [j for j in range(len(targets)) if np.isfinite(relative[:, j]).any()]
    panels = [(score, list(range(len(targets))), "score", 1.0)]
    if own:
        top = float(np.nanmax(relative[:, own]))
        panels.append((relative, own, "score / the target's own prompt's", max(1.0, top)))
    widths = [len(cols) + 2 for _, cols, _, _ in panels]
    fig, axes = plt.subplots(1, len(panels), squeeze=False, width_ratios=widths,
                             figsize=(2.0 + 0.5 * sum(widths), 1.6 + 0.4 * len(sources)))
    for ax, (values, cols, label, vmax) in zip(axes[0], panels, strict=True):
        shown = np.ma.masked_invalid(values[:, cols])
        image = ax.imshow(shown, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(cols)), [targets[j] for j in cols], rotation=60, ha="right",
                      fontsize=8)
        ax.set_yticks(range(len(sources)), sources, fontsize=8)
        for i in range(len(sources)):
            for k, j in enumerate(cols):
                v = values[i, j]
                if np.isfinite(v):
                    ax.text(k, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if v < 0.6 * vmax else "black")
        ax.set_xlabel("target task")
        ax.set_title(label, fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.6)
    axes[0][0].set_ylabel("source prompt")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- transfer initialization ---------------------------------------------------------------

BASELINE = "baseline"  # the init arm that starts from the recipe's own init


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
              out_dir: str | Path, *, recipe: SourceRecipe = SourceRecipe(),
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
                results.append(read_json(path))
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
            results.append({"target": target, "arm": arm, "seed": seed, "curve": curve,
                            "final": curve[-1][1], "metric": metric, "eval_limit": eval_limit,
                            "train_seconds": summary["train_seconds"]})
            write_json(path, results[-1])
    return results


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


def plot_init_curves(results: Sequence[dict[str, Any]], zero_shot: float, path: str | Path,
                     title: str = "") -> Path:
    """Score against step for each arm (the mean over seeds, the range shaded), zero-shot as a
    dashed line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for arm in dict.fromkeys(r["arm"] for r in results):
        curves = [r["curve"] for r in results if r["arm"] == arm]
        steps = [s for s, _ in curves[0]]
        values = np.array([[v for _, v in c] for c in curves if len(c) == len(steps)])
        ax.plot(steps, values.mean(0), marker="o", markersize=3, label=arm)
        ax.fill_between(steps, values.min(0), values.max(0), alpha=0.15)
    ax.axhline(zero_shot, color="gray", linestyle="--", linewidth=1, label="zero-shot")
    ax.set_xlabel("training step")
    ax.set_ylabel(results[0]["metric"])
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


# --- indicators ------------------------------------------------------------------------------

EMBEDDING_INDICATORS = {
    "E_cos": indicators.flat_cosine, "E_euc": indicators.flat_euclidean,
    "E_cos_tokens": indicators.tokenwise_cosine, "E_euc_tokens": indicators.tokenwise_euclidean,
}
ON_MODES = ("paper", "inputs", "prompt")


def embedding_indicators(prompts_by_name: Mapping[str, np.ndarray]
                         ) -> dict[str, np.ndarray]:
    """Every embedding indicator for every pair of prompts: name -> [N, N] (rows and columns
    in `prompts_by_name` order; the prompts share one shape)."""
    stack = jnp.asarray(np.stack(list(prompts_by_name.values())))
    return {name: np.asarray(jax.jit(lambda a, fn=fn: indicators.pairwise(fn, a, a))(stack))
            for name, fn in EMBEDDING_INDICATORS.items()}


def _probe_batch(loaded: engine.LoadedModel, task: engine.TaskHandle, mode: str,
                 n_inputs: int, seed: int) -> dict[str, np.ndarray]:
    """The inputs ON reads activations on: the template with an empty text (the paper's
    mode: its code feeds "<s>" and reads the label position; also the "prompt" mode's), or a
    seeded sample of real validation inputs."""
    if mode in ("paper", "prompt"):
        return task.encode_texts(["\t" if task.spec.pair else ""])
    if mode != "inputs":
        raise ValueError(f"unknown ON mode {mode!r}; use one of {ON_MODES}")
    from prompt_jax.tasks import read_split
    from prompt_jax.tasks.registry import sample_rows

    examples, _ = read_split(task.spec, "validation", task.data or None)
    rows = sample_rows(len(examples), n_inputs, seed)
    picked = [examples[i] for i in (range(len(examples)) if rows is None else rows)]
    return task.encode_texts([f"{e.text_a}\t{e.text_b}" if task.spec.pair else e.text_a
                              for e in picked])


def label_positions(model, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """[B] the input position where each row's label is predicted, the one ON reads: a
    masked LM's <mask> (`target_position`); for a decoder the last input token, whose next
    token is the label (and for T5's encoder, whose activations ON reads, the input's end).
    Rows are right-padded."""
    if model.prompt_style == "mlm":
        return np.asarray(batch["target_position"])
    return np.asarray(batch["input_mask"]).sum(-1) - 1


def neuron_overlaps(loaded: engine.LoadedModel, prompts_by_name: Mapping[str, np.ndarray],
                    target: str, reference: str, *, mode: str = "paper", n_inputs: int = 16,
                    layers: str | tuple[int, int] = "all", seed: int = 0) -> dict[str, float]:
    """ON of every prompt with the `reference` prompt on the target task's inputs: the
    overlap of the FFN neurons each activates (gate pre-activation > 0).

    Modes: "paper" reads the position that predicts the label with an empty text in the
    template (as the paper's code feeds "<s>"), "inputs" the same position over a seeded
    sample of `n_inputs` real validation inputs (the overlap averaged over them), "prompt"
    every prompt position (empty text).

    Returns:
      name -> ON with the reference (1.0 for the reference itself).
    """
    from prompt_jax import prompts as prompt_ops

    task = loaded.task(target)
    batch = _probe_batch(loaded, task, mode, n_inputs, seed)
    ids = jnp.asarray(batch["inputs"])
    embeds = loaded.model.embed(loaded.params, ids)
    mask = jnp.asarray(batch["input_mask"])
    positions = jnp.asarray(label_positions(loaded.model, batch))

    @jax.jit
    def masks_of(prompt):  # -> [B, L', K * F]
        if mode != "prompt":
            m = indicators.activation_masks(loaded.model, loaded.params, prompt, embeds, mask,
                                            positions, placement=task.placement, layers=layers)
            return jnp.moveaxis(m[:, :, 0, :], 1, 0)
        prompted, prompted_mask, start = prompt_ops.insert_prompt(prompt, embeds, mask,
                                                                  task.placement)
        (pre,) = loaded.model.activations(loaded.params, prompted, prompted_mask,
                                          kind="pre_activation").values()  # [L, B, P + T, F]
        at = start[:, None] + jnp.arange(prompt.shape[0])[None]  # [B, P]
        picked = jnp.take_along_axis(pre, at[None, :, :, None], axis=2)  # [L, B, P, F]
        m = indicators.activated(indicators.select_layers(picked, layers))
        return jnp.moveaxis(m, 1, 0).reshape(m.shape[1], m.shape[0], -1)

    ref = masks_of(jnp.asarray(prompts_by_name[reference]))
    return {name: float(indicators.neuron_overlap(masks_of(jnp.asarray(p)), ref).mean())
            for name, p in prompts_by_name.items()}


def correlations(indicator: np.ndarray, transfer: np.ndarray, valid: np.ndarray
                 ) -> dict[str, float]:
    """Spearman and Kendall correlation of an indicator with measured transfer over the valid
    (source, target) pairs: pooled over all pairs, and per target then averaged (as the paper
    averages over target tasks; targets with fewer than 3 valid sources are left out)."""
    flat = valid & np.isfinite(indicator) & np.isfinite(transfer)
    result = {"pairs": int(flat.sum()),
              "spearman": indicators.spearman(indicator[flat], transfer[flat]),
              "kendall": indicators.kendall_tau(indicator[flat], transfer[flat])}
    per = {"spearman": [], "kendall": []}
    for j in range(indicator.shape[1]):
        col = flat[:, j]
        if col.sum() >= 3:
            per["spearman"].append(indicators.spearman(indicator[col, j], transfer[col, j]))
            per["kendall"].append(indicators.kendall_tau(indicator[col, j], transfer[col, j]))
    result.update(targets=len(per["spearman"]),
                  spearman_per_target=float(np.nanmean(per["spearman"])) if per["spearman"]
                  else math.nan,
                  kendall_per_target=float(np.nanmean(per["kendall"])) if per["kendall"]
                  else math.nan)
    return result


# --- domain shift ---------------------------------------------------------------------------

def domain_shift(loaded: engine.LoadedModel, prompt: np.ndarray, tuned_params: Callable[[], Any],
                 targets: Sequence[str], out_dir: str | Path, *, limit: int = 500,
                 batch_size: int = 32) -> list[dict[str, Any]]:
    """A soft prompt and a tuned model of the same source task, each zero-shot on other
    tasks: one cell per (row, target) in `out_dir/domain_shift/`, finished cells read back.

    Args:
      prompt: the source task's [P, H] prompt (on the frozen model).
      tuned_params: returns the source task's tuned model params (used with no prompt);
        called once, and only if a model-tuning cell is missing.
      targets: the tasks scored.
    """
    out = Path(out_dir) / "domain_shift"
    tuned = None
    rows = []
    for target in tqdm(targets, desc="domain shift", unit="target"):
        evaluate = None
        for row in ("prompt", "model_tuning"):
            path = out / f"{row}__{target}.json"
            if not path.exists():
                if row == "prompt":
                    args = (jnp.asarray(prompt),)
                else:
                    tuned = tuned_params() if tuned is None else tuned
                    args = (None, tuned)
                if evaluate is None:
                    evaluate = loaded.evaluator(loaded.task(target), scored_split(target),
                                                batch_size=batch_size, limit=limit,
                                                prompt_length=prompt.shape[0])
                write_json(path, {"row": row, "target": target, "limit": limit,
                                  **evaluate(*args)})
            rows.append(read_json(path))
    return rows


def restore_tuned_params(loaded: engine.LoadedModel, config: run.RunConfig):
    """The params of a finished model-tuning run (`config.tune == "model"`), from its last
    checkpoint."""
    from prompt_jax.training import train
    from prompt_jax.training.checkpoints import TrainCheckpoints

    like = train.init_state(loaded.params, train.make_optimizer(config.optimizer), config.seed)
    manager = TrainCheckpoints(Path(config.output_dir) / "checkpoints")
    try:
        state, _ = manager.restore_latest(like)
    finally:
        manager.close()
    return state.trainable
