"""Rank classification over verbalizers, with fixed-shape batches so evaluation compiles once
per length bucket."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import numpy as np
from jax.sharding import Mesh

from prompt_jax import packing, partitioning, prompts


def candidate_scores(model, params, prompt, batch, candidates, placement, *,
                     deterministic=True, rngs=None) -> jax.Array:
    """Log-likelihood [B, C] of each candidate ([C, K] or [B, C, K] ids, with mask) after the
    prompted input (`prompt=None`: the input alone).

    A single [P, H] prefix prompt on a backbone that `shares_prefix` (decoder-only models) is
    computed once per batch rather than once per row: same result, fewer FLOPs. A packed
    batch (`prompt_jax.packing`) also skips the rows' padding.
    """
    ids, cmask = candidates
    kwargs = {"deterministic": deterministic, "rngs": rngs}
    if packing.is_packed(batch):  # several examples per row (see prompt_jax.packing)
        if prompt is not None and (prompt.ndim != 2 or placement != "prefix"):
            raise ValueError(f"a packed batch takes one [P, H] prefix prompt, not a "
                             f"{placement} prompt of shape {prompt.shape}")
        if prompt is not None:
            kwargs["prefix"] = prompt.astype(model.config.dtype)
        return model.score_packed(params, model.embed(params, batch["inputs"]),
                                  batch["segment_ids"], batch["positions"], batch["last"],
                                  ids, cmask, **kwargs)
    if prompt is None or (placement == "prefix" and prompt.ndim == 2
                          and getattr(model, "shares_prefix", False)):
        if prompt is not None:
            kwargs["prefix"] = prompt.astype(model.config.dtype)
        return model.score(params, model.embed(params, batch["inputs"]), batch["input_mask"],
                           ids, cmask, target_positions=batch["target_position"], **kwargs)
    embeds, mask, positions = prompts.prompted_inputs(model, params, prompt, batch, placement)
    return model.score(params, embeds, mask, ids, cmask, target_positions=positions, **kwargs)


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
             progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, gold label) for every real row of `batches` (filler rows dropped)."""
    predictions, labels = [], []
    for batch in batches:
        scores = np.asarray(eval_step(prompt, params, batch, *candidates))
        real = np.asarray(batch["weight"]) > 0
        predictions.append(scores.argmax(-1)[real])
        labels.append(np.asarray(batch["label"])[real])
        if progress is not None:
            progress(int(real.sum()))
    return np.concatenate(predictions), np.concatenate(labels)
