"""Transferability indicators: hand-computed cases, the paper's loop definitions, jit, batching
over pairs, symmetry; rank correlations against scipy; retrieval; ON reading the FFN
activation function's input (the gate's pre-activation on gated FFNs) on tiny backbones."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from prompt_jax import indicators as ind
from prompt_jax import prompts
from prompt_jax.models import layers
from tests.test_interface import IDS, MASK, TINY

SIMILARITIES = (ind.flat_cosine, ind.flat_euclidean, ind.tokenwise_cosine,
                ind.tokenwise_euclidean)


def _paper_reference(name, a, b):
    """The paper's definitions as its loops compute them (float64): flattened prompts for
    E_cos / E_euc; every token pair, summed and divided by the number of pairs, for the
    token-wise ones (Euclidean: 1 / (1 + mean distance))."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)

    def cos(u, v):
        return u @ v / (np.linalg.norm(u) * np.linalg.norm(v))

    if name == "flat_cosine":
        return cos(a.ravel(), b.ravel())
    if name == "flat_euclidean":
        return 1 / (1 + np.linalg.norm(a.ravel() - b.ravel()))
    total = 0.0
    for v1 in a:
        for v2 in b:
            total += cos(v1, v2) if name == "tokenwise_cosine" else np.linalg.norm(v1 - v2)
    mean = total / (len(a) * len(b))
    return mean if name == "tokenwise_cosine" else 1 / (1 + mean)


def _random_prompts(seed, n, p=5, h=8):
    return jnp.asarray(np.random.default_rng(seed).normal(0, 1, (n, p, h)), jnp.float32)


def test_similarities_on_hand_computed_prompts():
    a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    b = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    # a.b = 1 over |a| |b| = 2; ||a - b|| = sqrt(2); token cosines 1, 1, 0, 0; token distances
    # 0, 0, sqrt(2), sqrt(2).
    assert float(ind.flat_cosine(a, b)) == pytest.approx(0.5)
    assert float(ind.flat_euclidean(a, b)) == pytest.approx(1 / (1 + math.sqrt(2)))
    assert float(ind.tokenwise_cosine(a, b)) == pytest.approx(0.5)
    assert float(ind.tokenwise_euclidean(a, b)) == pytest.approx(1 / (1 + math.sqrt(2) / 2))

    # Identical prompts -> 1; orthogonal ones -> 0 (cosines) and far apart -> near 0.
    p = _random_prompts(0, 1)[0]
    assert float(ind.flat_cosine(p, p)) == pytest.approx(1.0, abs=1e-6)
    assert float(ind.flat_euclidean(p, p)) == 1.0
    repeated = jnp.tile(p[:1], (4, 1))  # one token repeated: every token pair is identical
    assert float(ind.tokenwise_cosine(repeated, repeated)) == pytest.approx(1.0, abs=1e-6)
    assert float(ind.tokenwise_euclidean(repeated, repeated)) == pytest.approx(1.0, abs=1e-6)
    e1 = jnp.zeros((3, 4)).at[:, 0].set(1.0)
    e2 = jnp.zeros((3, 4)).at[:, 1].set(1.0)
    assert float(ind.flat_cosine(e1, e2)) == 0.0
    assert float(ind.tokenwise_cosine(e1, e2)) == 0.0
    assert float(ind.flat_euclidean(e1, 1e6 * e2)) < 1e-6
    # A zero prompt has cosine 0 with anything (torch's eps), not NaN.
    assert float(ind.flat_cosine(jnp.zeros((3, 4)), e1)) == 0.0


@pytest.mark.parametrize("fn", SIMILARITIES, ids=lambda f: f.__name__)
def test_similarities_follow_the_papers_loops_jitted_batched_and_symmetric(fn):
    a, b = _random_prompts(1, 3), _random_prompts(2, 4) * 0.5 + 0.3
    matrix = jax.jit(partial(ind.pairwise, fn))(a, b)
    assert matrix.shape == (3, 4)
    expected = np.array([[_paper_reference(fn.__name__, x, y) for y in b] for x in a])
    np.testing.assert_allclose(np.asarray(matrix), expected, rtol=1e-5, atol=1e-6)
    # Pair order does not matter.
    np.testing.assert_allclose(np.asarray(ind.pairwise(fn, b, a)), np.asarray(matrix).T,
                               rtol=1e-6, atol=1e-7)
    # One pair at a time gives the batched entries; leading axes broadcast like the pairs.
    assert float(jax.jit(fn)(a[1], b[2])) == pytest.approx(float(matrix[1, 2]), rel=1e-6)
    np.testing.assert_allclose(np.asarray(fn(a, b[:3])), np.diag(np.asarray(matrix)[:, :3]),
                               rtol=1e-6)


def test_tokenwise_similarities_take_prompts_of_different_lengths():
    a, b = _random_prompts(3, 1, p=3)[0], _random_prompts(4, 1, p=6)[0]
    for fn in (ind.tokenwise_cosine, ind.tokenwise_euclidean):
        assert float(fn(a, b)) == pytest.approx(_paper_reference(fn.__name__, a, b), rel=1e-5)


def test_tokenwise_euclidean_stays_accurate_far_from_the_origin():
    """Distances from dot products lose precision when the tokens share a large offset; the
    pair is centred first, so the result still matches the direct differences."""
    a, b = _random_prompts(5, 2, p=6) * 1e-2 + 300.0
    assert float(ind.tokenwise_euclidean(a, b)) == pytest.approx(
        _paper_reference("tokenwise_euclidean", a, b), rel=1e-4)


def test_layer_selections():
    assert ind.layer_range(12, "all") == (0, 12)
    assert ind.layer_range(12, "bottom_third") == (0, 4)
    assert ind.layer_range(12, "top_third") == (8, 12)
    assert ind.layer_range(12, (3, 6)) == (3, 6)  # one of the paper's 3-layer windows
    assert ind.layer_range(2, "bottom_third") == (0, 1)  # at least one layer
    assert ind.layer_range(2, "top_third") == (1, 2)
    for bad in ("middle", (4, 4), (0, 13), (-1, 2)):
        with pytest.raises(ValueError):
            ind.layer_range(12, bad)
    x = jnp.arange(2 * 6 * 3).reshape(2, 6, 3)  # [N, L, F]
    np.testing.assert_array_equal(ind.select_layers(x, "top_third", axis=1), x[:, 4:])
    np.testing.assert_array_equal(ind.select_layers(x[0], "bottom_third"), x[0, :2])


def test_neuron_overlap_on_known_masks():
    a = jnp.array([[1.0, 1.0, 0.0, 0.0]])  # [L=1, F=4]
    b = jnp.array([[1.0, 0.0, 1.0, 0.0]])
    assert float(ind.neuron_overlap(a, b)) == pytest.approx(0.5)  # 1 shared / sqrt(2 * 2)
    assert float(ind.neuron_overlap(a, a)) == pytest.approx(1.0)
    assert float(ind.neuron_overlap(a, 1.0 - a)) == 0.0  # disjoint
    assert float(ind.neuron_overlap(a, jnp.zeros_like(a))) == 0.0  # nothing activated
    # Pre-activations binarize at > 0: negative and exactly zero inputs are not activated.
    pre = jnp.array([[2.5, 0.1, -3.0, 0.0]])
    assert float(ind.neuron_overlap(pre, a)) == pytest.approx(1.0)
    assert float(ind.neuron_overlap(pre, a.astype(bool))) == pytest.approx(1.0)
    # 3 shared of 3 and 6 activated neurons -> 3 / sqrt(18).
    many_a = jnp.array([1, 1, 1, 0, 0, 0, 0, 0], jnp.float32)
    many_b = jnp.array([1, 1, 1, 1, 1, 1, 0, 0], jnp.float32)
    assert float(ind.neuron_overlap(many_a[None], many_b[None])) == pytest.approx(
        3 / math.sqrt(18))


def test_neuron_overlap_selects_layers_jitted_batched_and_symmetric():
    # Three layers: the masks agree on the bottom one only, disagree on the top one.
    a = jnp.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]], jnp.float32)
    b = jnp.array([[1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 1]], jnp.float32)
    on = jax.jit(ind.neuron_overlap, static_argnames="layers")
    assert float(on(a, b, layers="bottom_third")) == pytest.approx(1.0)
    assert float(on(a, b, layers="top_third")) == 0.0
    assert float(on(a, b, layers=(1, 2))) == pytest.approx(0.5)
    assert float(on(a, b)) == pytest.approx(3 / 6)  # 3 shared of 6 and 6 activated

    pre = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3, 16)), jnp.float32)  # [N, L, F]
    for layers_ in ("all", "top_third"):
        matrix = jax.jit(partial(ind.pairwise, partial(ind.neuron_overlap, layers=layers_)))(
            pre, pre[:4])
        assert matrix.shape == (5, 4)
        expected = [[float(ind.neuron_overlap(x, y, layers_)) for y in pre[:4]] for x in pre]
        np.testing.assert_allclose(np.asarray(matrix), expected, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(matrix)[:4], np.asarray(matrix)[:4].T, rtol=1e-6)
        np.testing.assert_allclose(np.diag(np.asarray(matrix)), 1.0, rtol=1e-6)


def test_rank_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(5):
        x = rng.integers(0, 4, 30).astype(float)  # many ties
        y = x + rng.integers(-2, 3, 30) if trial % 2 else rng.normal(size=30)
        assert ind.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
        assert ind.kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau(x, y).statistic)
    np.testing.assert_array_equal(ind.average_ranks([3.0, 1.0, 3.0, 2.0, 3.0]),
                                  scipy.stats.rankdata([3.0, 1.0, 3.0, 2.0, 3.0]))


def test_rank_correlations_on_hand_computed_values():
    # One swapped pair of three: d^2 = 2 -> 1 - 6 * 2 / (3 * 8) = 0.5; (2 - 1) / 3 pairs.
    assert ind.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert ind.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # Ties: x ranks 1, 2.5, 2.5, 4. Pairs: 5 concordant, 1 tied in x; tau-b = 5 / sqrt(5 * 6).
    assert ind.kendall_tau([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    assert ind.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert ind.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # Matrices are correlated as flat sequences; a constant side has no correlation.
    assert ind.spearman(np.eye(3), 2 * np.eye(3)) == pytest.approx(1.0)
    assert math.isnan(ind.spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(ind.kendall_tau([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="finite"):
        ind.spearman([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="equally long"):
        ind.kendall_tau([1, 2, 3], [1, 2])


def test_retrieval_on_a_small_example():
    # 3 targets x 4 sources. Target 0: best source 2, ranked 1st. Target 1: best source 0,
    # ranked 3rd. Target 2: sources 1 and 3 tie for best; source 3 ranked 2nd.
    indicator = jnp.array([[0.1, 0.2, 0.9, 0.3],
                           [0.5, 0.9, 0.1, 0.8],
                           [0.9, 0.1, 0.2, 0.5]])
    actual = jnp.array([[50.0, 60.0, 90.0, 70.0],
                        [80.0, 60.0, 50.0, 70.0],
                        [40.0, 75.0, 60.0, 75.0]])
    hits = jax.jit(ind.retrieval_hits, static_argnames="k")
    np.testing.assert_array_equal(hits(indicator, actual, k=1), [True, False, False])
    np.testing.assert_array_equal(hits(indicator, actual, k=2), [True, False, True])
    np.testing.assert_array_equal(hits(indicator, actual, k=3), [True, True, True])
    assert ind.retrieval_accuracy(indicator, actual) == {1: pytest.approx(1 / 3), 3: 1.0}
    # Leaving out source 2 (say, target 0's own prompt): target 0's best is now source 3,
    # ranked 1st among the rest.
    valid = jnp.ones((3, 4), bool).at[0, 2].set(False)
    np.testing.assert_array_equal(hits(indicator, actual, k=1, valid=valid),
                                  [True, False, False])
    with pytest.raises(ValueError, match="k=5"):
        ind.retrieval_hits(indicator, actual, 5)


# --- FFN activations the indicator reads, on the tiny backbones ---------------------------

GATED = ("llama", "gemma3", "t5_v1_1")


def _last_up_negated(params):
    """The same params with the last layer's gated-FFN up projection (Llama `up`, T5 `wi_1`)
    negated: every pre-activation stays as it was, the last layer's product flips sign."""
    def flip(path, x):
        key = jax.tree_util.keystr(path)
        return x.at[-1].multiply(-1) if "['up']" in key or "['wi_1']" in key else x

    return jax.tree_util.tree_map_with_path(flip, params)


@pytest.mark.parametrize("name", sorted(TINY))
def test_pre_activation_is_the_activation_functions_input(name):
    model = TINY[name]()
    params = jax.jit(model.init_params)(jax.random.key(0))
    embeds = model.embed(params, IDS)

    @jax.jit
    def both(params):
        return (model.activations(params, embeds, MASK),
                model.activations(params, embeds, MASK, kind="pre_activation"))

    out, pre = both(params)
    assert out.keys() == pre.keys()  # the same stack
    (out,), (pre,) = out.values(), pre.values()
    assert pre.shape == out.shape == (2, 2, 5, 32)  # [L, B, T, F]
    if name in GATED:
        # act(gate) * up: negating up flips the product's sign, not the gate's pre-activation.
        (out_neg,), (pre_neg,) = (d.values() for d in both(_last_up_negated(params)))
        np.testing.assert_array_equal(np.asarray(pre_neg), np.asarray(pre))
        np.testing.assert_array_equal(np.asarray(out_neg[:-1]), np.asarray(out[:-1]))
        np.testing.assert_array_equal(np.asarray(out_neg[-1]), -np.asarray(out[-1]))
    else:
        # ReLU / GELU FFNs: the output projection's input is act(pre-activation), and a
        # neuron's output is > 0 exactly when its input is.
        act = layers.activation(model.config.act_name if name == "t5"
                                else model.config.hidden_act)
        np.testing.assert_allclose(np.asarray(act(pre)), np.asarray(out), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(pre > 0), np.asarray(out > 0))
    with pytest.raises(ValueError, match="unknown FFN activation kind"):
        model.activations(params, embeds, MASK, kind="gate")


@pytest.mark.parametrize("name", ["llama", "t5", "t5_v1_1", "roberta"])
def test_activation_masks_read_the_prompted_pre_activation(name):
    model = TINY[name]()
    params = jax.jit(model.init_params)(jax.random.key(0))
    embeds = model.embed(params, IDS)
    prompt = jax.random.normal(jax.random.key(1), (3, model.d_model))
    positions = jnp.array([[4, 0], [3, 1]])  # [B, K] text positions

    masks = jax.jit(lambda p, prm: ind.activation_masks(model, p, prm, embeds, MASK,
                                                        positions))(params, prompt)
    k = 1 if model.prompt_style == "t5" else 2  # T5: the decoder's first position only
    assert masks.shape == (2, 2, k, 32) and masks.dtype == jnp.bool_  # [L, B, K, F]
    # The same as inserting the prompt by hand and reading the shifted positions (on T5, the
    # decoder's first position; tests/test_parity.py pins it to the paper's hook).
    full, full_mask, start = prompts.insert_prompt(prompt, embeds, MASK,
                                                   model.default_placement)
    if model.prompt_style == "t5":
        (pre,) = model.activations(params, full, full_mask, kind="pre_activation",
                                   stack="decoder").values()
        np.testing.assert_array_equal(np.asarray(masks), np.asarray(pre > 0))
    else:
        (pre,) = model.activations(params, full, full_mask, kind="pre_activation").values()
        shifted = np.asarray(prompts.shift_positions(positions, start[:, None], 3))
        for b in range(2):
            for j in range(2):
                np.testing.assert_array_equal(np.asarray(masks[:, b, j]),
                                              np.asarray(pre[:, b, shifted[b, j]] > 0))
    # Positions [B] give K = 1; a layer selection keeps those layers.
    top = ind.activation_masks(model, params, prompt, embeds, MASK, positions[:, 0],
                               layers="top_third")
    np.testing.assert_array_equal(np.asarray(top), np.asarray(masks[1:, :, :1]))
    # vmap over a stack of prompts: one call for many prompts, each as alone.
    stack = jnp.stack([prompt, -prompt, 2.0 * prompt + 1.0])
    many = jax.vmap(lambda p: ind.activation_masks(model, params, p, embeds, MASK,
                                                   positions))(stack)
    for i in range(3):
        np.testing.assert_array_equal(
            np.asarray(many[i]),
            np.asarray(ind.activation_masks(model, params, stack[i], embeds, MASK, positions)))
    # ON of the prompts: [L, B, K, F] masks flatten to [L, B * K * F] per prompt.
    overlap = ind.pairwise(ind.neuron_overlap, *(many.reshape(3, 2, -1),) * 2)
    np.testing.assert_allclose(np.diag(np.asarray(overlap)), 1.0, rtol=1e-6)
    assert bool(jnp.all((overlap >= 0) & (overlap <= 1 + 1e-6)))


def test_on_follows_the_gate_not_the_product_on_llama():
    """A gated FFN's neuron is activated when its gate's pre-activation is > 0. Negating the
    last layer's up projection flips the sign of its act(gate) * up, so "product > 0" and
    "gate > 0" then disagree on about half of that layer's neurons; the masks must follow the
    gate and stay as they were."""
    model = TINY["llama"]()
    params = jax.jit(model.init_params)(jax.random.key(0))
    flipped = _last_up_negated(params)
    embeds = model.embed(params, IDS)
    prompt = jax.random.normal(jax.random.key(2), (3, model.d_model))
    positions = jnp.array([4, 3])

    masks = ind.activation_masks(model, params, prompt, embeds, MASK, positions)
    masks_flipped = ind.activation_masks(model, flipped, prompt, embeds, MASK, positions)
    np.testing.assert_array_equal(np.asarray(masks_flipped), np.asarray(masks))

    full, full_mask, _ = prompts.insert_prompt(prompt, embeds, MASK, "prefix")
    at = np.asarray(positions) + 3
    rows = np.arange(2)
    (gate,) = model.activations(flipped, full, full_mask, kind="pre_activation").values()
    (product,) = model.activations(flipped, full, full_mask).values()
    gate, product = np.asarray(gate)[:, rows, at], np.asarray(product)[:, rows, at]  # [L, B, F]
    np.testing.assert_array_equal(np.asarray(masks[:, :, 0]), gate > 0)
    disagree = (gate > 0) != (product > 0)  # [L, B, F]
    assert disagree[-1].mean() > 0.3
    # ON between the two parameterizations is 1 by the gate; the products would say otherwise.
    assert float(ind.neuron_overlap(masks.reshape(2, -1), masks_flipped.reshape(2, -1))) == (
        pytest.approx(1.0))
    (product_orig,) = model.activations(params, full, full_mask).values()
    product_orig = np.asarray(product_orig)[:, rows, at]
    assert float(ind.neuron_overlap(product_orig.reshape(2, -1), product.reshape(2, -1))) < 0.9
