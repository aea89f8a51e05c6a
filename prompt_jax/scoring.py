"""Rank classification over verbalizers, with fixed-shape batches so evaluation compiles once
per length bucket."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import numpy as np
from jax.sharding import Mesh

from prompt_jax import partitioning, prompts
from prompt_jax.training import packing


def candidate_scores(model, params, prompt, batch, candidates, placement, *,
                     deterministic=True, rngs=None) -> jax.Array:
    """Log-likelihood [B, C] of each candidate after the prompted input.

    Args:
      model: a `Backbone`.
      params: its frozen params.
      prompt: None (the input alone), one [P, H] prompt for every row, [B, P, H], or a
        `prompts.PromptSet` with `batch["prompt_index"]` [B] (a mixed-task batch: row b takes
        prompt prompt_index[b], of its own length).
      batch: inputs, input_mask [B, T]; target_position [B] (masked LMs); prompt_index [B]
        with a PromptSet.
      candidates: (ids, mask), [C, K] shared by every row or [B, C, K] per row. A row with
        fewer candidates than C pads with all-zero mask rows, which score -inf; shorter
        candidates pad with zero mask.
      placement: "prefix", "after_bos" or "suffix".

    A single [P, H] prefix prompt, or a PromptSet of prefix prompts, on a backbone that
    `shares_prefix` (decoder-only models) is computed once per batch (once per prompt of the
    set) rather than once per row: same result, fewer FLOPs. A packed batch
    (`training.packing`) also skips the rows' padding. Each row gets the scores it would get in
    a batch of its own.
    """
    ids, cmask = candidates
    kwargs = {"deterministic": deterministic, "rngs": rngs}
    if packing.is_packed(batch):  # several examples per row (see prompt_jax.training.packing)
        if isinstance(prompt, prompts.PromptSet):
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
    """`eval_step(prompt, frozen_params, batch, candidate_ids, candidate_mask) -> [B, C]`."""

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


def classify(eval_step: Callable, prompt, params, batches: Iterable[dict], candidates,
             progress: Callable[[int], None] | None = None,
             place: Callable[[dict], dict] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, gold label) for every real row of `batches` (host batches; filler
    rows dropped). `place` puts each batch on the mesh before the step (e.g.
    `partitioning.shard_batch`, which a multi-process job needs)."""
    predictions, labels = [], []
    for batch in batches:
        placed = place(batch) if place is not None else batch
        scores = np.asarray(eval_step(prompt, params, placed, *candidates))
        real = np.asarray(batch["weight"]) > 0
        predictions.append(scores.argmax(-1)[real])
        labels.append(np.asarray(batch["label"])[real])
        if progress is not None:
            progress(int(real.sum()))
    return np.concatenate(predictions), np.concatenate(labels)
