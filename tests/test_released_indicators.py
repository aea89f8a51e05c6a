"""The released-indicators benchmark on the real Prompt-Transferability release: which tasks
it reads, the relative matrix against the result files read by hand, and the indicators of a
prompt with itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.released_indicators import (
    GENERATION_TASKS,
    evaluate_backbone,
    transfer_table,
)
from tests.shared_prompts import shared_prompts_dir

SHARED = shared_prompts_dir()


@pytest.fixture(scope="module")
def roberta():
    return transfer_table(SHARED, "Roberta")


def test_tasks_read_and_own_transfer_is_one(roberta):
    for task in ("SST2", "IMDB", "laptop", "MNLI"):
        assert task in roberta.sources and task in roberta.targets
    assert not {"random", "squad"} & set(roberta.sources + roberta.targets)
    assert {p.shape for p in roberta.prompts.values()} == {(100, 768)}
    for j, target in enumerate(roberta.targets):
        assert roberta.relative[roberta.sources.index(target), j] == 1.0
    t5 = transfer_table(SHARED, "T5")
    assert "SST2" in t5.sources and not GENERATION_TASKS & set(t5.sources + t5.targets)


def test_relative_is_the_ratio_of_the_result_files(roberta):
    def acc(folder, source):
        text = (SHARED / "prompt_transferability_results" / folder
                / f"result_{source}.json").read_text()
        return json.loads(json.loads(text))["acc"]

    expected = acc("SST2PromptRoberta", "IMDBPromptRoberta") / acc("SST2PromptRoberta",
                                                                   "SST2PromptRoberta")
    value = roberta.relative[roberta.sources.index("IMDB"), roberta.targets.index("SST2")]
    assert value == pytest.approx(expected, rel=1e-12)
    assert roberta.valid().sum() == len(roberta.sources) * (len(roberta.sources) - 1)


def test_indicators_of_a_prompt_with_itself_and_the_result_shape():
    result = evaluate_backbone(SHARED, "T5Small")
    sources, targets = result["sources"], result["targets"]
    e_cos, e_euc = (np.array(result["indicators"][k]) for k in ("E_cos", "E_euc"))
    for j, target in enumerate(targets):
        i = sources.index(target)
        assert e_cos[i, j] == pytest.approx(1.0, abs=1e-6)
        assert e_euc[i, j] == pytest.approx(1.0, abs=1e-6)
    assert e_cos.shape == (len(sources), len(targets))
    pairs = len(sources) * (len(sources) - 1)
    for corr in result["correlations"].values():
        assert corr["pairs"] == pairs and -1 <= corr["spearman_per_target"] <= 1
    for hits in result["retrieval"].values():
        assert 0 <= hits["top1"] <= hits["top3"] <= 1
    json.dumps(result, allow_nan=False)  # strict JSON
