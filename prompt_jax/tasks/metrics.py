"""Metrics, the one place they are computed: plain numpy, no TensorFlow.

One convention everywhere: every function takes `(predictions, labels)` (class indices, in that
order) or `(predictions, references)` (generated strings, and per row the gold strings) and
returns fractions in [0, 1] (accuracy 0.861 is printed as 86.1%).
`evaluate_classification` is what a run reports: accuracy, macro-F1 and the task's own metrics
(`TaskSpec.metric_names`, e.g. MRPC's F1), and a warning when every label is one class.
"""

from __future__ import annotations

import collections
import logging
import re
import string
from collections.abc import Sequence

import numpy as np

from prompt_jax.tasks.registry import TaskSpec, get_task

log = logging.getLogger(__name__)

SINGLE_CLASS = "single_class_labels"


def _arrays(predictions: Sequence[int], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.size == 0:
        raise ValueError(f"need as many predictions as labels (non-empty), got shapes "
                         f"{predictions.shape} and {labels.shape}")
    return predictions, labels


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of predictions equal to their labels.

    Raises:
      ValueError: the two differ in shape, or are empty.
    """
    predictions, labels = _arrays(predictions, labels)
    return float((predictions == labels).mean())


def binary_f1(predictions: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC / QQP F1), 0.0 when it has no true positive."""
    predictions, labels = _arrays(predictions, labels)
    p, t = predictions == positive, labels == positive
    tp = float(np.sum(t & p))
    if tp == 0:
        return 0.0
    precision, recall = tp / float(p.sum()), tp / float(t.sum())
    return 2 * precision * recall / (precision + recall)


def macro_f1(predictions: Sequence[int], labels: Sequence[int], num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in labels or predictions."""
    predictions, labels = _arrays(predictions, labels)
    scores = []
    for c in range(num_classes):
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def classification_metrics(predictions: Sequence[int], labels: Sequence[int],
                           num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 (classes absent from both predictions and labels are skipped)."""
    return {"accuracy": accuracy(predictions, labels),
            "macro_f1": macro_f1(predictions, labels, num_classes)}


def compute(task: str | TaskSpec, predictions: Sequence[int], labels: Sequence[int]
            ) -> dict[str, float]:
    """The task's own metrics (`TaskSpec.metric_names`): "accuracy", and "f1" for MRPC / QQP,
    of class indices; a generation task's (`TaskSpec.scorer`: SQuAD's EM and F1, NQ-Open's EM,
    ROUGE) of generated texts against each row's gold texts."""
    spec = get_task(task)
    if spec.is_generation:  # predictions: texts; labels: per row its gold texts (or one text)
        references = [[r] if isinstance(r, str) else list(r) for r in labels]
        result = GENERATION_METRICS[spec.scorer](list(predictions), references)
        return {name: result[name] for name in spec.metric_names}
    result = {"accuracy": accuracy(predictions, labels)}
    if "f1" in spec.metric_names:
        result["f1"] = binary_f1(predictions, labels)
    return {name: result[name] for name in spec.metric_names}


def per_row(task: str | TaskSpec, predictions: Sequence[str],
            references: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """A generation task's metrics row by row ([N] each; their means are `compute`'s): what
    intervals and paired comparisons are drawn from."""
    spec = get_task(task)
    rows = [compute(spec, [p], [r]) for p, r in zip(predictions, references, strict=True)]
    return {name: np.asarray([row[name] for row in rows]) for name in spec.metric_names}


def evaluate_classification(task: str | TaskSpec, predictions: Sequence[int],
                            labels: Sequence[int]) -> dict[str, float | str]:
    """What a run reports for one evaluation: accuracy, macro_f1 and the task's own metrics.

    When every evaluated label is one class (e.g. the first rows of a file sorted by label),
    the result also holds `"single_class_labels": <that class's name>` and a warning is logged:
    accuracy then only says how often the model picks that class.

    Args:
      task: a registered task (or its spec).
      predictions: predicted class indices.
      labels: gold class indices, as many as predictions.

    Returns:
      {"accuracy", "macro_f1", <the task's metric_names>...} as fractions in [0, 1], plus
      "single_class_labels" (a label name) when the labels are all one class.

    Raises:
      ValueError: predictions and labels differ in length, or are empty.
    """
    spec = get_task(task)
    result: dict[str, float | str] = dict(
        classification_metrics(predictions, labels, len(spec.labels)))
    result.update(compute(spec, predictions, labels))
    classes = np.unique(np.asarray(labels))
    if len(classes) == 1 and len(spec.labels) > 1:
        name = spec.labels[int(classes[0])]
        result[SINGLE_CLASS] = name
        log.warning("all %d evaluated examples of task %r have the label %r: the metrics only "
                    "say how often the model predicts that class (evaluate on more rows, or a "
                    "split that is not sorted by label)", len(labels), spec.name, name)
    return result


def label_from_text(task: str | TaskSpec, style: str, text: str) -> int:
    """The class whose verbalizer the generated `text` spells (-1 if none): seqio postprocess."""
    words = [w.strip().lower() for w in get_task(task).verbalizers_for(style)]
    text = text.strip().lower()
    return words.index(text) if text in words else -1


# --- generation: question answering and summarization ---------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's official answer normalization (also NQ-Open's / EfficientQA's): lower case,
    punctuation removed, then the articles a / an / the, then runs of whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_f1(prediction: str, gold: str) -> float:
    """Token F1 between a predicted and a gold answer after `normalize_answer` (SQuAD's)."""
    predicted, golden = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((collections.Counter(predicted) & collections.Counter(golden)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(golden)
    return 2 * precision * recall / (precision + recall)


def _check_rows(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need one non-empty list of references per prediction, got "
                         f"{len(predictions)} predictions and {len(references)} reference lists")
    if any(isinstance(r, str) or not r for r in references):
        raise ValueError("each row's references must be a non-empty list of strings")


def squad_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]
                  ) -> dict[str, float]:
    """SQuAD v1.1's exact match and F1: each the maximum over a question's gold answers,
    averaged over questions."""
    _check_rows(predictions, references)
    em = [max(float(normalize_answer(p) == normalize_answer(g)) for g in golds)
          for p, golds in zip(predictions, references, strict=True)]
    f1 = [max(answer_f1(p, g) for g in golds)
          for p, golds in zip(predictions, references, strict=True)]
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}


def nq_open_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]
                    ) -> dict[str, float]:
    """NQ-Open's exact match: the normalized prediction equals any normalized gold answer."""
    _check_rows(predictions, references)
    return {"exact_match": float(np.mean([
        any(normalize_answer(p) == normalize_answer(g) for g in golds)
        for p, golds in zip(predictions, references, strict=True)]))}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]
                  ) -> dict[str, float]:
    """ROUGE-1/2/L F1 with Porter stemming (Google's `rouge-score` package), per summary the
    best over its references, averaged over summaries."""
    from rouge_score import rouge_scorer

    _check_rows(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, golds in zip(predictions, references, strict=True):
        scores = [scorer.score(gold, prediction) for gold in golds]  # (target, prediction)
        for kind in ROUGE_TYPES:
            totals[kind] += max(s[kind].fmeasure for s in scores)
    return {kind: total / len(predictions) for kind, total in totals.items()}


GENERATION_METRICS = {"squad": squad_metrics, "nq_open": nq_open_metrics, "rouge": rouge_metrics}
