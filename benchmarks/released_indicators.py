"""How well the embedding-similarity indicators predict the cross-task transfer that Su et al.
(2022) report, on their own released prompts and results, with no model.

Su et al., "On Transferability of Prompt Tuning for Natural Language Processing", released one
soft prompt per task and backbone (`prompt_transferability/<Task>Prompt<Backbone>/task_prompt`)
and the zero-shot accuracy of every source prompt on every target task of the same backbone
(`prompt_transferability_results/<Target>Prompt<BB>/result_<Source>Prompt<BB>.json`). For each
backbone (t5-base, t5-small, roberta-base) this script reads both, on the classification tasks
only (their generation tasks, squad, nq_open, multi_news and samsum, report no accuracy):

- the measured transfer: the relative performance rel[s, t] = acc(s on t) / acc(t on t), the
  paper's measure, so rel[t, t] = 1;
- the indicators of `prompt_jax.indicators` between prompt s and prompt t: E_cos and E_euc of the
  flattened prompts, and their token-wise versions (`prompt_jax.transfer.EMBEDDING_INDICATORS`);
- their Spearman and Kendall correlation with rel over the pairs s != t, pooled and per target
  then averaged over targets (as the paper averages; `prompt_jax.transfer.correlations`);
- retrieval: how often the source prompt most similar to the target's own prompt (its own left
  out) is the best-transferring source, or among the top 3.

Sources are the tasks that have a released prompt of the backbone and appear as sources in its
results; targets are the result folders that hold a result for their own prompt (and whose
prompt is released, for the indicators). The prompt folders are read where they are (default
`../shared/prompts` from the repository root), never copied.

    python benchmarks/released_indicators.py run      # compute, write the JSON, print the table
    python benchmarks/released_indicators.py report   # the table again, from the JSON

`run` writes `benchmarks/results/released_indicators.json` (per backbone: sources, targets,
accuracies, the relative matrix, every indicator matrix, the correlations and the retrieval
accuracies); `markdown` turns that JSON into the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from prompt_jax import indicators, stats
from prompt_jax.prompts.files import load_prompt
from prompt_jax.prompts.registry import parse_transferability_name, read_result
from prompt_jax.provenance import write_result
from prompt_jax.transfer import EMBEDDING_INDICATORS, correlations
from prompt_jax.transfer import report as readings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OUTPUT = RESULTS / "released_indicators.json"
DEFAULT_PROMPTS = REPO.parent / "shared" / "prompts"
PROMPTS_FOLDER = "prompt_transferability"
RESULTS_FOLDER = "prompt_transferability_results"

# The release's backbone suffix -> the model it names.
BACKBONES = {"T5": "t5-base", "T5Small": "t5-small", "Roberta": "roberta-base"}
# Tasks whose results are not classification accuracies, and the release's random-prompt control.
GENERATION_TASKS = frozenset({"squad", "nq_open", "multi_news", "samsum"})
EXCLUDED_TASKS = GENERATION_TASKS | {"random"}
RETRIEVAL_KS = (1, 3)
INDICATOR_LABELS = {"E_cos": "E_cos", "E_euc": "E_euc", "E_cos_tokens": "E_cos token-wise",
                    "E_euc_tokens": "E_euc token-wise"}


def _plain_task(name: str, backbone: str) -> str | None:
    """The task of a plain `<Task>Prompt<backbone>` name, None for anything else (another
    backbone, a `_proj` / `_trained` / cross-model variant, a generation task, `random`)."""
    parsed = parse_transferability_name(name)
    if parsed is None:
        return None
    task, _, variant = parsed
    if variant or name != f"{task}Prompt{backbone}" or task in EXCLUDED_TASKS:
        return None
    return task


def released_prompts(prompts_dir: str | os.PathLike, backbone: str) -> dict[str, Path]:
    """The released prompt file of every classification task on one backbone.

    Args:
      prompts_dir: the shared `prompts/` folder.
      backbone: the release's suffix, e.g. "Roberta" (see BACKBONES).

    Returns:
      task -> path of its `task_prompt`, in folder-name order.
    """
    found = {}
    for folder in sorted(Path(prompts_dir, PROMPTS_FOLDER).iterdir()):
        task = _plain_task(folder.name, backbone)
        if task is not None and (folder / "task_prompt").is_file():
            found[task] = folder / "task_prompt"
    return found


def released_accuracies(prompts_dir: str | os.PathLike, backbone: str
                        ) -> dict[tuple[str, str], float]:
    """Every same-backbone zero-shot accuracy the release reports.

    Args:
      prompts_dir: the shared `prompts/` folder.
      backbone: the release's suffix, e.g. "Roberta".

    Returns:
      (source task, target task) -> accuracy of the source's prompt on the target task. Files of
      other backbones' prompts (`result_SST2PromptBert.json` in a Roberta folder, the
      `model_transfer_*` ones), the random prompt and the generation tasks are left out.
    """
    accuracies = {}
    for folder in sorted(Path(prompts_dir, RESULTS_FOLDER).iterdir()):
        target = _plain_task(folder.name, backbone)
        if target is None or not folder.is_dir():
            continue
        for path in sorted(folder.glob("result_*.json")):
            source = _plain_task(path.stem.removeprefix("result_"), backbone)
            acc = read_result(path) if source is not None else None
            if acc is not None:
                accuracies[source, target] = acc
    return accuracies


@dataclasses.dataclass
class TransferTable:
    """One backbone's released prompts and transfer results, as matrices [S, T]."""

    backbone: str
    sources: list[str]
    targets: list[str]
    prompts: dict[str, np.ndarray]  # task -> [100, H], every source and target
    accuracy: np.ndarray  # [S, T] acc(source on target); NaN where the release has none
    relative: np.ndarray  # [S, T] accuracy / the target's own prompt's accuracy

    def valid(self) -> np.ndarray:
        """[S, T] bool: the pairs of two different tasks with a measured transfer."""
        different = np.array([[s != t for t in self.targets] for s in self.sources], bool)
        return different & np.isfinite(self.relative)


def transfer_table(prompts_dir: str | os.PathLike, backbone: str) -> TransferTable:
    """Reads one backbone's prompts and results and builds the relative-performance matrix.

    Sources: tasks with a released prompt that appear as sources in the results. Targets: tasks
    with a released prompt whose result folder holds the result of their own prompt.
    """
    prompt_paths = released_prompts(prompts_dir, backbone)
    accuracies = released_accuracies(prompts_dir, backbone)
    measured_sources = {s for s, _ in accuracies}
    sources = [t for t in prompt_paths if t in measured_sources]
    targets = [t for t in prompt_paths if (t, t) in accuracies and accuracies[t, t] > 0]
    accuracy = np.array([[accuracies.get((s, t), math.nan) for t in targets] for s in sources])
    own = np.array([accuracies[t, t] for t in targets])
    prompts = {t: load_prompt(prompt_paths[t]).array for t in dict.fromkeys(sources + targets)}
    return TransferTable(backbone, sources, targets, prompts, accuracy, accuracy / own[None])


def indicator_matrices(table: TransferTable) -> dict[str, np.ndarray]:
    """Every embedding indicator between each source prompt and each target prompt.

    Returns:
      name (of `EMBEDDING_INDICATORS`) -> [S, T] float32.
    """
    sources = jnp.asarray(np.stack([table.prompts[s] for s in table.sources]))
    targets = jnp.asarray(np.stack([table.prompts[t] for t in table.targets]))
    return {name: np.asarray(jax.jit(lambda a, b, fn=fn: indicators.pairwise(fn, a, b))(
        sources, targets)) for name, fn in EMBEDDING_INDICATORS.items()}


def retrieval(indicator: np.ndarray, relative: np.ndarray, valid: np.ndarray
              ) -> dict[str, float]:
    """Top-k retrieval accuracies of one indicator (`indicators.retrieval_accuracy`, which
    takes [T, S]: each target ranks the sources).

    Args:
      indicator: [S, T] similarity of each source prompt to each target prompt.
      relative: [S, T] measured transfer.
      valid: [S, T] bool, the pairs that count (a target's own prompt left out).

    Returns:
      {"top1": fraction of targets, "top3": ...}.
    """
    actual = np.where(valid, relative, -np.inf)
    hits = indicators.retrieval_accuracy(jnp.asarray(indicator.T), jnp.asarray(actual.T),
                                         ks=RETRIEVAL_KS, valid=jnp.asarray(valid.T))
    return {f"top{k}": value for k, value in hits.items()}


def retrieval_chance(actual: np.ndarray, valid: np.ndarray, ks=RETRIEVAL_KS) -> dict[str, float]:
    """The top-k retrieval accuracy of a random ranking, for reference: per target, the chance
    that k of its n valid sources drawn at random include one of its b best, averaged.

    Args:
      actual: [T, S] measured transfer.
      valid: [T, S] bool, the sources each target may retrieve.
    """
    chance = {}
    for k in ks:
        per_target = []
        for row, ok in zip(actual, valid, strict=True):
            n = int(ok.sum())
            b = int(np.sum(row[ok] == row[ok].max()))
            per_target.append(1.0 - math.comb(n - b, k) / math.comb(n, k))
        chance[f"top{k}"] = float(np.mean(per_target))
    return chance


def _clean(value: Any) -> Any:
    """Rounds floats to 7 significant digits (float32's) and turns NaN into None, so that the
    JSON is strict and readable."""
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(value) else float(f"{value:.7g}")
    return value


def evaluate_backbone(prompts_dir: str | os.PathLike, backbone: str) -> dict[str, Any]:
    """One backbone's matrices, correlations and retrieval accuracies (JSON-ready)."""
    table = transfer_table(prompts_dir, backbone)
    valid = table.valid()
    matrices = indicator_matrices(table)
    result = {
        "model": BACKBONES[backbone],
        "sources": table.sources,
        "targets": table.targets,
        "accuracy": table.accuracy,
        "relative": table.relative,
        "indicators": matrices,
        "correlations": {name: correlations(m.astype(np.float64), table.relative, valid)
                         for name, m in matrices.items()},
        "retrieval": {name: retrieval(m, table.relative, valid) for name, m in matrices.items()},
        "retrieval_chance": retrieval_chance(table.relative.T, valid.T),
    }
    return _clean(result)


def evaluate(prompts_dir: str | os.PathLike = DEFAULT_PROMPTS) -> dict[str, Any]:
    """Every backbone's results, with where the prompts were read from."""
    prompts_dir = Path(prompts_dir)
    return {
        "prompts": os.path.relpath(prompts_dir.resolve(), REPO),
        "measure": "relative performance acc(s on t) / acc(t on t), pairs s != t",
        "backbones": {bb: evaluate_backbone(prompts_dir, bb) for bb in BACKBONES},
    }


def dumps(result: dict[str, Any]) -> str:
    """The JSON text of a result, one matrix row (or list of names) a line."""
    text = json.dumps(result, indent=1)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m[1]) + "]",
                  text) + "\n"


def _number(value: float | None, fmt: str = "{:+.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _hit_rate(rate: float, targets: int) -> stats.Estimate:
    """A top-k rate over targets (a hit or a miss each) with its 95% Wilson interval."""
    hits = round(rate * targets)
    if abs(hits - rate * targets) > 1e-4:
        raise ValueError(f"a rate of {rate} is not a count of {targets} targets")
    return stats.Estimate(hits / targets, *stats.wilson_interval(hits, targets), targets)


def _rate_text(e: stats.Estimate) -> str:
    return f"{e.value:.2f} [{e.low:.2f}, {e.high:.2f}]"


def _named(verdicts: dict[str, bool], what: str, beyond: str = "beyond noise",
           below: frozenset[str] = frozenset()) -> str:
    """'X of Y {what} beyond noise, Z within (the names beyond; those in `below` apart)'."""
    text = stats.reading(list(verdicts.values()), what).replace("beyond noise", beyond)
    groups = [("above zero: " if below else "", [n for n, b in verdicts.items()
                                                 if b and n not in below]),
              ("below zero: ", [n for n, b in verdicts.items() if b and n in below])]
    names = "; ".join(label + ", ".join(group) for label, group in groups if group)
    return text + (f" ({names})" if names else "")


def markdown(result: dict[str, Any]) -> str:
    """The table of a result (as `evaluate` returns it, or read back from its JSON): one row per
    backbone and indicator, each reading with its 95% interval, and what they say."""
    lines = [
        "#### Embedding-similarity indicators vs the transfer Su et al. (2022) report", "",
        "Their released prompts and zero-shot results, no model: each source prompt's relative "
        "performance on each other target task (its accuracy over the target's own prompt's), "
        "against the indicator between the source's and the target's prompts. Spearman and "
        "Kendall per target, averaged over targets (the paper's averaging), with the Spearman "
        "mean's 95% interval (a bootstrap over targets), and Spearman over all pairs pooled; "
        "top-k: how often the k sources most similar to the target's prompt (its own left out) "
        "include the best-transferring one, with its 95% Wilson interval over targets.", "",
        "| backbone | indicator | Spearman (per-target mean) [95% interval] | Kendall "
        "(per-target mean) | Spearman (pooled) | pairs | top-1 [95% interval] | top-3 [95% "
        "interval] |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    beyond: dict[str, dict[str, bool]] = {"spearman": {}, "top1": {}, "top3": {}}
    negative: set[str] = set()
    for bb in result["backbones"].values():
        per_target = readings.mean_spearman(bb)
        chance = bb["retrieval_chance"]
        for indicator, corr in bb["correlations"].items():
            name = f"{bb['model']} {INDICATOR_LABELS.get(indicator, indicator)}"
            rho = per_target[indicator]
            hits = {k: _hit_rate(v, len(bb["targets"]))
                    for k, v in bb["retrieval"][indicator].items()}
            beyond["spearman"][name] = rho.excludes(0.0)
            if rho.high < 0:
                negative.add(name)
            for k, e in hits.items():
                beyond[k][name] = e.low > chance[k]
            lines.append(
                f"| {bb['model']} | {INDICATOR_LABELS.get(indicator, indicator)} "
                f"| {rho.text(percent=False, digits=2)} "
                f"| {_number(corr['kendall_per_target'])} "
                f"| {_number(corr['spearman'])} | {corr['pairs']} "
                f"| {_rate_text(hits['top1'])} | {_rate_text(hits['top3'])} |")
        notes.append(f"{bb['model']}: {len(bb['sources'])} sources x {len(bb['targets'])} "
                     f"targets, a random ranking's top-1 / top-3 {chance['top1']:.2f} / "
                     f"{chance['top3']:.2f}")
    lines += ["", "Tasks and chance: " + "; ".join(notes) + ".", "",
              "Reading it (a per-target mean is beyond noise when its 95% interval excludes "
              "zero; a top-k rate is beyond chance when its interval lies above its backbone's "
              "random ranking's rate): per-target Spearman, "
              + _named(beyond["spearman"], "indicators", below=frozenset(negative))
              + "; top-1, "
              + _named(beyond["top1"], "indicators", "beyond chance") + "; top-3, "
              + _named(beyond["top3"], "indicators", "beyond chance") + "."]
    return "\n".join(lines)


def command_line(doc: str, evaluate_fn, markdown_fn, output_path: Path, script: str) -> None:
    """`run` (compute from the released prompts, write the JSON, print the tables) and
    `report` (print them from the JSON) for a no-model benchmark on the released prompts."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="compute, write the JSON and print the tables")
    p.add_argument("--prompts", default=str(DEFAULT_PROMPTS),
                   help="the shared prompts/ folder (default %(default)s)")
    p.add_argument("--output", default=str(output_path), help="the JSON (default %(default)s)")
    p = sub.add_parser("report", help="print the tables from the JSON, without recomputing")
    p.add_argument("--output", default=str(output_path), help="the JSON (default %(default)s)")
    args = parser.parse_args()
    output = Path(args.output)
    if args.command == "run":
        if not Path(args.prompts, PROMPTS_FOLDER).is_dir():
            sys.exit(f"{args.prompts}: no {PROMPTS_FOLDER}/ folder; pass --prompts")
        result = evaluate_fn(args.prompts)
        output.parent.mkdir(parents=True, exist_ok=True)
        write_result(output, result, dumps=dumps)
    else:
        if not output.is_file():
            sys.exit(f"{output}: not written yet; run `{script} run` first")
        result = json.loads(output.read_text())
    print(markdown_fn(result))


def main() -> None:
    command_line(__doc__, evaluate, markdown, OUTPUT, "released_indicators.py")


if __name__ == "__main__":
    main()
