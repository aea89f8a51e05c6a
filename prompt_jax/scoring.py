"""Rank classification over verbalizers, with fixed-shape batches so evaluation compiles once
per length bucket."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np


def pad_candidates(token_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenized verbalizers -> ([C, K] ids, [C, K] mask), right-padded with 0.

    Raises:
      ValueError: a verbalizer is empty, or two verbalizers tokenize identically (they could
        never be told apart).
    """
    if any(len(t) == 0 for t in token_ids):
        raise ValueError(f"a verbalizer tokenizes to no tokens: {list(token_ids)}")
    if len({tuple(t) for t in token_ids}) != len(token_ids):
        raise ValueError(f"verbalizers are not distinct after tokenization: {list(token_ids)}")
    k = max(len(t) for t in token_ids)
    ids = np.zeros((len(token_ids), k), np.int32)
    mask = np.zeros((len(token_ids), k), np.int32)
    for i, t in enumerate(token_ids):
        ids[i, : len(t)] = t
        mask[i, : len(t)] = 1
    return ids, mask


@dataclasses.dataclass(frozen=True)
class Batch:
    """A fixed-shape batch: rows `index` of the dataset (-1 marks filler rows)."""

    index: np.ndarray  # [B]
    ids: np.ndarray  # [B, T]
    mask: np.ndarray  # [B, T]


def length_bucketed_batches(
    token_ids: Sequence[Sequence[int]],
    batch_size: int,
    pad_id: int,
    bucket: int = 16,
    max_length: int | None = None,
) -> Iterator[Batch]:
    """Batches of examples sorted by length, padded to a multiple of `bucket` tokens.

    Every batch has exactly `batch_size` rows (the last one is filled with empty rows whose
    index is -1), so a jitted function sees only a handful of shapes. Sequences longer than
    `max_length` keep their last `max_length` tokens (where the prediction happens).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.argsort([len(t) for t in token_ids], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        seqs = [list(token_ids[i]) for i in rows]
        if max_length is not None:
            seqs = [s[-max_length:] for s in seqs]
        width = -(-max(len(s) for s in seqs) // bucket) * bucket
        ids = np.full((batch_size, width), pad_id, np.int32)
        mask = np.zeros((batch_size, width), np.int32)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = s
            mask[r, : len(s)] = 1
        index = np.full((batch_size,), -1, np.int64)
        index[: len(rows)] = rows
        yield Batch(index, ids, mask)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to labels."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.size == 0:
        raise ValueError(f"shapes {predictions.shape} and {labels.shape} (non-empty, equal)")
    return float((predictions == labels).mean())
