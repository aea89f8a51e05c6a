"""Transfer indicators over prompt pairs (`prompt_jax.indicators` wired to a loaded model and
its tasks): embedding similarities, neuron overlaps (ON) in the paper's mode and on real
inputs, and their rank correlation with measured transfer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prompt_jax import engine, indicators

EMBEDDING_INDICATORS = {
    "E_cos": indicators.flat_cosine, "E_euc": indicators.flat_euclidean,
    "E_cos_tokens": indicators.tokenwise_cosine, "E_euc_tokens": indicators.tokenwise_euclidean,
}
ON_MODES = ("paper", "inputs", "prompt")


def embedding_indicators(prompts_by_name: Mapping[str, np.ndarray]
                         ) -> dict[str, np.ndarray]:
    """Every embedding indicator for every pair of prompts: name -> [N, N] (rows and columns
    in `prompts_by_name` order; the prompts share one shape)."""
    stack = jnp.asarray(np.stack(list(prompts_by_name.values())))
    return {name: np.asarray(jax.jit(lambda a, fn=fn: indicators.pairwise(fn, a, a))(stack))
            for name, fn in EMBEDDING_INDICATORS.items()}


def _probe_batch(loaded: engine.LoadedModel, task: engine.TaskHandle, mode: str,
                 n_inputs: int, seed: int) -> dict[str, np.ndarray]:
    """The inputs ON reads activations on: the template with an empty text (the paper's
    mode: its code feeds "<s>" and reads the label position; also the "prompt" mode's), or a
    seeded sample of real validation inputs."""
    if mode in ("paper", "prompt"):
        return task.encode_texts(["\t" if task.spec.pair else ""])
    if mode != "inputs":
        raise ValueError(f"unknown ON mode {mode!r}; use one of {ON_MODES}")
    from prompt_jax.tasks import read_split
    from prompt_jax.tasks.registry import sample_rows

    examples, _ = read_split(task.spec, "validation", task.data or None)
    rows = sample_rows(len(examples), n_inputs, seed)
    picked = [examples[i] for i in (range(len(examples)) if rows is None else rows)]
    return task.encode_texts([f"{e.text_a}\t{e.text_b}" if task.spec.pair else e.text_a
                              for e in picked])


def label_positions(model, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """[B] the position where each row's label is predicted, the one ON reads: a masked LM's
    <mask> (`target_position`); for a decoder the last input token, whose next token is the
    label (rows are right-padded); for T5 0, the decoder's first position, which
    `indicators.activation_masks` reads on T5 whatever the positions (as the paper's T5 code
    does)."""
    if model.prompt_style == "mlm":
        return np.asarray(batch["target_position"])
    if model.prompt_style == "t5":
        return np.zeros(len(batch["input_mask"]), np.int64)
    return np.asarray(batch["input_mask"]).sum(-1) - 1


def neuron_overlaps(loaded: engine.LoadedModel, prompts_by_name: Mapping[str, np.ndarray],
                    target: str, reference: str, *, mode: str = "paper", n_inputs: int = 16,
                    layers: str | tuple[int, int] = "all", seed: int = 0) -> dict[str, float]:
    """ON of every prompt with the `reference` prompt on the target task's inputs: the
    overlap of the FFN neurons each activates (gate pre-activation > 0).

    Modes: "paper" reads the position that predicts the label with an empty text in the
    template (as the paper's code feeds "<s>"; on T5 the decoder's first position, see
    `indicators.activation_masks`), "inputs" the same position over a seeded sample of
    `n_inputs` real validation inputs (the overlap averaged over them), "prompt" every prompt
    position (empty text; on T5 the encoder's, where the prompt is).

    Returns:
      name -> ON with the reference (1.0 for the reference itself).
    """
    return neuron_overlaps_by_layers(loaded, prompts_by_name, target, reference, mode=mode,
                                     n_inputs=n_inputs, selections=(layers,), seed=seed)[layers]


def neuron_overlaps_by_layers(loaded: engine.LoadedModel,
                              prompts_by_name: Mapping[str, np.ndarray], target: str,
                              reference: str, *, mode: str = "paper", n_inputs: int = 16,
                              selections: Sequence[str | tuple[int, int]] = ("all",),
                              seed: int = 0) -> dict[str | tuple[int, int], dict[str, float]]:
    """`neuron_overlaps` over several layer selections from one forward pass per prompt:
    every layer's masks are read once and each selection's ON computed from them.

    Returns:
      selection -> {name -> ON with the reference}.
    """
    from prompt_jax import prompts as prompt_ops

    task = loaded.task(target)
    batch = _probe_batch(loaded, task, mode, n_inputs, seed)
    ids = jnp.asarray(batch["inputs"])
    embeds = loaded.model.embed(loaded.params, ids)
    mask = jnp.asarray(batch["input_mask"])
    positions = jnp.asarray(label_positions(loaded.model, batch))

    @jax.jit
    def masks_of(prompt):  # -> [B, L, K * F]
        if mode != "prompt":
            m = indicators.activation_masks(loaded.model, loaded.params, prompt, embeds, mask,
                                            positions, placement=task.placement)
            return jnp.moveaxis(m[:, :, 0, :], 1, 0)
        prompted, prompted_mask, start = prompt_ops.insert_prompt(prompt, embeds, mask,
                                                                  task.placement)
        (pre,) = loaded.model.activations(loaded.params, prompted, prompted_mask,
                                          kind="pre_activation").values()  # [L, B, P + T, F]
        at = start[:, None] + jnp.arange(prompt.shape[0])[None]  # [B, P]
        picked = jnp.take_along_axis(pre, at[None, :, :, None], axis=2)  # [L, B, P, F]
        m = indicators.activated(picked)
        return jnp.moveaxis(m, 1, 0).reshape(m.shape[1], m.shape[0], -1)

    ref = masks_of(jnp.asarray(prompts_by_name[reference]))
    masks = {name: masks_of(jnp.asarray(p)) for name, p in prompts_by_name.items()}
    return {sel: {name: float(indicators.neuron_overlap(m, ref, layers=sel).mean())
                  for name, m in masks.items()} for sel in selections}


def per_target_correlations(indicator: np.ndarray, transfer: np.ndarray, valid: np.ndarray
                            ) -> dict[str, np.ndarray]:
    """Spearman and Kendall correlation of an indicator with measured transfer for each target
    (a column of [S, T]) over its valid sources: name -> [T], NaN for a target with fewer than
    3 valid sources or where one side is constant."""
    flat = valid & np.isfinite(indicator) & np.isfinite(transfer)
    per = {"spearman": np.full(indicator.shape[1], np.nan),
           "kendall": np.full(indicator.shape[1], np.nan)}
    for j in range(indicator.shape[1]):
        col = flat[:, j]
        if col.sum() >= 3:
            per["spearman"][j] = indicators.spearman(indicator[col, j], transfer[col, j])
            per["kendall"][j] = indicators.kendall_tau(indicator[col, j], transfer[col, j])
    return per


def _mean_of_finite(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def correlations(indicator: np.ndarray, transfer: np.ndarray, valid: np.ndarray
                 ) -> dict[str, float]:
    """Spearman and Kendall correlation of an indicator with measured transfer over the valid
    (source, target) pairs: pooled over all pairs, and per target then averaged (as the paper
    averages over target tasks; `per_target_correlations`; targets with fewer than 3 valid
    sources are left out)."""
    flat = valid & np.isfinite(indicator) & np.isfinite(transfer)
    result = {"pairs": int(flat.sum()),
              "spearman": indicators.spearman(indicator[flat], transfer[flat]),
              "kendall": indicators.kendall_tau(indicator[flat], transfer[flat])}
    per = per_target_correlations(indicator, transfer, valid)
    result.update(targets=int((flat.sum(axis=0) >= 3).sum()),
                  spearman_per_target=_mean_of_finite(per["spearman"]),
                  kendall_per_target=_mean_of_finite(per["kendall"]))
    return result


def similarity_to(loaded: engine.LoadedModel, prompts_by_name: Mapping[str, np.ndarray],
                  own: np.ndarray, target: str, indicator: str, *, n_inputs: int = 16
                  ) -> dict[str, float]:
    """Each prompt's value of one indicator with `own` (a prompt trained on `target`): an
    embedding indicator (`EMBEDDING_INDICATORS`) or `ON_<mode>` on the target's inputs, over
    all layers or, as `ON_<mode>_bottom_third` / `ON_<mode>_top_third`, over that third.

    Raises:
      ValueError: an unknown indicator (naming the known ones).
    """
    if indicator in EMBEDDING_INDICATORS:
        fn = EMBEDDING_INDICATORS[indicator]
        return {s: float(fn(own, p)) for s, p in prompts_by_name.items()}
    mode, _, layers = indicator[3:].partition("_")  # ON_paper_top_third -> paper, top_third
    if (indicator.startswith("ON_") and mode in ON_MODES
            and layers in indicators.LAYER_SELECTIONS[1:] + ("",)):
        reference = "\0own"  # a name no prompt has
        values = neuron_overlaps(loaded, {**prompts_by_name, reference: own}, target,
                                 reference, mode=mode, n_inputs=n_inputs,
                                 layers=layers or "all")
        values.pop(reference)
        return values
    raise ValueError(f"unknown indicator {indicator!r}; use one of "
                     f"{', '.join(EMBEDDING_INDICATORS)} or "
                     + ", ".join(f"ON_{m}" for m in ON_MODES)
                     + " (ON over a third of the layers: ON_<mode>_bottom_third, "
                     "ON_<mode>_top_third)")
