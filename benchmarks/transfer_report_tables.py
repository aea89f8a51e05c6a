"""The source-prompt, sentiment-pair and domain-shift parts of docs/results.md's transfer block
(`transfer_report.py` assembles the block): each score with its 95% interval and the readings
computed from the intervals (`prompt_jax.transfer.report`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from prompt_jax import stats, transfer  # noqa: E402
from prompt_jax.transfer import report as readings  # noqa: E402

sys.path.insert(0, str(HERE))
from transfer_report_indicators import SCRIPT, _cells  # noqa: E402

# Su et al. 2022, RoBERTa-base, the sentiment pair (their Table / Figure of zero-shot transfer).
PAPER_SENTIMENT = {"sst2 on sst2": 77.2, "sst2 on rotten_tomatoes": 72.1,
                   "rotten_tomatoes on rotten_tomatoes": 74.1}
NEWCOMBE = ("Newcombe's interval from the counts (the cells store no per-row outcomes, so the "
            "difference is not paired on their shared rows: wider than a paired interval)")


def _score(cell: dict) -> str:
    """'87.5% [82.2, 91.3]': a cell's accuracy with its 95% Wilson interval."""
    return readings.cell_accuracy(cell).text()


def _how(paired: bool) -> str:
    return "a paired bootstrap on the same rows" if paired else NEWCOMBE


def sources_part(out: Path) -> list[str]:
    """Each source prompt's own score at the end of its training run, and whether it beats the
    template alone on its own task (the matrix's cells)."""
    paths = sorted((out / "sources").glob("*.json"))
    if not paths:
        return []
    lines = ["Each source prompt's own score at the end of its run (a seeded sample of the "
             "task's validation examples; macro-F1 shows where a prompt predicts mostly one "
             "class), the accuracy with its 95% Wilson interval:", "",
             "| source | accuracy [95% interval] | macro-F1 | examples | train seconds |",
             "|---|---|---|---|---|"]
    for path in paths:
        summary = json.loads(path.read_text())
        final = summary["final"]
        lines.append(f"| {path.stem} | {_score(final)} | "
                     f"{final.get('macro_f1', float('nan')):.2f} | {final['examples']} | "
                     f"{summary['train_seconds']:.0f} |")
    cells = {(c["source"], c["target"]): c for c in _cells(out)}
    own = [readings.Comparison(p.stem, p.stem, *readings.cell_difference(
        cells[p.stem, p.stem], cells[transfer.NO_PROMPT, p.stem])) for p in paths
        if (p.stem, p.stem) in cells and (transfer.NO_PROMPT, p.stem) in cells]
    if own:
        lines += ["", "Reading it: " + readings.comparison_reading(
            own, "each source prompt against the template alone on its own task (the "
                 "matrix's cells, the same rows)") + "."]
    lines += ["", "Train seconds are wall time on a shared 2-core CPU (other jobs ran beside "
              f"some runs). Reproduce: the `transfer sources` or `transfer matrix` command of "
              f"`{SCRIPT}`."]
    return lines


def sentiment_part(out: Path) -> list[str]:
    """The paper's sentiment pair (SST-2 -> Rotten Tomatoes) beside ours, each of our cells
    with its Wilson interval, and whether the zero-shot transfer falls short of the target's
    own prompt beyond noise."""
    cells = {(c["source"], c["target"]): c for c in _cells(out)}
    keys = [("sst2", "sst2"), ("sst2", "rotten_tomatoes"), ("rotten_tomatoes", "rotten_tomatoes")]
    if not all(k in cells for k in keys):
        return []
    ours = [100 * cells[k]["accuracy"] for k in keys]
    paper = [PAPER_SENTIMENT[f"{s} on {t}"] for s, t in keys]
    gap, paired = readings.cell_difference(cells[keys[1]], cells[keys[2]])
    verdict = ("falls short of it beyond noise" if gap.high < 0 else
               "beats it beyond noise" if gap.low > 0 else "is within noise of it")
    return ["| | SST-2 prompt on SST-2 | SST-2 prompt on Rotten Tomatoes (zero-shot) | "
            "Rotten Tomatoes' own prompt | zero-shot / own |", "|---|---|---|---|---|",
            "| Su et al. 2022, RoBERTa-base | " + " | ".join(f"{v:.1f}%" for v in paper)
            + f" | {paper[1] / paper[2]:.2f} |",
            f"| prompt_jax, {out.name} | " + " | ".join(_score(cells[k]) for k in keys)
            + f" | {ours[1] / ours[2]:.2f} |", "",
            "Our cells: the accuracy with its 95% Wilson interval (examples per cell: "
            + ", ".join(f"{s} on {t} {cells[s, t]['examples']}" for s, t in keys)
            + "); the paper reports no sample sizes for its cells, so its row carries no "
            "interval.", "",
            "SST-2's sentences come from Rotten Tomatoes reviews, so this pair shares its "
            "domain; the zero-shot transfer keeps "
            f"{ours[1] / ours[2]:.0%} of the target's own prompt here, "
            f"{paper[1] / paper[2]:.0%} in the paper. Reading it: on Rotten Tomatoes the "
            f"zero-shot SST-2 prompt {verdict} (zero-shot - own: "
            f"{100 * gap.value:+.1f} points, 95% interval [{100 * gap.low:+.1f}, "
            f"{100 * gap.high:+.1f}], {_how(paired)})."]


def _domain_targets(by: dict[tuple[str, str], dict], source: str) -> list[str]:
    """The targets with both rows: the source task first, then those sharing its texts, then
    the rest by name."""
    both = {t for r, t in by if r == "prompt" and ("model_tuning", t) in by}
    return sorted(both, key=lambda t: (t != source, not transfer.shares_text(source, t), t))


def domain_part(out: Path) -> list[str]:
    """The source task's soft prompt against model tuning on the same task, each zero-shot on
    other sentiment sets: every cell with its Wilson interval, the difference with its 95%
    interval, and the verdict counted from those intervals."""
    folder = out / "domain_shift"
    if not (folder / "model_tuning_run.json").exists():
        return ["Domain shift: not measured yet."]
    cells = [json.loads(p.read_text()) for p in folder.glob("*__*.json")]
    by = {(c["row"], c["target"]): c for c in cells}
    source = json.loads((folder / "model_tuning_run.json").read_text()).get("task", "sst2")
    targets = _domain_targets(by, source)
    if not targets:
        return ["Domain shift: not measured yet."]
    diffs = {t: readings.cell_difference(by["prompt", t], by["model_tuning", t])
             for t in targets}
    lines = [f"| target | soft prompt ({source}) | model tuning ({source}) | prompt - model "
             "tuning, points [95% interval] |", "|---|---|---|---|"]
    for t in targets:
        mark = (" (same task)" if t == source else
                " †" if transfer.shares_text(source, t) else "")
        d = diffs[t][0]
        lines.append(f"| {t}{mark} | {_score(by['prompt', t])} | "
                     f"{_score(by['model_tuning', t])} | {100 * d.value:+.1f} "
                     f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}] |")
    shifted = [t for t in targets if t != source and not transfer.shares_text(source, t)]
    sizes = ", ".join(f"{t} {by['prompt', t]['examples']}" for t in targets)
    paired = {p for _, p in diffs.values()}
    return ["The SST-2 soft prompt (frozen model) and SST-2 model tuning (every weight, "
            "AdamW 2e-5, 320 steps of batch 8), each zero-shot on the other sentiment sets "
            "(Lester et al. 2021 find the prompt more robust). One training run of each, both "
            f"scored on the same seeded sample of each target's examples ({sizes}). Each "
            "cell: the accuracy with its 95% Wilson interval; the difference with its 95% "
            "interval, " + "; ".join(_how(p) for p in sorted(paired)) + ":", "", *lines, "",
            *_domain_verdict(diffs, source, shifted), "",
            f"Reproduce: the `transfer domain-shift` command of `{SCRIPT}`."]


def _domain_verdict(diffs: dict[str, tuple], source: str, shifted: list[str]) -> list[str]:
    """Lester et al.'s finding read from the intervals: on the shifted targets, how often the
    prompt is above or below model tuning beyond noise, beside the same difference in
    domain."""
    if not shifted:
        return []
    estimates = [diffs[t][0] for t in shifted]
    above, below, _ = readings.sides(estimates)
    home = diffs[source][0] if source in diffs else None
    home_text = "" if home is None else (
        f" On {source} itself the prompt is {100 * home.value:+.1f} points "
        f"[{100 * home.low:+.1f}, {100 * home.high:+.1f}] from model tuning ("
        + ("beyond noise" if home.excludes(0.0) else "within noise") + ").")
    finding = ("out of domain the prompt is above model tuning beyond noise on some targets "
               "and below it on none, as Lester et al. find" if above and not below else
               "out of domain model tuning is above the prompt beyond noise on some targets "
               "and below it on none, so Lester et al.'s finding does not hold on this model "
               "and recipe" if below and not above else
               "the shifted targets disagree, so the data neither confirm nor refute Lester "
               "et al.'s finding here" if above and below else
               "no shifted target tells the two apart, so these samples cannot confirm or "
               "refute Lester et al.'s finding")
    return [f"Reading it: on the {len(shifted)} shifted domains (the same task and the "
            "shared-text set left out; a difference is beyond noise when its 95% interval "
            "excludes zero) " + stats.reading(
                [e.excludes(0.0) for e in estimates], "targets")
            + f" ({above} with the prompt above model tuning, {below} below): {finding}."
            + home_text]
