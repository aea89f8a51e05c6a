"""Rank classification over verbalizers: the one path from a batch to each candidate's score.

Every scorer goes through `score_batch` (the evaluator, and through it the transfer matrix;
`LoadedModel.score`, and through it `infer`, mixed-task batches and the serving classifier),
which runs the model's jitted eval step (`make_eval_step` over `candidate_scores`). Shapes are
bucketed so that one executable serves many tasks: rows by `pad_rows` (the one row-padding
helper), candidate sets by `pad_candidates` (classes and tokens rounded up to powers of two;
a padded class scores -inf and never wins).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from prompt_jax import partitioning, prompts
from prompt_jax.training import packing

# What `candidate_scores` reads of a batch; `score_batch` passes nothing else to the step, so
# that e.g. a task's target width never changes the step's shapes.
SCORED_KEYS = ("inputs", "input_mask", "target_position", "prompt_index", "candidate_index",
               "segment_ids", "positions", "last")


def bucket(n: int, minimum: int = 1) -> int:
    """The power of two >= max(n, minimum)."""
    size = max(1, minimum)
    while size < n:
        size *= 2
    return size


@flax.struct.dataclass
class CachedPrompts:
    """N prefix prompts' keys and values, computed once (`Backbone.prefix_kv`, e.g. when a
    prompt joins a serving bank); row b continues prompt `batch["prompt_index"][b]`. For
    backbones that `shares_prefix` (decoder-only), at the prefix placement.

    Attributes:
      keys, values: [L, N, P, KV, D] each.
      lengths: [N] int32 real vectors of each prompt.
    """

    keys: jax.Array
    values: jax.Array
    lengths: jax.Array


def candidate_scores(model, params, prompt, batch, candidates, placement, *,
                     deterministic=True, rngs=None) -> jax.Array:
    """Log-likelihood [B, C] of each candidate after the prompted input.

    Args:
      model: a `Backbone`.
      params: its frozen params.
      prompt: None (the input alone), one [P, H] prompt for every row, [B, P, H], a
        `prompts.PromptSet` or a `CachedPrompts` with `batch["prompt_index"]` [B] (a
        mixed-task batch: row b takes prompt prompt_index[b], of its own length).
      batch: inputs, input_mask [B, T]; target_position [B] (masked LMs); prompt_index [B]
        with a PromptSet or CachedPrompts; candidate_index [B] with candidate sets.
      candidates: (ids, mask), [C, K] shared by every row, [B, C, K] per row, or N sets
        [N, C, K] with `batch["candidate_index"]` [B] (row b takes set candidate_index[b]).
        A row with fewer candidates than C pads with all-zero mask rows, which score -inf;
        shorter candidates pad with zero mask.
      placement: "prefix", "after_bos" or "suffix".

    A single [P, H] prefix prompt, or a PromptSet of prefix prompts, on a backbone that
    `shares_prefix` (decoder-only models) is computed once per batch (once per prompt of the
    set) rather than once per row: same result, fewer FLOPs. A packed batch
    (`training.packing`) also skips the rows' padding. Each row gets the scores it would get in
    a batch of its own.
    """
    ids, cmask = candidates
    if "candidate_index" in batch:  # [N, C, K] sets -> [B, C, K] rows
        ids = jnp.take(ids, batch["candidate_index"], axis=0)
        cmask = jnp.take(cmask, batch["candidate_index"], axis=0)
    kwargs = {"deterministic": deterministic, "rngs": rngs}
    if packing.is_packed(batch):  # several examples per row (see prompt_jax.training.packing)
        if isinstance(prompt, prompts.PromptSet | CachedPrompts):
            raise ValueError("a packed batch takes one [P, H] prefix prompt, not a PromptSet: "
                             "packed rows share one prefix's keys and values; score a "
                             "mixed-task batch unpacked")
        if prompt is not None and (prompt.ndim != 2 or placement != "prefix"):
            raise ValueError(f"a packed batch takes one [P, H] prefix prompt, not a "
                             f"{placement} prompt of shape {prompt.shape}")
        if prompt is not None:
            kwargs["prefix"] = prompt.astype(model.config.dtype)
        return model.score_packed(params, model.embed(params, batch["inputs"]),
                                  batch["segment_ids"], batch["positions"], batch["last"],
                                  ids, cmask, **kwargs)
    is_set = isinstance(prompt, prompts.PromptSet)
    shared = placement == "prefix" and model.shares_prefix
    if prompt is None:
        pass
    elif isinstance(prompt, CachedPrompts):
        if not shared:
            raise ValueError(f"cached prompts need a decoder-only backbone and the prefix "
                             f"placement, not {placement!r} on {model.family}")
        kwargs.update(prefix_kv=(prompt.keys, prompt.values), prefix_lengths=prompt.lengths,
                      prefix_index=batch["prompt_index"])
    elif shared and is_set:  # each prompt's keys and values once, gathered per row
        kwargs.update(prefix=prompt.vectors.astype(model.config.dtype),
                      prefix_lengths=prompt.lengths, prefix_index=batch["prompt_index"])
    elif shared and prompt.ndim == 2:  # one prompt's keys and values for every row
        kwargs["prefix"] = prompt.astype(model.config.dtype)
    else:
        embeds, mask, positions = prompts.prompted_inputs(model, params, prompt, batch, placement)
        return model.score(params, embeds, mask, ids, cmask, target_positions=positions, **kwargs)
    return model.score(params, model.embed(params, batch["inputs"]), batch["input_mask"],
                       ids, cmask, target_positions=batch["target_position"], **kwargs)


def make_eval_step(model, *, placement: str) -> Callable:
    """`eval_step(prompt, frozen_params, batch, candidate_ids, candidate_mask) -> [B, C]`.

    Closes over static things only (the model definition and the placement): prompts, params,
    batches and candidates are arguments, so one jitted step serves every task whose shapes
    match."""

    def eval_step(prompt, frozen_params, batch, candidate_ids, candidate_mask):
        return candidate_scores(model, frozen_params, prompt, batch,
                                (candidate_ids, candidate_mask), placement)

    return eval_step


def jit_eval_step(eval_step: Callable, model, mesh: Mesh) -> Callable:
    """Jits the eval step over the mesh (params sharded by the rules table, batch over data)."""
    rep = partitioning.replicated(mesh)
    return jax.jit(
        eval_step,
        in_shardings=(rep, partitioning.param_shardings(model, mesh),
                      partitioning.batch_sharding(mesh), rep, rep),
        out_shardings=rep,
    )


def pad_candidates(ids, mask, classes: int = 0, tokens: int = 0):
    """Candidates [..., C, K] zero-padded to [..., classes, tokens] (default: C rounded up to a
    power of two, at least 2, and K to a power of two): the shape bucket that lets tasks share
    one compiled step. A padded class (all-zero mask) scores -inf; padded tokens count for
    nothing. Candidates already of that shape are returned as they are (device arrays stay on
    the device)."""
    c, k = ids.shape[-2:]
    classes, tokens = classes or bucket(c, 2), tokens or bucket(k)
    if (c, k) == (classes, tokens):
        return ids, mask
    if c > classes or k > tokens:
        raise ValueError(f"candidates [{c}, {k}] exceed the shape [{classes}, {tokens}]")
    widths = [(0, 0)] * (ids.ndim - 2) + [(0, classes - c), (0, tokens - k)]
    return (np.pad(np.asarray(ids, np.int32), widths),
            np.pad(np.asarray(mask, np.int32), widths))


def stack_candidates(sets: Sequence[tuple], slots: int = 0, classes: int = 0,
                     tokens: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Candidate sets [C_n, K_n] -> ids, mask [N, C, K] (`pad_candidates` of each, to the
    largest bucket; N rounded up to a power of two, or `slots`; a padded set scores -inf)."""
    classes = classes or bucket(max(ids.shape[0] for ids, _ in sets), 2)
    tokens = tokens or bucket(max(ids.shape[1] for ids, _ in sets))
    ids = np.zeros((slots or bucket(len(sets)), classes, tokens), np.int32)
    mask = np.zeros_like(ids)
    for n, (set_ids, set_mask) in enumerate(sets):
        ids[n], mask[n] = pad_candidates(np.asarray(set_ids), np.asarray(set_mask), classes,
                                         tokens)
    return ids, mask


def pad_rows(encoded: Sequence[tuple[Sequence[int], int]], pad_id: int, *, rows: int = 0,
             width: int = 0, multiple: int = 16,
             columns: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """The one row-padding helper: encoded inputs -> a fixed-shape batch.

    Args:
      encoded: (token ids, target position) per real row.
      pad_id: the tokenizer's padding id.
      rows: rows of the batch (default: the real rows); filler rows repeat the last real row
        (their scores are dropped by the caller).
      width: tokens per row (default: the longest row rounded up to `multiple`).
      multiple: the width bucket when `width` is not given.
      columns: more per-row int32 columns (e.g. "prompt_index"), filled like the rows.

    Returns:
      {"inputs", "input_mask": [R, W] int32, "target_position": [R] int32, *columns}.
    """
    if not encoded:
        raise ValueError("no rows to pad")
    n = len(encoded)
    rows = rows or n
    width = width or -(-max(len(ids) for ids, _ in encoded) // multiple) * multiple
    take = np.minimum(np.arange(rows), n - 1)  # filler rows repeat the last real one
    inputs = np.full((rows, width), pad_id, np.int32)
    mask = np.zeros((rows, width), np.int32)
    for row, source in enumerate(take):
        ids = encoded[source][0]
        if len(ids) > width:
            raise ValueError(f"a row of {len(ids)} tokens exceeds the batch width {width}")
        inputs[row, :len(ids)] = ids
        mask[row, :len(ids)] = 1
    batch = {"inputs": inputs, "input_mask": mask,
             "target_position": np.array([encoded[i][1] for i in take], np.int32)}
    for key, values in (columns or {}).items():
        batch[key] = np.asarray(values, np.int32)[take]
    return batch


def score_batch(eval_step: Callable, prompt, params, batch: Mapping[str, np.ndarray],
                candidates, *, place: Callable[[dict], dict] | None = None) -> np.ndarray:
    """The one scoring entry point: scores [B, C'] of a batch by a jitted eval step.

    Candidates are padded to their shape bucket (`pad_candidates`; C' >= C, the padded
    classes -inf) and only the keys the step reads are passed, so every task of the same
    bucketed shapes runs the same executable. `place` puts the batch on the mesh first (e.g.
    `partitioning.shard_batch`, which a multi-process job needs).
    """
    ids, mask = pad_candidates(*candidates)
    batch = {key: value for key, value in batch.items() if key in SCORED_KEYS}
    placed = place(batch) if place is not None else batch
    return np.asarray(eval_step(prompt, params, placed, ids, mask))


def classify(eval_step: Callable, prompt, params, batches: Iterable[dict], candidates,
             progress: Callable[[int], None] | None = None,
             place: Callable[[dict], dict] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, gold label) for every real row of `batches` (host batches; filler
    rows dropped), each batch scored by `score_batch`."""
    predictions, labels = [], []
    candidates = pad_candidates(*candidates)  # once, not per batch
    for batch in batches:
        scores = score_batch(eval_step, prompt, params, batch, candidates, place=place)
        real = np.asarray(batch["weight"]) > 0
        predictions.append(scores.argmax(-1)[real])
        labels.append(np.asarray(batch["label"])[real])
        if progress is not None:
            progress(int(real.sum()))
    return np.concatenate(predictions), np.concatenate(labels)
