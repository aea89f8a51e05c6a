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


def indicators_part(out: Path) -> list[str]:
    path = out / "indicators.json"
    if not path.exists():
        return ["Indicator correlations on this matrix: not measured yet."]
    result = json.loads(path.read_text())
    corr = result["correlations"]
    pairs = max(c["pairs"] for c in corr.values())
    lines = ["Rank correlation of each indicator with relative performance over the matrix's "
             f"(source, target) pairs ({len(result['sources'])} sources, own prompts left "
             "out). ON over all layers" + (" (`_bottom_third`, `_top_third`: over that "
                                           "third)" if any(k.endswith("_third") for k in corr)
                                           else "") + ": "
             f"`paper` at the label position with an empty text, `inputs` there over "
             f"{result['n_inputs']} real inputs per target, `prompt` at every prompt "
             "position:", "",
             (out / "indicators.md").read_text().strip(), "",
             f"Pooled over {pairs} pairs, a Spearman beyond ±{1.96 / np.sqrt(pairs - 1):.3f} "
             "differs from zero at p < 0.05 (normal approximation); the per-target means "
             f"average correlations over {len(result['sources']) - 1} sources each."]
    per_target = _per_target_spearman(result)
    beyond = {k: e.excludes(0.0) for k, e in per_target.items()}
    lines += ["", "The per-target mean Spearman with its 95% interval (a bootstrap over the "
              f"{len(result['targets'])} targets): " + "; ".join(
                  f"{k} {e.text(percent=False, digits=2)}" for k, e in per_target.items())
              + ". Reading it: " + stats.reading(list(beyond.values()), "indicators")
              + (f" ({', '.join(k for k, b in beyond.items() if b)})" if any(beyond.values())
                 else "") + "."]
    lines += layers_part(per_target)
    best_on = max((k for k in corr if k.startswith("ON_")),
                  key=lambda k: corr[k]["spearman_per_target"], default=None)
    if best_on and "E_cos" in corr and np.isfinite(
            [corr[best_on]["spearman_per_target"], corr["E_cos"]["spearman_per_target"]]).all():
        on, cos = corr[best_on]["spearman_per_target"], corr["E_cos"]["spearman_per_target"]
        verdict = ("predicts transfer better than" if on > cos else
                   "does not predict transfer better than")
        lines.append(f"Here {best_on} (per-target Spearman {on:+.3f}) {verdict} E_cos "
                     f"({cos:+.3f}); the paper finds ON the better predictor.")
    lines += ["", f"Reproduce: the `transfer indicators` command of `{SCRIPT}`."]
    return lines


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


def _per_target_spearman(result: dict) -> dict[str, stats.Estimate]:
    """Each indicator's Spearman with relative transfer per target (its own prompt left out),
    averaged over targets with a bootstrap interval over targets."""
    from scipy import stats as sps

    sources, targets = result["sources"], result["targets"]
    relative = np.asarray(result["relative"], np.float64)  # [S, T]
    out = {}
    for name, table in result["indicators"].items():
        values = np.asarray(table, np.float64)
        rhos = []
        for j, t in enumerate(targets):
            keep = [i for i, s in enumerate(sources) if s != t
                    and np.isfinite(values[i, j]) and np.isfinite(relative[i, j])]
            if len(keep) >= 3 and np.ptp(values[keep, j]) > 0 and np.ptp(relative[keep, j]) > 0:
                rhos.append(float(sps.spearmanr(values[keep, j], relative[keep, j])[0]))
        if len(rhos) >= 2:
            out[name] = readings.bootstrap_mean(rhos)
    return out


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
                                                         len(split))}
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
             "best source in the top-k counts 1 / the number tied).", "",
             f"| indicator | {head} |", "|---" * (1 + 2 * len(ks)) + "|"]
    for name, by_k in rates.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{by_k[k]['ties_split']:.0%} | {by_k[k]['ties_as_hits']:.0%}" for k in ks) + " |")
    lines.append("| chance (a random ranking) | " + " | ".join(
        f"{r['chance'][k]:.0%} | {r['chance_ties'][k]:.0%}" for k in ks) + " |")
    mismatch = [n for n, by_k in rates.items() for k in ks
                if abs(by_k[k]["stored"] - by_k[k]["ties_as_hits"]) > 1e-9]
    if mismatch:
        lines += ["", "The recount with ties as hits differs from the stored rates for: "
                  + ", ".join(sorted(set(mismatch))) + "."]
    k0, chance = ks[0], r["chance"][ks[0]]
    beyond = {n: by_k[k0]["interval"].low > chance for n, by_k in rates.items()}
    lines += ["", f"Top-{k0} with ties split and its 95% interval (a bootstrap over the "
              f"{len(r['targets'])} targets), against chance {chance:.0%}: " + "; ".join(
                  f"{n} {by_k[k0]['interval'].text(digits=0)}" for n, by_k in rates.items())
              + ".", "", "Reading it: " + stats.reading(list(beyond.values()), "indicators")
              .replace("beyond noise", "beyond chance").replace("within", "within chance's "
                                                                "noise")
              + (f" ({', '.join(n for n, b in beyond.items() if b)} above chance)"
                 if any(beyond.values()) else "")
              + f"; with {len(r['targets'])} targets one target moves a rate by "
              f"{1 / len(r['targets']):.0%}."]
    if r["top1"]:
        hits = r["top1"]
        first = next(iter(hits.values()))
        lines += ["", "From the stored indicator values (`stats.retrieval_hits`: a tie for the "
                  "indicator's top and a tie for the best score both split 1/k), top-1 with "
                  f"its 95% interval, against chance {first.chance / first.targets:.0%}: "
                  + "; ".join(f"{n} {h.rate.text(digits=0)}" for n, h in hits.items())
                  + ". Reading it: " + stats.reading([h.beyond_chance for h in hits.values()],
                                                     "indicators")
                  .replace("beyond noise", "beyond chance")
                  .replace("within", "within chance's noise") + "."]
    lines += ["", f"Reproduce: the `transfer retrieve` command of `{SCRIPT}`."]
    return lines
