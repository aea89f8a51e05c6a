"""Transferability indicators: how similar two soft prompts are, and how well a similarity
predicts cross-task transfer. Pure functions over arrays.

The indicators are those of Su et al. (2022), "On Transferability of Prompt Tuning for Natural
Language Processing", defined here as the authors' code computes them
(github.com/thunlp/Prompt-Transferability, `Prompt-Transferability-1.0/
caculate_metric_value_for_correlation.py`, and `activate_neuron*.py` / `prompt_hub/hub.py`
`activated_neuron` for the activations; on T5, `activate_neuron_T5.py` reads the decoder, see
`activation_masks`):

- embedding similarity of two prompts [P, H]: cosine (E_cos) and 1 / (1 + euclidean distance)
  (E_euc) of the flattened prompts, and their token-wise versions over all P x P token pairs;
- ON, the overlapping rate of activated neurons ("model stimulation"): the cosine similarity
  of the two binary masks "the FFN activation function's input is > 0", over chosen layers.

Every similarity is symmetric in its two arguments and broadcasts over leading axes, so one call
scores many pairs: `pairwise(flat_cosine, a, b)` turns N and M prompts into an [N, M] matrix.
Then `spearman` / `kendall_tau` correlate an indicator with measured transfer scores, and
`retrieval_hits` / `retrieval_accuracy` ask whether it retrieves the best source prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prompt_jax import prompts

# torch.nn.CosineSimilarity's default, which the paper's code uses.
COSINE_EPS = 1e-8
LAYER_SELECTIONS = ("all", "bottom_third", "top_third")


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine over the last axis, [..., D] x [..., D] -> [...], as torch computes it:
    a.b / (max(|a|, eps) * max(|b|, eps)), so a zero vector has similarity 0."""
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    norms = (jnp.maximum(jnp.linalg.norm(a, axis=-1), COSINE_EPS)
             * jnp.maximum(jnp.linalg.norm(b, axis=-1), COSINE_EPS))
    return jnp.sum(a * b, axis=-1) / norms


def _flat(x: jax.Array, trailing: int) -> jax.Array:
    """Merges the last `trailing` axes into one: [..., *dims] -> [..., prod(dims)]."""
    return x.reshape(*x.shape[: x.ndim - trailing], -1)


def flat_cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """E_cos: cosine similarity of the flattened prompts.

    The paper's `CosineSimilarity` on prompts reshaped to [P * H]
    (`cos = torch.nn.CosineSimilarity(dim=0)`).

    Args:
      a: prompts [..., P, H].
      b: prompts [..., P, H], leading axes broadcastable with a's.

    Returns:
      [...] similarities in [-1, 1].
    """
    return _cosine(_flat(a, 2), _flat(b, 2))


def flat_euclidean(a: jax.Array, b: jax.Array) -> jax.Array:
    """E_euc: 1 / (1 + ||a - b||) of the flattened prompts (1 for identical prompts).

    The paper's `EuclideanDistances`: `1/(1+torch.norm(task1_emb-task2_emb, p='fro'))`.

    Args:
      a: prompts [..., P, H].
      b: prompts [..., P, H], leading axes broadcastable with a's.

    Returns:
      [...] similarities in (0, 1].
    """
    diff = _flat(a, 2).astype(jnp.float32) - _flat(b, 2).astype(jnp.float32)
    return 1.0 / (1.0 + jnp.linalg.norm(diff, axis=-1))


def tokenwise_cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """Token-wise E_cos: the cosine of every token of a with every token of b, averaged.

    The paper's `CosineSimilarity_per_token` (the sum of `cos(v1, v2)` over all token pairs,
    divided by the number of pairs). The mean of the P_a x P_b cosines is the dot product of
    the two prompts' mean unit tokens, which is how it is computed here.

    Args:
      a: prompts [..., P_a, H].
      b: prompts [..., P_b, H], leading axes broadcastable with a's.

    Returns:
      [...] similarities in [-1, 1].
    """
    def mean_unit_token(x):  # [..., P, H] -> [..., H]
        x = x.astype(jnp.float32)
        return (x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), COSINE_EPS)).mean(-2)

    return jnp.sum(mean_unit_token(a) * mean_unit_token(b), axis=-1)


def tokenwise_euclidean(a: jax.Array, b: jax.Array) -> jax.Array:
    """Token-wise E_euc: 1 / (1 + the mean distance between every token of a and every token
    of b).

    The paper's `EuclideanDistances_per_token`: the distances `torch.norm(v1-v2, p=2)` over all
    token pairs are averaged first, then mapped by 1 / (1 + mean), so identical prompts of more
    than one distinct token score below 1.

    The [P_a, P_b] distances come from dot products (exact float32 matmuls), after centring
    both prompts on their pair's mean token, which leaves distances unchanged and keeps the
    subtraction accurate.

    Args:
      a: prompts [..., P_a, H].
      b: prompts [..., P_b, H], leading axes broadcastable with a's.

    Returns:
      [...] similarities in (0, 1].
    """
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    centre = (a.mean(-2, keepdims=True) + b.mean(-2, keepdims=True)) / 2  # [..., 1, H]
    a, b = a - centre, b - centre
    cross = jnp.einsum("...ih,...jh->...ij", a, b,
                       precision=jax.lax.Precision.HIGHEST)  # [..., P_a, P_b]
    squared = (jnp.sum(a * a, -1)[..., :, None] + jnp.sum(b * b, -1)[..., None, :]
               - 2.0 * cross)
    distance = jnp.sqrt(jnp.maximum(squared, 0.0))
    return 1.0 / (1.0 + distance.mean(axis=(-2, -1)))


def pairwise(fn: Callable[[jax.Array, jax.Array], jax.Array], a: jax.Array,
             b: jax.Array) -> jax.Array:
    """Every pair of two stacks: fn(a[i], b[j]) for a [N, ...] and b [M, ...] -> [N, M].

    `fn` is one of this module's similarities (any function that broadcasts over leading axes),
    e.g. `pairwise(flat_cosine, prompts_a, prompts_b)` or
    `pairwise(partial(neuron_overlap, layers="top_third"), masks_a, masks_b)`.
    """
    return fn(a[:, None], b[None])


def layer_range(num_layers: int, layers: str | tuple[int, int] = "all") -> tuple[int, int]:
    """[start, stop) of the layers a selection names.

    Args:
      num_layers: L.
      layers: "all"; "bottom_third" or "top_third" (the first or last max(1, L // 3) layers);
        or an explicit (start, stop), e.g. (3, 6) for the paper's 3-layer windows
        (`activated_1[int(layer):int(layer)+3]`).
    """
    third = max(1, num_layers // 3)
    if layers == "all":
        return 0, num_layers
    if layers == "bottom_third":
        return 0, third
    if layers == "top_third":
        return num_layers - third, num_layers
    if isinstance(layers, tuple) and len(layers) == 2:
        start, stop = layers
        if 0 <= start < stop <= num_layers:
            return int(start), int(stop)
        raise ValueError(f"layers {layers} is not a non-empty [start, stop) within "
                         f"{num_layers} layers")
    raise ValueError(f"unknown layer selection {layers!r}; use one of {LAYER_SELECTIONS} or a "
                     f"(start, stop) tuple")


def select_layers(x: jax.Array, layers: str | tuple[int, int] = "all",
                  axis: int = 0) -> jax.Array:
    """The selected layers of a per-layer array: [..., L, ...] -> [..., L', ...] along `axis`
    (see `layer_range` for the selections)."""
    start, stop = layer_range(x.shape[axis], layers)
    return jax.lax.slice_in_dim(x, start, stop, axis=axis)


def activated(x: jax.Array) -> jax.Array:
    """Which neurons are activated: the activation function's input is > 0 (bool, same shape).

    The paper binarizes with `activated[activated>0] = 1; activated[activated<0] = 0`. For
    ReLU, GELU and SiLU, input > 0 exactly when output > 0, so this reads the same on RoBERTa
    (the paper hooks the output of the activation) and T5 (it hooks the decoder's `wi`
    projection); on gated FFNs it is the gate's pre-activation (see `Backbone.activations`).
    """
    return x > 0


def neuron_overlap(a: jax.Array, b: jax.Array,
                   layers: str | tuple[int, int] = "all") -> jax.Array:
    """ON, the overlapping rate of activated neurons: the cosine similarity of two prompts'
    binary activation masks over the selected layers.

    As the paper's `ActivatedNeurons`: select layers, flatten, set > 0 to 1 and the rest to 0,
    `sim = cos(activated_1, activated_2)`. For 0/1 masks this is
    |both| / sqrt(|a| * |b|), 1 for identical masks, 0 for disjoint ones (or an empty one).

    Args:
      a: [..., L, F] FFN activation-function inputs of one prompt (or masks from
        `activation_masks`, whose [L, B, K, F] reshapes to [L, B * K * F]); binarized > 0.
      b: the same for the other prompt, leading axes broadcastable with a's.
      layers: "all", "bottom_third", "top_third" or (start, stop) (see `layer_range`).

    Returns:
      [...] overlaps in [0, 1].
    """
    def flat_mask(x):
        return _flat(activated(select_layers(x, layers, axis=-2)), 2)

    return _cosine(flat_mask(a), flat_mask(b))


def activation_masks(model, params, prompt: jax.Array, embeds: jax.Array, mask: jax.Array,
                     positions: jax.Array, *, placement: str | None = None,
                     layers: str | tuple[int, int] = "all") -> jax.Array:
    """Which FFN neurons a prompt activates where the label is predicted.

    The prompt is inserted as scoring inserts it (`prompts.insert_prompt`), the backbone's FFN
    activation-function inputs are read (`activations(kind="pre_activation")`) and binarized
    (`activated`). Where they are read follows the paper's code:

    - masked LMs and decoders: the given text positions of the one stack, e.g. the <mask>
      (`batch["target_position"]`, as the paper reads RoBERTa's <mask>) or a decoder's last
      input token (see `prompt_jax.transfer.label_positions`);
    - T5 (`prompt_style == "t5"`): the decoder's first position, fed the decoder start token
      and cross-attending to the prompted input, in every decoder layer; `positions` is not
      read and K = 1. This is what the paper's `Prompt-Transferability-1.0/
      activate_neuron_T5.py` (and `activate_neuron_T5Small.py`) records: a forward hook on
      `model.encoder.decoder.block[n].layer[2].DenseReluDense.wi` (the decoder FFN's input
      projection, whose output is the ReLU's input) during greedy generation, kept as
      `outputs[:, :1, :1, :]`, the first generation step's first position; its encoder hook
      (`encoder.block[n].layer[1]`, position 100) is commented out, and
      `caculate_metric_value_for_correlation.py` loads the "decoder" activations for T5. On a
      gated T5 (v1.1) the gate `wi_0` is read, as on every gated FFN.

    Args:
      model: a `Backbone`.
      params: its frozen params.
      prompt: [P, H] (or [B, P, H], one per row). `jax.vmap` over a stack of prompts
        [N, P, H] gives [N, L', B, K, F].
      embeds: [B, T, H] embedded inputs (without the prompt).
      mask: [B, T] input mask.
      positions: [B] or [B, K] positions in the text (before the prompt is inserted; they are
        shifted past it). Unused on T5.
      placement: where the prompt goes (default: the model's `default_placement`).
      layers: which layers to keep (see `layer_range`).

    Returns:
      [L', B, K, F] bool masks (K = 1 for positions [B], and on T5).
    """
    placement = placement or model.default_placement
    prompted, prompted_mask, start = prompts.insert_prompt(prompt, embeds, mask, placement)
    if model.prompt_style == "t5":
        (picked,) = model.activations(params, prompted, prompted_mask, kind="pre_activation",
                                      stack="decoder").values()  # [L, B, 1, F]
        return activated(select_layers(picked, layers))
    (pre,) = model.activations(params, prompted, prompted_mask,
                               kind="pre_activation").values()  # [L, B, P + T, F]
    positions = positions[:, None] if positions.ndim == 1 else positions  # [B, K]
    shifted = prompts.shift_positions(positions, start[:, None], prompt.shape[-2])  # [B, K]
    picked = jnp.take_along_axis(pre, shifted[None, :, :, None], axis=2)  # [L, B, K, F]
    return activated(select_layers(picked, layers))


def _checked_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"need two equally long sequences of at least 2 values; got "
                         f"{x.size} and {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("correlations need finite values (drop masked or missing pairs first)")
    return x, y


def average_ranks(x) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (scipy's
    `rankdata(method="average")`). [N] -> [N] float64."""
    x = np.asarray(x, np.float64).ravel()
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    group = np.cumsum(np.r_[True, sorted_x[1:] != sorted_x[:-1]]) - 1  # tie group per slot
    counts = np.bincount(group)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # mean of each group's 1-based ranks
    ranks = np.empty_like(x)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (ties as
    `scipy.stats.spearmanr`). NaN when either side is constant."""
    x, y = _checked_pair(x, y)
    rx, ry = average_ranks(x) - (x.size + 1) / 2.0, average_ranks(y) - (y.size + 1) / 2.0
    denominator = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
    return float(np.sum(rx * ry) / denominator) if denominator > 0 else float("nan")


def kendall_tau(x, y) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt(pairs untied in x * pairs untied in
    y), the tie correction of `scipy.stats.kendalltau`'s default. NaN when either side is
    constant. O(N^2) memory over the N * (N - 1) / 2 pairs."""
    x, y = _checked_pair(x, y)
    i, j = np.triu_indices(x.size, 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    untied = np.count_nonzero(sx) * np.count_nonzero(sy)
    return float(np.sum(sx * sy) / np.sqrt(untied)) if untied > 0 else float("nan")


def retrieval_hits(indicator: jax.Array, actual: jax.Array, k: int,
                   valid: jax.Array | None = None) -> jax.Array:
    """Whether each target's k sources ranked highest by the indicator include its best actual
    source (any of them, if several tie for best).

    Args:
      indicator: [T, S] similarity of each target task's prompt to each source prompt.
      actual: [T, S] measured transfer score of each source prompt on each target task.
      k: how many sources are retrieved (static). Indicator ties go to the lower source index.
      valid: optional [T, S] bool, the sources each target may retrieve (e.g.
        `~jnp.eye(T, dtype=bool)` leaves out a task's own prompt); each target needs at
        least k valid sources.

    Returns:
      [T] bool.
    """
    if not 1 <= k <= indicator.shape[-1]:
        raise ValueError(f"k={k} must be between 1 and the {indicator.shape[-1]} sources")
    if valid is not None:
        indicator = jnp.where(valid, indicator, -jnp.inf)
        actual = jnp.where(valid, actual, -jnp.inf)
    _, top = jax.lax.top_k(indicator, k)  # [T, k] source indices
    best = actual == actual.max(axis=-1, keepdims=True)  # [T, S]
    return jnp.take_along_axis(best, top, axis=-1).any(axis=-1)


def retrieval_accuracy(indicator: jax.Array, actual: jax.Array, ks: Sequence[int] = (1, 3),
                       valid: jax.Array | None = None) -> dict[int, float]:
    """The fraction of targets whose top-k retrieved sources include the best actual source,
    for each k (see `retrieval_hits`). -> {k: fraction}."""
    return {k: float(retrieval_hits(indicator, actual, k, valid).mean()) for k in ks}
