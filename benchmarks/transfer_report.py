"""The prompt-transfer results of docs/results.md, from the files `prompt-jax transfer` stored.

    python benchmarks/transfer_report.py             # print the markdown
    python benchmarks/transfer_report.py --docs      # ... and put it into docs/results.md

Every number comes from a file under `benchmarks/results/transfer/<model>/` (written by the
commands of `benchmarks/transfer_smollm2.sh`) or `benchmarks/results/released_indicators.json`;
a part whose files are not there yet says so instead of showing numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from prompt_jax import stats, transfer  # noqa: E402
from prompt_jax.transfer import report as readings  # noqa: E402

sys.path.insert(0, str(HERE))
from readme_block import link  # noqa: E402
from transfer_report_indicators import (  # noqa: E402
    SCRIPT,
    _cells,
    indicators_part,
    retrieval_part,
)
from transfer_report_tables import domain_part, sentiment_part, sources_part  # noqa: E402

MODEL = "smollm2-135m-instruct"


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


SOURCES_TEXT = ("source prompts (20 vectors, initialized from the task's class-label words, "
                "AdamW 3e-2, batch 8, 320 steps)")
ACCURACY_TEXT = ("validation examples (accuracy, %)", "the accuracy (its 95% Wilson interval)")


def matrix_part(out: Path, sources_text: str = SOURCES_TEXT,
                metric: tuple[str, str] = ACCURACY_TEXT,
                command: str = f"the `transfer matrix` command of `{SCRIPT}`") -> list[str]:
    """The zero-shot matrix of the experiment folder `out` with each cell's 95% interval and
    the readings drawn from them; `metric`: (what a cell scores, what a cell shows)."""
    cells = _cells(out)
    if not cells:
        return [f"The zero-shot matrix is not measured yet ({command})."]
    sources, targets, score, _ = transfer.matrix_arrays(cells)
    n = {c["target"]: c["examples"] for c in cells}
    on_test = sorted({c["target"] for c in cells if c.get("split", "validation") != "validation"})
    complete = np.isfinite(score).all() and len(sources) * len(targets) == len(cells)
    lines = [f"Each of {len(sources) - len(transfer.CONTROLS)} {sources_text} "
             f"and two controls, on {len(targets)} target tasks, each scored with its own "
             f"template and verbalizers on a seeded sample of up to {max(n.values())} "
             f"{metric[0]} (per target: " + ", ".join(f"{t} {n[t]}" for t in targets)
             + "). Bold: a task's own prompt; †: source and "
             "target share their texts (SST-2's sentences come from Rotten Tomatoes "
             "reviews), so that cell is not an unseen domain." + (
                 f" Scored on the test split (no local validation file): {', '.join(on_test)}."
                 if on_test else "") + ("" if complete else
                                          " (Partial: the run has not finished every cell.)"),
             "", f"Each cell: {metric[1]}.",
             "", _interval_table(cells, sources, targets),
             "", *_matrix_reading(cells, sources, targets, score),
             *(["", f"![transfer heatmap]({link(out / 'matrix.png')})"]
               if (out / "matrix.png").exists() else []), "",
             f"Relative performance (score / the target's own prompt's score, the paper's "
             f"measure) and the CSV: `{_rel(out / 'matrix.md')}`, `{_rel(out / 'matrix.csv')}`."
             f" Reproduce: {command}."]
    return lines


def sentiment_family_part(model: str = MODEL) -> list[str]:
    """The sentiment family's matrix on 1,000 rows per target (or the whole split)."""
    out = HERE / "results" / "transfer" / f"{model}-sentiment"
    return ["The sentiment rows and columns of the matrix above again, each target on a seeded "
            "1,000 of its rows or its whole split (the larger sample tells differences of a "
            "few points apart). The source prompts are the matrix's own, read as a prompt "
            "library (`--prompts`); tweet_sentiment has no local train file, so it is a "
            "target only.", "",
            *matrix_part(out, command=f"the sentiment `transfer matrix` command of `{SCRIPT}`"),
            *_family_against_main(out, HERE / "results" / "transfer" / model)]


def _family_against_main(family: Path, main: Path) -> list[str]:
    """The family's readings beside the same sources and targets in the main matrix (its
    smaller samples), and what they say of Su et al.'s within-family transfer."""
    big = _cells(family)
    sources = {c["source"] for c in big}
    targets = {c["target"] for c in big}
    small = [c for c in _cells(main) if c["source"] in sources and c["target"] in targets]
    if not big or not small or len(small) != len(big):
        return []
    rows = {c["examples"] for c in small}
    span = f"{min(rows)}" if len(rows) == 1 else f"{min(rows)}-{max(rows)}"
    lines = ["", f"The same {len(sources - set(transfer.CONTROLS))} sources, controls and "
             f"{len(targets)} targets in the main matrix above ({span} rows per target) read:",
             ""]
    lines += ["- " + readings.comparison_reading(
        readings.versus_control(small, "none", pick),
        f"the {pick} other source prompt against the template alone")
        for pick in ("best", "median")]
    best, median = (readings.sides([c.difference for c in readings.versus_control(
        big, "none", pick)]) for pick in ("best", "median"))
    lines += ["", f"Su et al. 2022 find that prompts transfer zero-shot between tasks of one type, "
              f"sentiment among them. On this model, with the larger samples, the best other "
              f"sentiment prompt beats the template on {best[0]} of {sum(best)} targets beyond "
              f"noise (a pick on the scored rows), but the median one on {median[0]} (below it on "
              f"{median[1]}): "
              + ("the claim holds for a typical source here" if median[0] > sum(median) / 2 else
                 "the claim holds only for a well-chosen source, not for a typical one")
              + "."]
    return lines


def generation_transfer_part(model: str = MODEL) -> list[str]:
    """Question answering, summarization and ethics prompts as sources and targets beside
    sentiment, each target scored by its own metric, and E_cos and ON over them."""
    out = HERE / "results" / "transfer" / f"{model}-generation"
    rel = _rel(out)
    command = (f"`prompt-jax transfer matrix --model {model} --out {rel} --prompts DIR "
               "--targets squad,nq_open,samsum,sst2 --limit 100`, DIR holding the 20-vector "
               "prompts of the generation results above (`<task>/prompt20_prompt.npy` "
               "renamed `<task>.npy`, with their sidecars) and this section's sst2 and "
               f"rotten_tomatoes prompts; then `prompt-jax transfer matrix --model {model} "
               f"--out {rel} --prompts DIR --sources ethics_deontology,ethics_justice "
               "--targets squad,nq_open,samsum,sst2,ethics_deontology,ethics_justice "
               f"--limit 100` and `prompt-jax transfer indicators --out {rel} --modes paper "
               "--layers all,bottom_third,top_third`")
    sources_text = ("source prompts (the SQuAD, NQ-Open and SAMSum prompts of 20 vectors from "
                    "the generation results, 30 steps of batch 4 from sampled vocabulary; the "
                    "ETHICS deontology and justice prompts, trained by the command below with "
                    "the recipe of the matrix above; that matrix's SST-2 and Rotten Tomatoes "
                    "prompts)")
    metric = ("rows of each target's scored split (SQuAD F1, NQ-Open exact match, SAMSum "
              "ROUGE-L F1, accuracy for the classification targets; %)", "the target's own "
              "metric with its 95% interval (a bootstrap over rows for the generation "
              "targets, Wilson for the classification ones)")
    lines = matrix_part(out, sources_text, metric, command)
    if not (out / "indicators.json").exists():
        return lines
    return lines + ["", *indicators_part(out, "the `transfer indicators` command above")]


def _interval_table(cells: list[dict], sources: list[str], targets: list[str]) -> str:
    """The matrix with each cell's Wilson interval: `78.5 (72-84)`."""
    texts, index = [], np.full((len(sources), len(targets)), np.nan)
    for c in cells:
        index[sources.index(c["source"]), targets.index(c["target"])] = len(texts)
        texts.append(readings.cell_accuracy(c).compact())
    return transfer.markdown_table(sources, targets, index, lambda v: texts[int(v)])


def _matrix_reading(cells: list[dict], sources: list[str], targets: list[str],
                    score: np.ndarray) -> list[str]:
    """What the matrix says, computed from 95% intervals: per target, the best other source
    prompt (its own prompt and sources sharing its texts left out) and the median one against
    the template alone and the random prompt; and which targets no prompt moves."""
    generated = {c["target"] for c in cells if "row_scores" in c}  # not a choice of classes
    flat = [t for j, t in enumerate(targets) if t not in generated
            and score[:, j].max() - score[:, j].min() < 0.07]
    lines = []
    for control, name in (("none", "the template alone"), ("random", "the random prompt")):
        for pick in ("best", "median"):
            lines.append("- " + readings.comparison_reading(
                readings.versus_control(cells, control, pick),
                f"the {pick} other source prompt against {name}"))
    return (["Reading it (a difference is beyond noise when its 95% interval excludes zero; the "
             "best source is picked on the same rows it is scored on, so its wins are biased "
             "upward, and the median source is the fairer reading):", "", *lines]
            + ([f"\nOn {', '.join(flat)} every row, prompt or not, lies within 7 points: the "
                "model stays near one class there whatever the prompt, so those columns say "
                "nothing about transfer."] if flat else []))


def released_part(name: str) -> list[str]:
    """The table of `benchmarks/<name>.py` (no model: the released prompts) from its JSON."""
    import importlib

    path = HERE / "results" / f"{name}.json"
    if not path.exists():
        return []
    sys.path.insert(0, str(HERE))
    text = importlib.import_module(name).markdown(json.loads(path.read_text())).strip()
    if text.startswith("#"):  # its own title: this section has one
        text = text.split("\n", 1)[1].strip()
    return [text, "", f"Reproduce: `python benchmarks/{name}.py run`."]


def init_reading(summaries: list[dict], examples: dict[str, int]) -> str:
    """Whether the transferred starts (`source:*`, `spot:*`) beat the baseline's steps by more
    than the evaluation interval (the resolution of a steps count), and whether they beat the
    random_uniform start, counted over all the targets' transferred arms; and their final
    accuracy against the baseline's on each target's `examples` rows."""
    faster = slower = level = 0
    gaps, vs_random = [], []  # final accuracy - the baseline's (Estimates)
    for s in summaries:
        arms = {a["arm"]: a for a in s["arms"]}
        base, interval = arms["baseline"], s.get("eval_every", 40)
        # A seed that never got there counts as one interval past the run's last step.
        late = s["recipe"]["steps"] + interval
        mean = {name: float(np.mean([late if x is None else x for x in a["steps"]]))
                for name, a in arms.items()}
        for name, arm in arms.items():
            if not name.startswith(("source:", "spot:")):
                continue
            n = examples[s["target"]]  # the seed means as shares of the same n rows
            gaps.append(readings.cell_difference({"accuracy": arm["final"], "examples": n},
                                                 {"accuracy": base["final"], "examples": n})[0])
            if "random_uniform" in arms:
                vs_random.append(mean["random_uniform"] - mean[name] >= interval)
            if mean[name] - mean["baseline"] >= interval:
                slower += 1
            elif mean["baseline"] - mean[name] >= interval:
                faster += 1
            else:
                level += 1
    n = faster + slower + level
    if not n:
        return ""
    beats_random = bool(vs_random) and sum(vs_random) > len(vs_random) / 2
    verdict = ("a transferred start beats even the class-label init, as the paper finds"
               if faster > n / 2 else
               "a transferred start beats a random one, as the paper finds, but not the "
               "class-label init this recipe already uses" if beats_random else
               "the paper's finding does not hold on this model and recipe")
    return (f"Reading it: Su et al. 2022 find that a transferred start speeds up prompt "
            f"tuning. Of the {n} transferred starts on {len(summaries)} target"
            + ("s" if len(summaries) > 1 else "") + ", against the "
            + f"class-label baseline {faster} reach 90% of its gain faster by at least one "
            f"evaluation interval (the resolution of these counts; a seed that never got there "
            f"counts as one interval past the last step), {slower} slower, {level} "
            f"within one interval"
            + (f"; against random_uniform (nearer the paper's plain start) {sum(vs_random)} of "
               f"{len(vs_random)} are faster by at least one interval" if vs_random else "")
            + f". {_final_gaps(gaps)} On this model, {verdict}.")


def _final_gaps(gaps: list[stats.Estimate]) -> str:
    """The transferred starts' final accuracy against the baseline's, read from intervals."""
    if not gaps:
        return ""
    above, below, _ = readings.sides(gaps)
    return ("Their final accuracy (the mean over seeds) minus the baseline's, with Newcombe's "
            "95% interval from the counts (the runs store no per-row outcomes, so it is not "
            "paired on the shared rows: wider than a paired interval): "
            + stats.reading([g.excludes(0.0) for g in gaps], "starts")
            + f" ({above} above, {below} below); the mean differences run from "
            f"{100 * min(g.value for g in gaps):+.1f} to {100 * max(g.value for g in gaps):+.1f}"
            " points.")


def _init_examples(folder: Path) -> str:
    """How many examples an init target's scores cover (its zero-shot score's count)."""
    path = folder / "zero_shot.json"
    return str(json.loads(path.read_text())["examples"]) if path.exists() else "?"


def _init_seeds(summaries: list[Path]) -> str:
    counts = {len(arm["steps"]) for p in summaries for arm in json.loads(p.read_text())["arms"]}
    return "/".join(map(str, sorted(counts)))


def init_part(out: Path, study: str = "init", plots: Path | None = None,
              command: str = f"the `transfer init` commands of `{SCRIPT}`") -> list[str]:
    """The init study under `out/<study>/<target>/` (its curves' PNGs in `plots`, default
    `out`; made by `command`); a target whose runs are not all stored yet is named with its
    count."""
    folder, plots = out / study, plots or out
    summaries = sorted(folder.glob("*/summary.json"))
    running = sorted(f"{d.name} ({len(list(d.glob('*__seed*.json')))} runs stored)"
                     for d in folder.glob("*") if d.is_dir() and not (d / "summary.json").exists())
    if not summaries:
        return [f"Not measured yet{': ' + ', '.join(running) if running else ''}."]
    loaded = [json.loads(p.read_text()) for p in summaries]
    running += _init_unfinished(summaries, loaded)
    lines = ["| target | start | final accuracy, per seed (mean) | steps to 90% of the "
             "baseline's gain, per seed | speedup | per seed: median [min, max] |",
             "|---|---|---|---|---|---|"]
    for s in loaded:
        baseline = next((a for a in s["arms"] if a["arm"] == "baseline"), None)
        for arm in s["arms"]:
            name = arm["arm"]
            note = s["notes"].get(name)
            if isinstance(note, str):
                name += f" ({note})"
            elif isinstance(note, dict):
                name += " (" + ", ".join(f"{k} {v:.2f}" for k, v in note.items()) + ")"
            steps = ", ".join("never" if x is None else str(x) for x in arm["steps"])
            finals = ", ".join(f"{100 * f:.1f}" for f in arm["finals"])
            lines.append(f"| {s['target']} (zero-shot {s['zero_shot']:.1%}) | {name} | "
                         f"{finals} ({arm['final']:.1%}) | {steps} | "
                         f"{transfer.speedup_text(arm)} | {_seed_speedups(baseline, arm)} |")
    recipes = {(s["recipe"]["steps"], s.get("eval_every", 40)) for s in loaded}
    recipe = "; ".join(f"{steps} steps, scored every {every}" for steps, every in sorted(recipes))
    examples = {p.parent.name: _init_examples(p.parent) for p in summaries}
    lines += ["", init_reading(loaded, {t: int(n) for t, n in examples.items() if n != "?"})]
    lines += ["", "baseline: the target's own class-label init; random_uniform: uniform "
              "random vectors (nearest the paper's plain start); text: the embeddings of the "
              "words shown; source:best: the best other "
              "source in the matrix (a source sharing the target's texts left out); "
              "spot:ON_inputs:3: the three sources whose ON with a briefly trained target "
              "prompt (40 steps) is highest, averaged with ON weights (SPoT-style; a source "
              f"sharing the target's texts is not left out of it). {recipe} on a seeded "
              "sample of validation examples ("
              + ", ".join(f"{target} {n}" for target, n in examples.items())
              + f" examples), {_init_seeds(summaries)} seeds per start."
              + (f" Still running: {', '.join(running)}." if running else ""), ""]
    lines += [f"![init curves {p.parent.name}]({link(plots / f'init_{p.parent.name}.png')})"
              for p in summaries if (plots / f"init_{p.parent.name}.png").exists()]
    lines.append(f"\nReproduce: {command}.")
    return lines


def _init_unfinished(summaries: list[Path], loaded: list[dict]) -> list[str]:
    """The targets whose summary lacks a start another target has, or counts fewer runs than
    its folder stores (a summary written before the last runs came in)."""
    every = list(dict.fromkeys(a["arm"] for s in loaded for a in s["arms"]))
    unfinished = []
    for path, s in zip(summaries, loaded, strict=True):
        missing = [a for a in every if a not in {x["arm"] for x in s["arms"]}]
        counted = sum(len(a["steps"]) for a in s["arms"])
        stored = len(list(path.parent.glob("*__seed*.json")))
        if missing or stored > counted:
            lacks = f"; no {', '.join(missing)} yet" if missing else ""
            unfinished.append(f"{s['target']} ({counted} of {stored} stored runs in its "
                              f"summary{lacks})")
    return unfinished


def _seed_speedups(baseline: dict | None, arm: dict) -> str:
    """An arm's speedup over the baseline seed by seed (`stats.speedups`): the median and
    range of the ratios, with the seeds already there at step 0 and those that never got
    there (either run) counted apart."""
    if baseline is None or arm is baseline:
        return "-"
    spread = stats.speedups(baseline["steps"], arm["steps"])
    at_zero = sum(1 for a, b in zip(arm["steps"], baseline["steps"], strict=True)
                  if a == 0 and b is not None)
    parts = [] if spread["median"] is None else [
        f"{spread['median']:.2f}x [{spread['min']:.2f}, {spread['max']:.2f}]"]
    parts += [f"{at_zero} at step 0"] if at_zero else []
    never = spread["never"] - at_zero
    parts += [f"{never} never"] if never else []
    return ", ".join(parts) + f" ({spread['seeds']} seeds)"


def report(model: str = MODEL) -> str:
    out = HERE / "results" / "transfer" / model
    parts = [("### Source prompts", sources_part(out)),
             ("### Zero-shot transfer between tasks", matrix_part(out)),
             ("### The paper's sentiment pair on this model", sentiment_part(out)),
             ("### The sentiment family on 1,000 rows per target", sentiment_family_part(model)),
             ("### Question answering and summarization in transfer",
              generation_transfer_part(model)),
             ("### Do the indicators predict transfer?", indicators_part(out)),
             ("### The indicators on the paper's own released prompts",
              released_part("released_indicators")),
             ("### Starting from a transferred prompt: 3 targets x 3 seeds", init_part(out)),
             ("#### The earlier study: 2 targets x 2 seeds over 320 steps",
              init_part(out, "init_320steps", out / "init_320steps", command=(
                  "`prompt-jax transfer init --out benchmarks/results/transfer/"
                  "smollm2-135m-instruct --target laptop --limit 300 "
                  "--arms baseline,random_uniform,source:best,spot:ON_inputs:3` and the same "
                  "for rotten_tomatoes (320 steps, scored every 40, seeds 0,1; its files then "
                  "moved to `init_320steps/`)"))),
             ("### Domain shift: soft prompt vs model tuning", domain_part(out)),
             ("### Retrieving a source prompt for a new task", retrieval_part(out)),
             ("### Prompt projectors on the paper's released prompts",
              released_part("released_projectors"))]
    import results

    when = results.stored(sorted(out.rglob("*.json"))) if out.is_dir() else "not measured"
    blocks = [f"Measured on {model} with the commands of `{SCRIPT}`; numbers as measured; "
              f"results {when}."]
    blocks += ["\n".join([title, "", *lines]) for title, lines in parts if lines]
    return "\n\n".join(blocks)



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=MODEL)
    p.add_argument("--docs", "--readme", dest="readme", action="store_true",
                   help="write the block into docs/results.md")
    args = p.parse_args()
    block = report(args.model)
    print(block)
    if args.readme:
        from readme_block import write_block

        write_block("transfer", block)


if __name__ == "__main__":
    main()
