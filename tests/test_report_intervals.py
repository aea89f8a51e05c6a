"""The transfer tables of docs/results.md carry 95% intervals computed by `prompt_jax.stats`,
and their readings count those intervals: per-target rank correlations against scipy, the
source, sentiment-pair and domain-shift parts on made-up result files, and the released-prompt
and cross-model tables on their stored files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import stats as sps

from benchmarks import cross_model_report, released_indicators, released_projectors
from benchmarks.transfer_report_indicators import indicators_table
from benchmarks.transfer_report_tables import domain_part, sentiment_part, sources_part
from prompt_jax import stats, transfer
from prompt_jax.transfer import report as readings


def _wilson_text(k: int, n: int) -> str:
    low, high = stats.wilson_interval(k, n)
    return f"{100 * k / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def _points(e: stats.Estimate) -> str:
    return f"{100 * e.value:+.1f} [{100 * e.low:+.1f}, {100 * e.high:+.1f}]"


def _write(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_per_target_correlations_equal_scipy_with_ties_and_gaps():
    rng = np.random.default_rng(0)
    indicator = rng.integers(0, 4, size=(7, 5)).astype(float)  # ties on purpose
    measured = rng.integers(0, 5, size=(7, 5)).astype(float)
    valid = np.ones((7, 5), bool)
    valid[:5, 3] = False  # 2 valid sources: no correlation
    indicator[:, 4] = 1.0  # a constant indicator: no correlation
    per = transfer.per_target_correlations(indicator, measured, valid)
    for j in range(3):
        assert per["spearman"][j] == pytest.approx(
            sps.spearmanr(indicator[:, j], measured[:, j])[0], abs=1e-9)
        assert per["kendall"][j] == pytest.approx(
            sps.kendalltau(indicator[:, j], measured[:, j])[0], abs=1e-9)
    assert np.isnan(per["spearman"][3:]).all() and np.isnan(per["kendall"][3:]).all()
    stored = transfer.correlations(indicator, measured, valid)
    assert stored["targets"] == 4  # the constant one counted, as before
    assert stored["spearman_per_target"] == pytest.approx(np.mean(per["spearman"][:3]))


def _indicators_result(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    names = ["a", "b", "c", "d", "e"]
    relative = rng.uniform(0.5, 1.0, size=(5, 5))
    np.fill_diagonal(relative, 1.0)
    valid = ~np.eye(5, dtype=bool)
    tables = {"E_cos": relative + rng.normal(0, 0.1, size=(5, 5)),
              "ON_paper": rng.normal(size=(5, 5))}
    return {"sources": names, "targets": names, "relative": relative.tolist(), "n_inputs": 4,
            "indicators": {k: v.tolist() for k, v in tables.items()},
            "correlations": {k: transfer.correlations(v, relative, valid)
                             for k, v in tables.items()}}


def test_the_indicator_table_carries_the_bootstrap_interval_over_targets():
    result = _indicators_result()
    per_target = readings.mean_spearman(result)
    text = "\n".join(indicators_table(result, per_target))
    relative = np.asarray(result["relative"])
    for name, table in result["indicators"].items():
        values = np.asarray(table)
        rhos = [sps.spearmanr(np.delete(values[:, j], j), np.delete(relative[:, j], j))[0]
                for j in range(5)]
        expected = readings.bootstrap_mean(rhos)
        assert per_target[name].value == pytest.approx(
            result["correlations"][name]["spearman_per_target"], abs=1e-12)
        assert (f"| {name} | {expected.value:+.3f} | [{expected.low:+.3f}, "
                f"{expected.high:+.3f}] |") in text


@pytest.fixture
def transfer_out(tmp_path):
    """A made-up experiment folder: two source prompts, their matrix cells against the
    template alone, and a domain-shift study."""
    out = tmp_path / "some-model"
    for task, k, n in (("sst2", 175, 200), ("rotten_tomatoes", 150, 200)):
        _write(out / "sources" / f"{task}.json", {
            "final": {"accuracy": k / n, "macro_f1": 0.8, "examples": n},
            "train_seconds": 12.0})
    for source, target, k in (("sst2", "sst2", 175), ("none", "sst2", 100),
                              ("rotten_tomatoes", "rotten_tomatoes", 150),
                              ("none", "rotten_tomatoes", 146),
                              ("sst2", "rotten_tomatoes", 138)):
        _write(out / "cells" / f"{source}__{target}.json",
               {"source": source, "target": target, "accuracy": k / 200, "examples": 200})
    _write(out / "domain_shift" / "model_tuning_run.json", {"task": "sst2"})
    for row, target, k, n in (("prompt", "sst2", 430, 500), ("model_tuning", "sst2", 450, 500),
                              ("prompt", "rotten_tomatoes", 390, 500),
                              ("model_tuning", "rotten_tomatoes", 420, 500),
                              ("prompt", "imdb", 300, 500), ("model_tuning", "imdb", 400, 500),
                              ("prompt", "laptop", 100, 200),
                              ("model_tuning", "laptop", 104, 200)):
        _write(out / "domain_shift" / f"{row}__{target}.json",
               {"row": row, "target": target, "accuracy": k / n, "examples": n})
    return out


def test_each_source_carries_its_wilson_interval_and_the_reading_counts_them(transfer_out):
    text = "\n".join(sources_part(transfer_out))
    assert f"| sst2 | {_wilson_text(175, 200)} | 0.80 | 200 | 12 |" in text
    assert f"| rotten_tomatoes | {_wilson_text(150, 200)} |" in text
    # 175 vs 100 of 200 is beyond noise, 150 vs 146 is not.
    assert stats.unpaired_difference(175, 200, 100, 200).low > 0
    assert stats.unpaired_difference(150, 200, 146, 200).excludes(0.0) is False
    assert "1 of 2 targets beyond noise, 1 within (1 above, 0 below" in text


def test_the_sentiment_pair_carries_intervals_and_the_gap_from_counts_or_rows(transfer_out):
    text = "\n".join(sentiment_part(transfer_out))
    row = next(line for line in text.splitlines() if line.startswith("| prompt_jax"))
    for k in (175, 138, 150):
        assert _wilson_text(k, 200) in row
    gap = stats.unpaired_difference(138, 200, 150, 200)
    assert f"{100 * gap.value:+.1f} points, 95% interval [{100 * gap.low:+.1f}, " in text
    assert "Newcombe" in text and "no sample sizes" in text
    # With per-row outcomes stored, the gap is paired on the same rows.
    rng = np.random.default_rng(0)
    own, zero = rng.random(200) < 0.75, rng.random(200) < 0.5
    for source, correct in (("sst2", zero), ("rotten_tomatoes", own)):
        path = transfer_out / "cells" / f"{source}__rotten_tomatoes.json"
        cell = json.loads(path.read_text())
        _write(path, {**cell, "accuracy": float(correct.mean()), "correct": correct.tolist()})
    text = "\n".join(sentiment_part(transfer_out))
    paired = stats.paired_difference(zero, own).difference
    assert f"{100 * paired.value:+.1f} points, 95% interval [{100 * paired.low:+.1f}, " in text
    assert "a paired bootstrap on the same rows" in text and "falls short of it" in text


def test_domain_shift_differences_carry_newcombe_intervals_and_the_verdict_counts_them(
        transfer_out):
    text = "\n".join(domain_part(transfer_out))
    counts = {"sst2": (430, 500, 450, 500), "rotten_tomatoes": (390, 500, 420, 500),
              "imdb": (300, 500, 400, 500), "laptop": (100, 200, 104, 200)}
    for target, (kp, n_p, km, nm) in counts.items():
        line = next(x for x in text.splitlines() if x.startswith(f"| {target}"))
        assert _wilson_text(kp, n_p) in line and _wilson_text(km, nm) in line
        assert line.endswith(f"| {_points(stats.unpaired_difference(kp, n_p, km, nm))} |")
    # rotten_tomatoes shares sst2's texts: the shifted targets are imdb (below) and laptop.
    assert "on the 2 shifted domains" in text
    assert "1 of 2 targets beyond noise, 1 within (0 with the prompt above model tuning, " \
           "1 below)" in text
    assert "does not hold" in text


def test_the_released_indicator_table_carries_its_intervals():
    result = json.loads(released_indicators.OUTPUT.read_text())
    text = released_indicators.markdown(result)
    for bb in result["backbones"].values():
        relative = np.asarray(bb["relative"])
        targets = bb["targets"]
        for name, table in bb["indicators"].items():
            values = np.asarray(table)
            rhos = []
            for j, t in enumerate(targets):
                keep = [i for i, s in enumerate(bb["sources"]) if s != t]
                rhos.append(sps.spearmanr(values[keep, j], relative[keep, j])[0])
            rho = readings.bootstrap_mean(rhos)
            assert rho.value == pytest.approx(
                bb["correlations"][name]["spearman_per_target"], abs=1e-6)
            hits = round(bb["retrieval"][name]["top1"] * len(targets))
            low, high = stats.wilson_interval(hits, len(targets))
            label = released_indicators.INDICATOR_LABELS[name]
            assert re.search(
                rf"\| {bb['model']} \| {re.escape(label)} \| "
                rf"{re.escape(rho.text(percent=False, digits=2))} \|.*\| "
                rf"{hits / len(targets):.2f} \[{low:.2f}, {high:.2f}\] \|", text), name
    assert re.search(r"per-target Spearman, \d+ of 12 indicators beyond noise", text)
    assert re.search(r"top-1, \d+ of 12 indicators beyond chance", text)


def test_the_released_projector_table_carries_its_intervals():
    result = json.loads(released_projectors.OUTPUT.read_text())
    text = released_projectors.markdown(result)
    pair = result["pairs"]["T5Small->T5"]
    ranks = np.asarray(pair["methods"]["linear"]["E_cos"]["ranks"])
    hits = int((ranks == 1).sum())
    low, high = stats.wilson_interval(hits, ranks.size)
    mean_rank = readings.bootstrap_mean(ranks.astype(float))
    assert (f"| least-squares linear | {hits / ranks.size:.2f} [{low:.2f}, {high:.2f}] | "
            f"{mean_rank.value:.1f} [{mean_rank.low:.1f}, {mean_rank.high:.1f}] |") in text
    rankings = [(r, p["chance"]) for p in result["pairs"].values()
                for r in p["methods"].values()]
    rankings.append((result["paper_T5_to_Roberta"]["ranks"], result["pairs"]["T5->Roberta"][
        "chance"]))
    beyond = 0
    for r, chance in rankings:
        for name in ("E_cos", "E_euc"):
            ranks = np.asarray(r[name]["ranks"])
            beyond += stats.wilson_interval(int((ranks == 1).sum()), ranks.size)[0] > \
                chance["top1"]
    assert (f"top-1, {beyond} of {2 * len(rankings)} (projection, indicator) pairs beyond "
            "chance") in text


def test_the_cross_model_tables_carry_wilson_intervals_and_count_them():
    folder = cross_model_report.OUT / "distance" / "smollm2_to_gemma3"
    lines = cross_model_report.distance_table("smollm2", "gemma3")
    text = "\n".join(lines)
    flat = next(x for x in lines if x.startswith("| paper's projector (flat) |"))
    for task in cross_model_report.TASKS:
        cell = json.loads((folder / f"flat__{task}.json").read_text())
        k, n = round(cell["accuracy"] * cell["examples"]), cell["examples"]
        low, high = stats.wilson_interval(k, n)
        assert f"| {100 * k / n:.1f} ({100 * low:.0f}-{100 * high:.0f}) |" in flat
    diffs = []
    for task in cross_model_report.TASKS:
        a, b = (json.loads((folder / f"{key}__{task}.json").read_text())
                for key in ("flat", "none"))
        diffs.append(stats.unpaired_difference(
            round(a["accuracy"] * a["examples"]), a["examples"],
            round(b["accuracy"] * b["examples"]), b["examples"]))
    above = sum(d.low > 0 for d in diffs)
    below = sum(d.high < 0 for d in diffs)
    row = next(x for x in lines if x.startswith("| flat |"))
    assert row.startswith(f"| flat | {above} above, {below} below, "
                          f"{len(diffs) - above - below} within |")
    assert "task comparisons beyond noise" in text


def test_the_init_table_names_a_target_whose_summary_lacks_stored_runs_or_starts(tmp_path):
    from benchmarks.transfer_report import init_part

    def run(target, arm, seed, final):
        return {"target": target, "arm": arm, "seed": seed, "final": final,
                "curve": [[0, 0.5], [20, final - 0.05], [40, final]]}

    for target, arms in (("sst2", ("baseline", "text")), ("trec", ("baseline",))):
        runs = [run(target, arm, seed, 0.8 + 0.01 * seed) for arm in arms for seed in (0, 1)]
        for r in runs:
            _write(tmp_path / "init" / target / f"{r['arm']}__seed{r['seed']}.json", r)
        _write(tmp_path / "init" / target / "zero_shot.json", {"examples": 200})
        _write(tmp_path / "init" / target / "summary.json",
               {"target": target, "zero_shot": 0.5, "arms": transfer.init_summary(runs, 0.5),
                "notes": {}, "recipe": {"steps": 40}, "eval_every": 20})
    text = "\n".join(init_part(tmp_path))
    assert "Still running: trec (2 of 2 stored runs in its summary; no text yet)." in text
    # a run stored after the summary was written is named too, and sst2 alone is whole
    _write(tmp_path / "init" / "sst2" / "text__seed2.json", run("sst2", "text", 2, 0.8))
    text = "\n".join(init_part(tmp_path))
    assert "Still running: sst2 (4 of 5 stored runs in its summary), trec (2 of 2" in text
