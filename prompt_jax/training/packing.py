"""Packing: several examples in one row, all continuing one shared prefix prompt.

A decoder-only backbone computes a single prefix prompt once per batch (`shares_prefix`), so
its examples need not sit one per row: packed end to end, each token attending only to the
earlier tokens of its own example (and to the prefix), with positions restarting at every
example, they give the same scores and gradients as the fixed-shape batch without computing
its padding. For short inputs that is most of the work: SST-2's train batches of 8 are 2.4x
more padded tokens than real ones.

A packed batch keeps the per-example arrays of a batch (targets, target_mask, label, weight,
... [B]) and replaces inputs / input_mask [B, T] by
  inputs, input_mask, segment_ids, positions: [R, S]  (R rows, S a multiple of `multiple`)
  last: [B]  flat index (row * S + column) of each example's last input token
with examples i * B / R ... (i + 1) * B / R - 1 in row i, so that a batch split over R data
shards keeps each shard's examples in its own row. Filler rows (weight 0) take no room.

A generation task's batch is packed with its targets (`targets=True`): each example is its
input followed by its target's real tokens (the gold text and EOS) in one segment, as the
unpacked batch's teacher forcing puts them, and
  last: [B, K]  flat index of the token that predicts each target token (the last input token
                for the first, then the target's own tokens; a padded slot's stays in its example)
so that `score_packed` reads the target's log-likelihood from K hidden states per example.
Single-token candidates are still scored at `last[:, 0]`; only the packed target itself can
be scored token by token (a batch of C > 1 multi-token candidates stays one example per row:
each candidate would need its own copy of the input).

Host-side numpy, pure functions; `Packer` decides per batch whether packing pays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np


def is_packed(batch: dict) -> bool:
    return "segment_ids" in batch


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _real(batch: dict, key: str) -> np.ndarray:
    """Real tokens per example of `key` ("input_mask", "target_mask"); 0 for filler rows."""
    return np.where(np.asarray(batch["weight"]) > 0, np.asarray(batch[key]).sum(1), 0)


def _lengths(batch: dict, targets: bool = False) -> np.ndarray:
    """Tokens each example takes in a packed row: its input's (and its target's)."""
    return _real(batch, "input_mask") + (_real(batch, "target_mask") if targets else 0)


def packed_width(batch: dict, rows: int, multiple: int, targets: bool = False) -> int:
    """S: the longest row's tokens, rounded up to `multiple`."""
    per_row = _lengths(batch, targets).reshape(rows, -1).sum(1)
    return _round_up(int(per_row.max()), multiple)


def _example(batch: dict, i: int, targets: bool) -> np.ndarray:
    """Example i's real tokens: its input's (then its target's)."""
    parts = [("inputs", "input_mask")] + ([("targets", "target_mask")] if targets else [])
    return np.concatenate([np.asarray(batch[ids])[i][np.asarray(batch[mask])[i] > 0]
                           for ids, mask in parts])


def pack_batch(batch: dict, rows: int = 1, multiple: int = 32, pad_id: int = 0,
               targets: bool = False) -> dict:
    """The batch with its examples packed into `rows` rows (see the module docstring).

    Each example's real tokens (mask == 1) keep their order; examples must be right-padded or
    padded anywhere, as only the masks say which tokens are real.

    Args:
      batch: a fixed-shape batch (inputs, input_mask [B, T]; targets, target_mask [B, K];
        weight [B], ...).
      rows: R, rows of the packed batch (B a multiple of it).
      multiple: S is rounded up to a multiple of this.
      pad_id: the id written into padding.
      targets: each example's target tokens follow its input in its segment (a generation
        task's teacher forcing); `last` is then [B, K].

    Raises:
      ValueError: the batch is already packed, or its size is not a multiple of `rows`.
    """
    if is_packed(batch):
        raise ValueError("the batch is already packed")
    b = np.asarray(batch["inputs"]).shape[0]
    if rows < 1 or b % rows:
        raise ValueError(f"cannot pack {b} examples into {rows} rows evenly")
    per_row = b // rows
    real, n_inputs = np.asarray(batch["weight"]) > 0, _real(batch, "input_mask")
    width = packed_width(batch, rows, multiple, targets)
    packed = np.full((rows, width), pad_id, np.int32)
    segments = np.zeros((rows, width), np.int32)
    positions = np.zeros((rows, width), np.int32)
    last = np.zeros((b,), np.int32)
    cursor = np.zeros((rows,), np.int64)
    for i in range(b):
        row = i // per_row
        start, tokens = int(cursor[row]), _example(batch, i, targets) if real[i] else []
        n = len(tokens)
        if n:
            packed[row, start:start + n] = tokens
            segments[row, start:start + n] = i % per_row + 1
            positions[row, start:start + n] = np.arange(n)
        # A filler row (n = 0) points at any token: its weight of 0 drops its score.
        last[i] = row * width + max(start + int(n_inputs[i]) - 1, 0)
        cursor[row] += n
    out = {k: v for k, v in batch.items() if k not in ("inputs", "input_mask")}
    if targets:  # target slot j is predicted by the token before it: the real slots before j
        mask = (np.asarray(batch["target_mask"]) > 0) & real[:, None]  # [B, K]
        last = last[:, None] + np.cumsum(mask, 1) - mask  # [B, K], within each example
    out.update(inputs=packed, input_mask=(segments > 0).astype(np.int32),
               segment_ids=segments, positions=positions, last=last.astype(np.int32))
    return out


def attention_cost(rows: int, width: int, prefix: int, keys_per_token: float) -> float:
    """Relative cost of a forward pass over [rows, width] tokens after a `prefix`-token prompt:
    every token's matmuls plus its attention over (prefix + width) keys, in token units."""
    return rows * width * (1.0 + (prefix + width) / keys_per_token)


@dataclasses.dataclass(frozen=True)
class Packer:
    """Packs a batch when that costs less than the fixed-shape batch (long, unpadded inputs
    such as truncated IMDB reviews are not worth it: a packed row's attention grows with its
    square).

    Attributes:
      rows: rows of a packed batch (the mesh's data-axis size).
      prefix_length: the prompt's length P (attended to by every token).
      keys_per_token: the backbone's `pack_keys_per_token()`.
      multiple: S is rounded up to a multiple of this (fewer shapes, fewer compilations).
      pad_id: the id written into padding.
      targets: pack each example's target after its input (a generation task; the unpacked
        batch computes [B, T + K] then).
    """

    rows: int
    prefix_length: int
    keys_per_token: float
    multiple: int = 32
    pad_id: int = 0
    targets: bool = False

    def pays(self, batch: dict) -> bool:
        b, t = np.asarray(batch["inputs"]).shape
        if self.targets:
            t += np.asarray(batch["targets"]).shape[1]
        width = packed_width(batch, self.rows, self.multiple, self.targets)
        packed = attention_cost(self.rows, width, self.prefix_length, self.keys_per_token)
        return packed < attention_cost(b, t, self.prefix_length, self.keys_per_token)

    def __call__(self, batch: dict) -> dict:
        if is_packed(batch) or not self.pays(batch):
            return batch
        return pack_batch(batch, self.rows, self.multiple, self.pad_id, self.targets)


def packer_for(candidates, placement: str, keys_per_token: float, *, rows: int,
               prefix_length: int, pad_id: int) -> Packer | None:
    """A task's packer, or None where packing does not apply (one example per row: same
    results, more FLOPs).

    Packing applies on a backbone that packs (`keys_per_token` > 0: decoder-only), with the
    prompt at the prefix placement, for single-token verbalizers (`candidates` [C, 1], scored
    at each example's last input token) and for a generation task (`candidates` None: each
    target packed after its input). Multi-token verbalizers are not packed: each of C
    candidates would need its own copy of the input.
    """
    generation = candidates is None
    if not (keys_per_token and placement == "prefix"
            and (generation or candidates[0].shape[1] == 1)):
        return None
    return Packer(rows=rows, prefix_length=prefix_length, keys_per_token=keys_per_token,
                  pad_id=pad_id, targets=generation)


def pack_batches(batches: Iterable[dict], packer: Packer) -> Iterator[dict]:
    """Each batch packed where that pays (see `Packer`)."""
    for batch in batches:
        yield packer(batch)
