"""QA and summarization metrics: SQuAD v1.1's official definitions, NQ-Open's exact match, and
ROUGE through Google's rouge-score package."""

from __future__ import annotations

import numpy as np
import pytest
from rouge_score import rouge_scorer

from prompt_jax.tasks import metrics


@pytest.mark.parametrize("text,normalized", [
    ("The Denver Broncos", "denver broncos"),
    ("  a  Cat,\tan owl!  ", "cat owl"),
    ("U.S. Army", "us army"),
    ("theatre", "theatre"),  # articles only as whole words
    ("The", ""),
])
def test_normalization_is_squads(text, normalized):
    assert metrics.normalize_answer(text) == normalized


def test_squad_exact_match_and_f1_take_the_best_gold_answer():
    predictions = ["the Denver Broncos", "Denver", "Broncos won", "x x y", ""]
    references = [["Denver Broncos", "Broncos"], ["Denver Broncos"],
                  ["Denver Broncos", "Broncos"], ["x y y"], ["anything"]]
    # per question (EM, F1), computed by hand from the official script's definitions:
    # 1: exact after normalization -> (1, 1)
    # 2: one of two gold tokens: P 1, R 1/2 -> F1 2/3
    # 3: vs "Broncos": P 1/2, R 1 -> 2/3; vs "Denver Broncos": 1/2 -> max 2/3
    # 4: common tokens counted with multiplicity: {x: 1, y: 1} -> P = R = 2/3 -> 2/3
    # 5: an empty prediction shares nothing -> 0
    result = metrics.squad_metrics(predictions, references)
    assert result["exact_match"] == pytest.approx(1 / 5, abs=1e-12)
    assert result["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 2 / 3 + 0) / 5, abs=1e-12)


def test_nq_open_exact_match_against_any_answer():
    result = metrics.nq_open_metrics(["the 1990s", "Paris, France", "42"],
                                     [["1990s", "nineties"], ["Paris"], ["forty-two", "42"]])
    assert result == {"exact_match": pytest.approx(2 / 3, abs=1e-12)}


def test_rouge_equals_rouge_score_with_stemming():
    predictions = ["the cats were sitting on a mat", "Amanda will call Tom tomorrow.",
                   "nothing in common"]
    references = [["the cat sat on the mat"], ["Amanda is going to call Tom.", "Tom gets a call"],
                  ["completely different words"]]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = {k: sum(max(scorer.score(g, p)[k].fmeasure for g in golds)
                       for p, golds in zip(predictions, references, strict=True)) / 3
                for k in ("rouge1", "rouge2", "rougeL")}
    assert metrics.rouge_metrics(predictions, references) == pytest.approx(expected, abs=1e-12)
    stemmed = metrics.rouge_metrics(["cats sitting"], [["cat sits"]])
    assert stemmed["rouge1"] == 1.0  # without stemming it would be 0


def test_bad_rows_are_refused():
    with pytest.raises(ValueError, match="one non-empty list of references per prediction"):
        metrics.squad_metrics(["a"], [])
    with pytest.raises(ValueError, match="non-empty list of strings"):
        metrics.nq_open_metrics(["a"], ["a"])


@pytest.mark.parametrize("task", ["squad", "nq_open", "samsum"])
def test_a_task_computes_its_own_metrics_and_their_rows_average_to_them(task):
    predictions = ["Denver Broncos", "the 1990s", "Amanda will call Tom"]
    references = [["Denver Broncos", "Broncos"], ["1990s"], ["Amanda is going to call Tom."]]
    whole = metrics.compute(task, predictions, references)
    spec = metrics.get_task(task)
    assert tuple(whole) == spec.metric_names
    scorer = metrics.GENERATION_METRICS[spec.scorer](predictions, references)
    assert whole == {name: scorer[name] for name in spec.metric_names}
    rows = metrics.per_row(task, predictions, references)
    assert {name: float(np.mean(v)) for name, v in rows.items()} == pytest.approx(whole, abs=1e-12)
    assert all(v.shape == (3,) for v in rows.values())
    # seqio hands one target string per row: the same as a one-element list
    assert metrics.compute(task, predictions, [r[0] for r in references]) == metrics.compute(
        task, predictions, [r[:1] for r in references])
