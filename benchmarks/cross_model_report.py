"""docs/results.md's cross-model block (`python benchmarks/cross_model.py report --docs`), from
the files `benchmarks/cross_model.py run` stored: every score with its 95% interval and the
readings computed from the intervals (`prompt_jax.transfer.report`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from cross_model import DIRECTIONS, INIT_SEEDS, LABELS, OUT, TASKS, TUNED_TASK  # noqa: E402

from prompt_jax import stats, transfer  # noqa: E402
from prompt_jax.transfer import read_json  # noqa: E402
from prompt_jax.transfer import report as readings  # noqa: E402

DIFFERENCE = ("a difference counts above or below when its 95% interval excludes zero; "
              "Newcombe's interval from the counts, as the cells store no per-row outcomes: "
              "not paired on their shared rows, so wider than a paired interval")


def _cells(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {tuple(p.stem.split("__")): read_json(p) for p in folder.glob("*__*.json")}


def _sizes(cells) -> str:
    """The sample sizes behind a table's cells: '200 examples per cell' or the range."""
    n = sorted({c["examples"] for c in cells.values() if "examples" in c})
    return "?" if not n else str(n[0]) if len(n) == 1 else f"{n[0]} to {n[-1]}"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def _cell(cell: dict | None) -> str:
    """'91.0 (87-94)': a cell's accuracy (%) with its 95% Wilson interval; '-' if missing."""
    if cell is None:
        return "-"
    return readings.cell_accuracy(cell).compact()


def _over_tasks(values: list[float]) -> str:
    """The mean of per-task values (%) with its 95% bootstrap interval over the tasks."""
    return readings.bootstrap_mean(values).compact()


def _scores(cells, key: str) -> list[float | None]:
    """`key`'s accuracy on each of `TASKS` (None where not measured)."""
    return [cells.get((key, t), {}).get("accuracy") for t in TASKS]


def _differences(cells, key: str, against: str, tasks=TASKS) -> list[stats.Estimate]:
    """`key` minus `against` on each task both were scored on, with its 95% interval."""
    return [readings.cell_difference(cells[key, t], cells[against, t])[0] for t in tasks
            if (key, t) in cells and (against, t) in cells]


def _sides_text(diffs: list[stats.Estimate]) -> str:
    above, below, within = readings.sides(diffs)
    return f"{above} above, {below} below, {within} within"


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
        mean = _over_tasks(values) if done else "-"
        relative = _over_tasks([v / o for v, o in zip(values, own, strict=True)]) if done \
            else "-"
        lines.append(f"| {label} | " + " | ".join(_cell(cells.get((key, t))) for t in TASKS)
                     + f" | {mean} | {relative} |")
    return [f"Scored on a seeded sample of {_sizes(cells)} validation examples per cell (the "
            "same rows for every prompt of a task), one projector fit and one source prompt "
            "per task. Each cell: the accuracy (%) with its 95% Wilson interval; the means "
            f"over the {len(TASKS)} tasks with a 95% bootstrap interval over the tasks:", "",
            *lines, *_distance_reading(cells)]


def _distance_reading(cells) -> list[str]:
    """Each held-out projection against each control, task by task, counted from the
    differences' 95% intervals."""
    controls = (("none", "no prompt"), ("random", "random prompt"),
                ("flat_random_input", "flat fed a random array"),
                ("flat_other_task", "flat fed the next task's prompt"))
    if any(None in _scores(cells, k) for k, _ in controls):
        return []
    lines = ["", f"Each held-out projection against each control, over the {len(TASKS)} "
             f"tasks: how many it scores above or below beyond noise ({DIFFERENCE}):", "",
             "| held-out projection | " + " | ".join(f"vs {label}" for _, label in controls)
             + " |", "|---" * (len(controls) + 1) + "|"]
    every = []
    for key, label in (("flat", "flat"), ("token", "per-vector"), ("linear", "linear")):
        diffs = [_differences(cells, key, control) for control, _ in controls]
        every += [d for row in diffs for d in row]
        lines.append(f"| {label} | " + " | ".join(_sides_text(d) for d in diffs) + " |")
    above, below, _ = readings.sides(every)
    return lines + ["", "Reading it: " + stats.reading([d.excludes(0.0) for d in every],
                                                       "task comparisons")
                    + f" ({above} with the projection above the control, {below} below)."]


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
             "per cell, each the accuracy (%) with its 95% Wilson interval:", "",
             f"| {LABELS[source]} -> {LABELS[target]}, tuned on {TUNED_TASK} | "
             + " | ".join(TASKS) + " |", "|" + "---|" * (len(TASKS) + 1)]
    for key, label in (("projected", "the task's source prompt projected"),
                       ("other_task", "the next task's source prompt projected"),
                       ("random_input", "a random array projected"),
                       ("random", "random prompt, matched norm"),
                       ("none", "no prompt")):
        lines.append(f"| {label} | " + " | ".join(_cell(cells.get((key, t))) for t in TASKS)
                     + " |")
    unseen = [t for t in TASKS if t != TUNED_TASK]
    against = "; ".join(
        f"against {name}: {_sides_text(_differences(cells, 'projected', key, unseen))}"
        for key, name in (("random_input", "the projected random array"),
                          ("other_task", "the next task's prompt projected"),
                          ("none", "no prompt")))
    lines += ["", f"Reading it ({DIFFERENCE}): on the {len(unseen)} tasks other than "
                  f"{TUNED_TASK}, the projected source prompt {against}. Mean pairwise "
                  f"cosine of their projections: {info['mean_pairwise_cosine']:.4f} (of their "
                  f"source prompts: {info['source_mean_pairwise_cosine']:.4f})."]
    return lines


def init_table(source: str = "smollm2", target: str = "gemma3") -> list[str]:
    from readme_block import link
    from transfer_report import _seed_speedups

    path = OUT / "init" / f"{source}_to_{target}" / "summary.json"
    if not path.exists():
        return []
    summary = read_json(path)
    zero = read_json(path.parent / "init" / summary["target"] / "zero_shot.json")
    n = zero["examples"]
    arms = {a["arm"]: a for a in summary["arms"]}
    lines = [f"{LABELS[target]}, {summary['target']} (zero-shot {_cell(zero)}; every score on "
             f"the same {n} validation examples, {len(INIT_SEEDS)} seeds per start; each "
             "accuracy (%) with its 95% Wilson interval; the speedup per seed: the median and "
             "range of the seeds' ratios):",
             "", "| start | accuracy at step 0 (per seed) | final accuracy (per seed; mean) | "
             "steps to 90% of the gain (per seed) | speedup | per seed: median [min, max] |",
             "|---|---|---|---|---|---|"]
    for arm in summary["arms"]:
        firsts = ", ".join(_cell({"accuracy": read_json(transfer.init_run_path(
            path.parent, summary["target"], arm["arm"], seed))["curve"][0][1], "examples": n})
            for seed in INIT_SEEDS)
        finals = ", ".join(_cell({"accuracy": f, "examples": n}) for f in arm["finals"])
        steps = ", ".join("-" if s is None else str(s) for s in arm["steps"])
        lines.append(f"| {arm['arm']} | {firsts} | {finals}; {_pct(arm['final'])} | {steps} | "
                     f"{transfer.speedup_text(arm)} | "
                     f"{_seed_speedups(arms.get(transfer.BASELINE), arm)} |")
    plot = link(path.parent / f"init_{summary['target']}.png")
    return lines + _init_reading(summary, n) + [
        "", f"![{LABELS[target]} {summary['target']}, from each starting prompt]({plot})"]


def _init_reading(summary: dict[str, Any], examples: int) -> list[str]:
    """The projected start against each other start: faster or slower to 90% of the gain by
    at least one evaluation interval (the resolution of a steps count), and the final
    accuracy seed by seed with the difference's 95% interval."""
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
        gaps = [readings.cell_difference({"accuracy": p, "examples": examples},
                                         {"accuracy": q, "examples": examples})[0]
                for p, q in zip(projected["finals"], arm["finals"], strict=True)]
        finals = ", ".join(f"{100 * g.value:+.1f} [{100 * g.low:+.1f}, {100 * g.high:+.1f}]"
                           for g in gaps)
        parts.append(f"{name}: {pace}; final accuracy, seed by seed, {finals} points ("
                     + stats.reading([g.excludes(0.0) for g in gaps], "seeds") + ")")
    return ["", f"Reading it, the projected start against each other start (steps counted "
                f"every {interval}; a final difference is beyond noise when its 95% interval, "
                "Newcombe's from the counts, excludes zero): " + "; ".join(parts) + "."]


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


if __name__ == "__main__":
    print(report())
