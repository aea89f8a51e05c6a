"""The indicator parts of docs/results.md's transfer block (`transfer_report.py` assembles
the block): the indicators' correlation with measured transfer, ON by layer selection, and
retrieval, each from the files `prompt-jax transfer` stored."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prompt_jax import stats, transfer  # noqa: E402
from prompt_jax.transfer import report as readings  # noqa: E402

SCRIPT = "benchmarks/transfer_smollm2.sh"


def _cells(out: Path) -> list[dict]:
    return transfer.ordered_cells(
        [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")])


def _fmt(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:+.3f}"


def indicators_table(result: dict, per_target: dict[str, stats.Estimate]) -> list[str]:
    """Each indicator's correlations with relative transfer (from `indicators.json`), the
    per-target mean Spearman beside its 95% bootstrap interval over targets."""
    lines = ["| indicator | Spearman (per target, mean) | its 95% interval (bootstrap over "
             f"{len(result['targets'])} targets) | Kendall (per target, mean) | Spearman (all "
             "pairs) | Kendall (all pairs) | pairs |", "|---|---|---|---|---|---|---|"]
    for name, c in result["correlations"].items():
        e = per_target.get(name)
        interval = "-" if e is None else f"[{e.low:+.3f}, {e.high:+.3f}]"
        lines.append(f"| {name} | {_fmt(c['spearman_per_target'])} | {interval} | "
                     f"{_fmt(c['kendall_per_target'])} | {_fmt(c['spearman'])} | "
                     f"{_fmt(c['kendall'])} | {c['pairs']} |")
    return lines


def indicators_part(out: Path, command: str = f"the `transfer indicators` command of `{SCRIPT}`"
                    ) -> list[str]:
    path = out / "indicators.json"
    if not path.exists():
        return ["Indicator correlations on this matrix: not measured yet."]
    result = json.loads(path.read_text())
    corr = result["correlations"]
    pairs = max(c["pairs"] for c in corr.values())
    per_target = readings.mean_spearman(result)
    lines = ["Rank correlation of each indicator with relative performance over the matrix's "
             f"(source, target) pairs ({len(result['sources'])} sources, own prompts left "
             "out). ON over all layers" + (" (`_bottom_third`, `_top_third`: over that "
                                           "third)" if any(k.endswith("_third") for k in corr)
                                           else "") + ": " + ", ".join(
                 text for mode, text in (
                     ("paper", "`paper` at the label position with an empty text"),
                     ("inputs", f"`inputs` there over {result['n_inputs']} real inputs per "
                                "target"),
                     ("prompt", "`prompt` at every prompt position"))
                 if f"ON_{mode}" in corr) + ":", "", *indicators_table(result, per_target), "",
             f"Pooled over {pairs} pairs, a Spearman beyond ±{1.96 / np.sqrt(pairs - 1):.3f} "
             "differs from zero at p < 0.05 (normal approximation); the per-target means "
             f"average correlations over {len(result['sources']) - 1} sources each."]
    beyond = {k: e.excludes(0.0) for k, e in per_target.items()}
    lines += ["", "Reading it (a per-target mean is beyond noise when its 95% interval excludes "
              "zero): " + stats.reading(list(beyond.values()), "indicators")
              + (f" ({', '.join(k for k, b in beyond.items() if b)})" if any(beyond.values())
                 else "") + "."]
    lines += layers_part(per_target)
    lines += _on_against_cos(result, per_target)
    lines += ["", f"Reproduce: {command}."]
    return lines


def _on_against_cos(result: dict, per_target: dict[str, stats.Estimate]) -> list[str]:
    """The best ON against E_cos, the paper's comparison: the mean over targets of their
    per-target Spearman difference, with its 95% bootstrap interval over targets."""
    best_on = max((k for k in per_target if k.startswith("ON_")),
                  key=lambda k: per_target[k].value, default=None)
    if best_on is None or "E_cos" not in per_target:
        return []
    rhos = readings.per_target_spearman(result)
    diff = readings.bootstrap_mean(rhos[best_on] - rhos["E_cos"])
    verdict = ("predicts transfer better than" if diff.low > 0 else
               "predicts transfer worse than" if diff.high < 0 else
               "is not told apart from")
    return [f"Here {best_on} (per-target Spearman {per_target[best_on].value:+.3f}) {verdict} "
            f"E_cos ({per_target['E_cos'].value:+.3f}): their per-target difference "
            f"{diff.text(percent=False, digits=2)} (95% interval, a bootstrap over the "
            f"{diff.n} targets) {'excludes' if diff.excludes(0.0) else 'includes'} zero; the "
            "paper finds ON the better predictor."]


def layers_part(per_target: dict[str, stats.Estimate]) -> list[str]:
    """ON's per-target mean Spearman over all layers, the bottom third and the top third,
    side by side for each mode (where the indicators step measured the thirds)."""
    thirds = ("bottom_third", "top_third")
    modes = [k[3:] for k in per_target if k.startswith("ON_") and not k.endswith(thirds)
             and all(f"{k}_{t}" in per_target for t in thirds)]
    if not modes:
        return []
    lines = ["", "ON by layers, the per-target mean Spearman with its 95% interval (a "
             "bootstrap over targets):", "", "| ON mode | all layers | bottom third | "
             "top third |", "|---|---|---|---|"]
    beyond = {}
    for mode in modes:
        row = [per_target[f"ON_{mode}"]] + [per_target[f"ON_{mode}_{t}"] for t in thirds]
        lines.append(f"| {mode} | " + " | ".join(e.text(percent=False, digits=2)
                                               for e in row) + " |")
        beyond.update({name: e.excludes(0.0) for name, e in zip(
            (f"ON_{mode}", *(f"ON_{mode}_{t}" for t in thirds)), row, strict=True)})
    lines += ["", "Reading it: " + stats.reading(list(beyond.values()), "layer selections")
              + (f" ({', '.join(k for k, b in beyond.items() if b)})"
                 if any(beyond.values()) else "") + "."]
    return lines


def retrieval_rates(out: Path) -> dict:
    """The retrieval hit rates recomputed from the stored files (`retrieval.json`'s top-3
    lists, the matrix's cells): per indicator and k, the stored rate (a hit when the top-k hold
    any of the sources tied for the best score), the rate with ties split (a hit counts
    |top-k & tied best| / |tied best|: the chance that the top-k hold the best source when ties
    are broken at random), and a random ranking's rate (k / the sources a target may retrieve);
    with the number of targets whose best score several sources share."""
    result = json.loads((out / "retrieval.json").read_text())
    names, all_targets, score, _ = transfer.matrix_arrays(_cells(out))
    sources, targets = result["sources"], result["targets"]
    best, valid = {}, {}
    for t in targets:
        valid[t] = [s for s in sources if s != t]
        actual = {s: score[names.index(s), all_targets.index(t)] for s in valid[t]}
        top = max(actual.values())
        best[t] = {s for s, v in actual.items() if v == top}
    ks = sorted(int(k) for k in next(iter(result["accuracy"].values())))
    rates = {}
    for name, retrieved in result["retrieved"].items():
        rates[name] = {}
        for k in ks:
            ties = [bool(set(retrieved[t][:k]) & best[t]) for t in targets]
            split = [len(set(retrieved[t][:k]) & best[t]) / len(best[t]) for t in targets]
            low, high = stats.bootstrap_interval(lambda c, axis=-1: np.mean(c, axis=axis),
                                                 (np.asarray(split, np.float64),))
            rates[name][k] = {"stored": result["accuracy"][name][str(k)],
                              "ties_as_hits": float(np.mean(ties)),
                              "ties_split": float(np.mean(split)),
                              "interval": stats.Estimate(float(np.mean(split)), low, high,
                                                         len(split)),
                              "ties_as_hits_interval": stats.accuracy(ties)}
    chance = {k: float(np.mean([k / len(valid[t]) for t in targets])) for k in ks}
    # A random ranking's top-k holds one of b tied best sources out of n: 1 - C(n-b, k) / C(n, k).
    chance_ties = {k: float(np.mean([1 - math.comb(len(valid[t]) - len(best[t]), k)
                                     / math.comb(len(valid[t]), k) for t in targets]))
                   for k in ks}
    tied = [t for t in targets if len(best[t]) > 1]
    top1 = {}  # from the stored values, ties split on both sides (where stored)
    if "values" in result and "actual" in result:
        actual = np.asarray(result["actual"], np.float64)  # [T, S]
        for name, table in result["values"].items():
            v = np.asarray(table, np.float64)
            keep = [[j for j, s in enumerate(sources) if s != t] for t in targets]
            top1[name] = stats.retrieval_hits([v[i, k] for i, k in enumerate(keep)],
                                              [actual[i, k] for i, k in enumerate(keep)])
    return {"rates": rates, "chance": chance, "chance_ties": chance_ties, "ks": ks,
            "tied": tied, "best": best, "targets": targets, "brief_steps": result["brief_steps"],
            "top1": top1}


def retrieval_part(out: Path) -> list[str]:
    if not (out / "retrieval.json").exists():
        return ["Retrieval: not measured yet."]
    r = retrieval_rates(out)
    ks, rates = r["ks"], r["rates"]
    head = " | ".join(f"top-{k}, ties split | top-{k}, ties as hits" for k in ks)
    lines = [f"A prompt trained {r['brief_steps']} steps on each target ranks the other source "
             "prompts; a hit is when the top-k include the target's best actual source in the "
             f"matrix ({len(r['targets'])} targets, each a seeded sample of up to "
             f"{max(c['examples'] for c in _cells(out))} validation examples per cell). On "
             f"{len(r['tied'])} of {len(r['targets'])} targets several sources share the best "
             "score (" + ", ".join(f"{t} {len(r['best'][t])}" for t in r["tied"]) + "): counting "
             "a hit when the top-k hold any of them (as the `transfer retrieve` command stores "
             "it) inflates the rate, chance's too, so the first columns split each tie (a tied "
             "best source in the top-k counts 1 / the number tied). Each rate with its 95% "
             f"interval over the {len(r['targets'])} targets: a bootstrap for ties split, "
             "Wilson's for ties as hits (a hit or a miss per target).", "",
             f"| indicator | {head} |", "|---" * (1 + 2 * len(ks)) + "|"]
    for name, by_k in rates.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{by_k[k]['interval'].text(digits=0)} | "
            f"{by_k[k]['ties_as_hits_interval'].text(digits=0)}" for k in ks) + " |")
    lines.append("| chance (a random ranking) | " + " | ".join(
        f"{r['chance'][k]:.0%} | {r['chance_ties'][k]:.0%}" for k in ks) + " |")
    mismatch = [n for n, by_k in rates.items() for k in ks
                if abs(by_k[k]["stored"] - by_k[k]["ties_as_hits"]) > 1e-9]
    if mismatch:
        lines += ["", "The recount with ties as hits differs from the stored rates for: "
                  + ", ".join(sorted(set(mismatch))) + "."]
    lines += ["", "Reading it (a rate is beyond chance when its 95% interval lies above "
              "chance's rate), with ties split: " + "; ".join(
                  f"top-{k} against chance {r['chance'][k]:.0%}: "
                  + _beyond_chance({n: by_k[k]["interval"] for n, by_k in rates.items()},
                                   r["chance"][k]) for k in ks)
              + f"; with {len(r['targets'])} targets one target moves a rate by "
              f"{1 / len(r['targets']):.0%}."]
    if r["top1"]:
        hits = r["top1"]
        first = next(iter(hits.values()))
        lines += ["", "From the stored indicator values (`stats.retrieval_hits`: a tie for the "
                  "indicator's top and a tie for the best score both split 1/k), top-1 with "
                  f"its 95% interval, against chance {first.chance / first.targets:.0%}: "
                  + "; ".join(f"{n} {h.rate.text(digits=0)}" for n, h in hits.items())
                  + ". Reading it: " + _beyond_chance(
                      {n: h.rate for n, h in hits.items()}, first.chance / first.targets)
                  + "."]
    lines += ["", f"Reproduce: the `transfer retrieve` command of `{SCRIPT}`."]
    return lines


def _beyond_chance(rates: dict[str, stats.Estimate], chance: float) -> str:
    """'X of Y indicators beyond chance, Z within chance's noise (names above chance)'."""
    above = [n for n, e in rates.items() if e.low > chance]
    return (stats.reading([n in above for n in rates], "indicators")
            .replace("beyond noise", "beyond chance").replace("within", "within chance's noise")
            + (f" ({', '.join(above)} above chance)" if above else ""))
