"""Task metrics as pure Python/numpy functions: accuracy, binary F1, SQuAD exact match / F1,
and ROUGE-1/2/L (F-measure, the `rouge_score` defaults without stemming). All values are in
percent, as the papers report them."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

from prompt_jax.tasks.registry import TaskSpec, get_task


def _check(targets, predictions) -> None:
    if len(targets) != len(predictions) or len(targets) == 0:
        raise ValueError(f"need as many predictions as targets (non-empty), got "
                         f"{len(predictions)} and {len(targets)}")


def accuracy(targets: Sequence[int], predictions: Sequence[int]) -> float:
    _check(targets, predictions)
    return 100.0 * float(np.mean(np.asarray(targets) == np.asarray(predictions)))


def binary_f1(targets: Sequence[int], predictions: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC / QQP F1)."""
    _check(targets, predictions)
    t, p = np.asarray(targets) == positive, np.asarray(predictions) == positive
    tp = float(np.sum(t & p))
    if tp == 0:
        return 0.0
    precision, recall = tp / float(p.sum()), tp / float(t.sum())
    return 100.0 * 2 * precision * recall / (precision + recall)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, articles or extra spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(reference: str, prediction: str) -> float:
    ref, pred = normalize_answer(reference).split(), normalize_answer(prediction).split()
    common = sum((Counter(ref) & Counter(pred)).values())
    if not ref or not pred:
        return float(ref == pred)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad(references: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    """Exact match and token F1, each the best over an example's reference answers."""
    _check(references, predictions)
    em = [max(normalize_answer(r) == normalize_answer(p) for r in refs)
          for refs, p in zip(references, predictions, strict=True)]
    f1 = [max(_token_f1(r, p) for r in refs)
          for refs, p in zip(references, predictions, strict=True)]
    return {"exact_match": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f1))}


def rouge_tokens(text: str) -> list[str]:
    """Lower case, every run of non-alphanumerics a separator (rouge_score's tokenizer)."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _f_measure(overlap: float, n_ref: int, n_pred: int) -> float:
    if overlap == 0 or n_ref == 0 or n_pred == 0:
        return 0.0
    precision, recall = overlap / n_pred, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def rouge_n(reference: str, prediction: str, n: int) -> float:
    """ROUGE-N F-measure of one prediction (0..1)."""
    ref, pred = rouge_tokens(reference), rouge_tokens(prediction)
    ref_ngrams = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
    pred_ngrams = Counter(tuple(pred[i:i + n]) for i in range(len(pred) - n + 1))
    overlap = sum((ref_ngrams & pred_ngrams).values())
    return _f_measure(overlap, sum(ref_ngrams.values()), sum(pred_ngrams.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(len(b)) memory)."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(reference: str, prediction: str) -> float:
    """ROUGE-L (sentence-level LCS) F-measure of one prediction (0..1)."""
    ref, pred = rouge_tokens(reference), rouge_tokens(prediction)
    return _f_measure(lcs_length(ref, pred), len(ref), len(pred))


def rouge(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures, in percent."""
    _check(references, predictions)
    pairs = list(zip(references, predictions, strict=True))
    return {"rouge1": 100.0 * float(np.mean([rouge_n(r, p, 1) for r, p in pairs])),
            "rouge2": 100.0 * float(np.mean([rouge_n(r, p, 2) for r, p in pairs])),
            "rougeL": 100.0 * float(np.mean([rouge_l(r, p) for r, p in pairs]))}


def compute(task: str | TaskSpec, targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """The task's metrics (`TaskSpec.metric_names`).

    Args:
      task: a registered task.
      targets: class indices (classification); reference lists (QA) or strings (summaries).
      predictions: class indices (classification) or generated strings.
    """
    spec = get_task(task)
    if spec.family == "qa":
        refs = [[t] if isinstance(t, str) else list(t) for t in targets]
        result = squad(refs, predictions)
    elif spec.family == "summarization":
        result = rouge([t if isinstance(t, str) else t[0] for t in targets], predictions)
    else:
        result = {"accuracy": accuracy(targets, predictions)}
        if "f1" in spec.metric_names:
            result["f1"] = binary_f1(targets, predictions)
    return {name: result[name] for name in spec.metric_names}


def label_from_text(task: str | TaskSpec, style: str, text: str) -> int:
    """The class whose verbalizer the generated `text` spells (-1 if none): seqio postprocess."""
    words = [w.strip().lower() for w in get_task(task).verbalizers_for(style)]
    text = text.strip().lower()
    return words.index(text) if text in words else -1
