"""Reports of transfer experiments: the matrix as CSV, markdown tables and a heatmap PNG, the
curves of transfer-initialized runs, and the readings drawn from them with 95% intervals
(`cell_accuracy`, `cell_difference`, `versus_control`, `comparison_reading`, `sides`,
`bootstrap_mean`, `per_target_spearman`, `mean_spearman`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prompt_jax import stats
from prompt_jax.transfer.indicators import per_target_correlations
from prompt_jax.transfer.matrix import CONTROLS, cell_score, matrix_arrays, shares_text


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
                 metric: str = "score", title: str = "") -> dict[str, Path]:
    """`matrix.csv` (one row per cell), `matrix.md` (scores and relative performance) and
    `matrix.png` (the relative-performance heatmap) in `out_dir`."""
    out = Path(out_dir)
    sources, targets, score, relative = matrix_arrays(cells, metric)
    lines = [f"source,target,{metric},relative,examples,shares_text"]
    for c in cells:
        i, j = sources.index(c["source"]), targets.index(c["target"])
        rel = "" if not np.isfinite(relative[i, j]) else f"{relative[i, j]:.4f}"
        lines.append(f"{c['source']},{c['target']},{cell_score(c, metric):.4f},{rel},"
                     f"{c['examples']},"
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




# --------------------------------------------------------------------------------------------
# Readings with intervals (`prompt_jax.stats`)
# --------------------------------------------------------------------------------------------


def cell_accuracy(cell: dict[str, Any]) -> stats.Estimate:
    """A cell's accuracy with its 95% Wilson interval (from its per-row outcomes when stored,
    else from its accuracy and row count)."""
    if "correct" in cell:
        return stats.accuracy(cell["correct"])
    if "row_scores" in cell:  # a generation target: a bootstrap interval of the row mean
        rows = np.asarray(cell["row_scores"], float)
        return stats.Estimate(float(rows.mean()), *stats.bootstrap_interval(
            lambda x, axis=-1: np.mean(x, axis=axis), [rows]), rows.size)
    n = int(cell["examples"])
    k = int(round(cell["accuracy"] * n))
    return stats.Estimate(k / n, *stats.wilson_interval(k, n), n)


def cell_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[stats.Estimate, bool]:
    """Accuracy of cell `a` minus cell `b` (one target) with a 95% interval: paired on the
    same rows when both cells store their per-row outcomes (a paired bootstrap), else from the
    counts alone (Newcombe's interval, wider). Returns (difference, paired)."""
    if "correct" in a and "correct" in b and len(a["correct"]) == len(b["correct"]):
        return stats.paired_difference(a["correct"], b["correct"]).difference, True
    if "row_scores" in a and "row_scores" in b:  # a generation target's metric, row by row
        x, y = (np.asarray(c["row_scores"], float) for c in (a, b))
        low, high = stats.bootstrap_interval(
            lambda p, q, axis=-1: np.mean(p, axis=axis) - np.mean(q, axis=axis), [x, y])
        return stats.Estimate(float(np.mean(x - y)), low, high, x.size), True
    ea, eb = cell_accuracy(a), cell_accuracy(b)
    return stats.unpaired_difference(round(ea.value * ea.n), ea.n, round(eb.value * eb.n),
                                     eb.n), False


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One target's comparison of a chosen source row with a control row."""

    target: str
    source: str
    difference: stats.Estimate
    paired: bool


def versus_control(cells: Sequence[dict[str, Any]], control: str, pick: str = "best"
                   ) -> list[Comparison]:
    """Per target, a source prompt (its own prompt and sources sharing its texts left out)
    against a control row (`none`, `random`): `pick` "best" (the best source on the same rows
    it is scored on: a selected maximum, so biased upward) or "median" (the median source)."""
    by_target: dict[str, dict[str, dict]] = {}
    for c in cells:
        by_target.setdefault(c["target"], {})[c["source"]] = c
    out = []
    for target, row in by_target.items():
        others = sorted((c for s, c in row.items() if s not in CONTROLS and s != target
                         and not shares_text(s, target)), key=cell_score)
        if not others or control not in row:
            continue
        chosen = others[-1] if pick == "best" else others[(len(others) - 1) // 2]
        diff, paired = cell_difference(chosen, row[control])
        out.append(Comparison(target, chosen["source"], diff, paired))
    return out


def sides(estimates: Sequence[stats.Estimate], reference: float = 0.0
          ) -> tuple[int, int, int]:
    """How many intervals lie wholly above `reference`, wholly below it, and across it
    (within noise)."""
    above = sum(e.low > reference for e in estimates)
    below = sum(e.high < reference for e in estimates)
    return above, below, len(estimates) - above - below


def comparison_reading(comparisons: Sequence[Comparison], what: str) -> str:
    """'X of Y targets beyond noise (A above, B below), Z within', and how they were paired."""
    above, below, _ = sides([c.difference for c in comparisons])
    paired = sum(c.paired for c in comparisons)
    text = stats.reading([c.difference.excludes(0.0) for c in comparisons], "targets")
    how = ("paired on the same rows" if paired == len(comparisons) else
           "from counts alone (the cells store no per-row outcomes; Newcombe's interval)"
           if paired == 0 else f"{paired} paired on the same rows, the rest from counts alone")
    return f"{what}: {text} ({above} above, {below} below; 95% intervals {how})"


def bootstrap_mean(values: Sequence[float], seed: int = stats.SEED) -> stats.Estimate:
    """The mean of per-target values with a percentile bootstrap interval over targets."""
    x = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    low, high = stats.bootstrap_interval(lambda v, axis=-1: np.mean(v, axis=axis), (x,),
                                         seed=seed)
    return stats.Estimate(float(x.mean()), low, high, x.size)


def per_target_spearman(result: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each indicator's Spearman with relative transfer on each target, a target's own prompt
    left out (`transfer.per_target_correlations`).

    Args:
      result: `sources`, `targets`, `relative` [S, T] and `indicators` (name -> [S, T]), as
        `prompt-jax transfer indicators` and `benchmarks/released_indicators.py` store them.

    Returns:
      name -> [T], NaN where a target has no correlation (a constant side, < 3 sources).
    """
    sources, targets = result["sources"], result["targets"]
    relative = np.asarray(result["relative"], np.float64)  # [S, T]
    valid = np.array([[s != t for t in targets] for s in sources])
    return {name: per_target_correlations(np.asarray(table, np.float64), relative,
                                          valid)["spearman"]
            for name, table in result["indicators"].items()}


def mean_spearman(result: dict[str, Any]) -> dict[str, stats.Estimate]:
    """Each indicator's per-target Spearman (`per_target_spearman`) averaged over targets,
    with a bootstrap interval over targets; indicators correlated on fewer than 2 targets are
    left out."""
    return {name: bootstrap_mean(rhos) for name, rhos in per_target_spearman(result).items()
            if np.isfinite(rhos).sum() >= 2}
