"""Templates, verbalizers and truncation with each backbone's tokenizer (tiny ones in the fast
tier, SmolLM2's and MiniLM's own in the real_model tier); the metrics."""

from __future__ import annotations

import numpy as np
import pytest

from prompt_jax.tasks import candidates, compile_layout, get_task, list_tasks, read_split, render
from prompt_jax.tasks.encoding import encode_inputs
from prompt_jax.tasks.metrics import compute, evaluate_classification
from tests.task_tokenizers import BACKBONES, REAL_BACKBONES

CLASSIFICATION = [n for n in list_tasks() if not get_task(n).is_generation]


@pytest.fixture(scope="module", params=sorted(BACKBONES) + [
    pytest.param(name, marks=pytest.mark.real_model) for name in sorted(REAL_BACKBONES)])
def backbone(request):
    """(kind, style, tokenizer); the real tokenizers ("bert-minilm") are checked as their kind."""
    style, make = {**BACKBONES, **REAL_BACKBONES}[request.param]
    return request.param.split("-")[0], style, make()


def test_every_verbalizer_is_a_distinct_candidate(backbone):
    family, style, tok = backbone
    for name in CLASSIFICATION:
        ids, mask = candidates(name, tok, style)
        spec = get_task(name)
        assert ids.shape == mask.shape and ids.shape[0] == len(spec.labels)
        assert ids.dtype == np.int32 and mask.dtype == np.int32
        rows = {tuple(r[m == 1]) for r, m in zip(ids, mask, strict=True)}
        assert len(rows) == len(spec.labels), (family, name)
        for row, m, word in zip(ids, mask, spec.verbalizers_for(style), strict=True):
            text = tok.decode(row[m == 1].tolist())
            if style == "t5":
                assert row[m == 1][-1] == tok.eos_token_id and text.endswith(tok.eos_token)
            elif style == "causal":
                assert text == " " + word and tok.bos_token_id not in row[m == 1]
            else:
                assert not set(row[m == 1]) & set(tok.all_special_ids)
                assert text.replace(" ", "") == word.lower().replace(" ", "") or (
                    text == word)


def test_styles_and_their_verbalizers():
    assert get_task("rte").verbalizers_for("t5") == ("entailment", "not_entailment")
    assert get_task("rte").verbalizers_for("causal") == ("yes", "no")
    assert get_task("mrpc").verbalizers_for("t5") == ("not_equivalent", "equivalent")
    with pytest.raises(ValueError, match="unknown style 'gpt'"):
        get_task("sst2").verbalizers_for("gpt")


def _normal(tok, text: str) -> str:
    """What a lossy tokenizer (uncased WordPiece) keeps of a text: its normalized characters."""
    normalizer = tok.backend_tokenizer.normalizer
    text = normalizer.normalize_str(text) if normalizer else text
    return "".join(text.lower().split())


@pytest.mark.parametrize("task", ["sst2", "rte", "laptop", "ag_news"])
def test_template_round_trip(backbone, task):
    family, style, tok = backbone
    layout = compile_layout(task, tok, style)
    split = "test" if task == "ag_news" else "validation"
    examples, _ = read_split(task, split)
    for e in examples[:20]:
        ids, position = encode_inputs(layout, tok, e.text_a, e.text_b)
        decoded = tok.decode(ids)
        expected = render(layout, e.text_a, e.text_b)
        if family == "bert":
            assert _normal(tok, decoded) == _normal(tok, expected)
        elif family == "t5":  # sentencepiece collapses runs of spaces
            assert decoded.split() == expected.split()
        else:
            assert decoded == expected
        assert e.text_a in expected and e.text_b in expected
        if style == "mlm":
            assert ids[position] == tok.mask_token_id and position == 1
            assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        if style == "t5":
            assert ids[-1] == tok.eos_token_id and expected.startswith(f"{task} ")
        if style == "causal":
            assert expected.endswith(":") and "\n" in expected


def test_truncation_cuts_texts_and_keeps_the_template_end(backbone):
    family, style, tok = backbone
    layout = compile_layout("rte", tok, style)
    long_a, short_b = "the film is long " * 200, "it is short"
    full, _ = encode_inputs(layout, tok, long_a, short_b)
    cut, position = encode_inputs(layout, tok, long_a, short_b, max_length=48)
    assert len(full) > 48 and len(cut) == 48
    tail = {"t5": 1, "mlm": 1, "causal": len(layout.parts[-1].ids)}[style]
    assert cut[-tail:] == full[-tail:]  # EOS / [SEP] / "...Answer:" survive
    b_ids = tok(" " + short_b if style != "mlm" else short_b, add_special_tokens=False)[
        "input_ids"]
    assert any(cut[i:i + len(b_ids)] == b_ids for i in range(len(cut)))  # short text kept whole
    if style == "mlm":
        assert cut[position] == tok.mask_token_id
    with pytest.raises(ValueError, match="shorter than the .* template of 'rte'"):
        encode_inputs(layout, tok, "a", "b", max_length=layout.fixed_length - 1)


def test_classification_metrics_are_fractions_predictions_first():
    assert compute("sst2", [1, 1, 1, 0], [1, 0, 1, 1]) == {"accuracy": 0.5}
    # F1 of the positive class: predictions [1, 1, 0, 1, 0] vs labels [1, 1, 1, 0, 0]:
    # tp 2, fp 1, fn 1 -> precision 2/3, recall 2/3.
    result = compute("mrpc", [1, 1, 0, 1, 0], [1, 1, 1, 0, 0])
    assert result["accuracy"] == pytest.approx(0.6) and result["f1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="as many predictions"):
        compute("sst2", [1, 0], [1])


def test_evaluate_classification_reports_task_metrics_and_single_class_labels(caplog):
    result = evaluate_classification("mrpc", [1, 1, 0, 1, 0], [1, 1, 1, 0, 0])
    assert set(result) == {"accuracy", "macro_f1", "f1"}
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 2, fp 1, fn 1 -> 2/3
    assert result["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert evaluate_classification("sst2", [0, 1], [0, 1]) == {"accuracy": 1.0, "macro_f1": 1.0}
    # one class among the predictions only is not one class among the labels
    assert "single_class_labels" not in evaluate_classification("sst2", [0, 0, 0], [0, 1, 0])
    with caplog.at_level("WARNING"):
        result = evaluate_classification("sst2", [0, 1, 0, 0], [0, 0, 0, 0])
    assert result["single_class_labels"] == "negative" and result["accuracy"] == 0.75
    assert "all 4 evaluated examples of task 'sst2' have the label 'negative'" in caplog.text
