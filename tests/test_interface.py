"""Every family implements the same Backbone surface, with logical axes on every parameter."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_jax.models import (
    T5,
    Backbone,
    Gemma3,
    Gemma3Config,
    Llama,
    LlamaConfig,
    Roberta,
    RobertaConfig,
    T5Config,
)
from prompt_jax.models.t5 import relative_position_buckets
from prompt_jax.partitioning import LOGICAL_AXES

TINY = {
    "t5": lambda **kw: T5(T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2,
                                   num_decoder_layers=2, num_heads=4, **kw)),
    "t5_v1_1": lambda **kw: T5(T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2,
                                        num_decoder_layers=2, num_heads=4,
                                        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                        scale_decoder_outputs=False, **kw)),
    "roberta": lambda **kw: Roberta(RobertaConfig(vocab_size=64, hidden_size=16,
                                                  num_hidden_layers=2, num_attention_heads=4,
                                                  intermediate_size=32, **kw)),
    "bert": lambda **kw: Roberta(RobertaConfig(variant="bert", vocab_size=64, hidden_size=16,
                                               num_hidden_layers=2, num_attention_heads=4,
                                               intermediate_size=32, max_position_embeddings=32,
                                               type_vocab_size=2, pad_token_id=0, **kw)),
    "llama": lambda **kw: Llama(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                            num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, **kw)),
    # A window of 3 positions: rows and prompts are longer, so sliding layers differ.
    "gemma3": lambda **kw: Gemma3(Gemma3Config(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8,
        sliding_window=3, layer_types=("sliding_attention", "full_attention"), **kw)),
}

IDS = jnp.array([[3, 4, 5, 6, 7], [8, 9, 10, 11, 0]])
MASK = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])


def _kwargs(model):
    if model.family == "t5":
        return {"decoder_input_ids": jnp.array([[0, 5], [0, 6]])}
    return {}


def _score_kwargs(model):
    return {"target_positions": jnp.array([1, 2])} if model.family in ("roberta", "bert") else {}


@pytest.mark.parametrize("name", sorted(TINY))
def test_backbone_surface(name):
    model = TINY[name]()
    assert isinstance(model, Backbone)
    params = jax.jit(model.init_params)(jax.random.key(0))

    @jax.jit
    def run(params):
        embeds = model.embed(params, IDS)
        logits = model.forward(params, embeds, MASK, **_kwargs(model))
        scores = model.score(params, embeds, MASK, jnp.array([[5, 6], [7, 0]]),
                             jnp.array([[1, 1], [1, 0]]), **_score_kwargs(model))
        return embeds, logits, scores, model.activations(params, embeds, MASK)

    embeds, logits, scores, acts = run(params)
    assert embeds.shape == (2, 5, model.d_model)
    assert logits.shape[-1] == model.vocab_size and logits.dtype == jnp.float32
    assert scores.shape == (2, 2) and bool(jnp.all(scores < 0))
    (acts,) = acts.values()
    assert acts.shape == (2, 2, 5, 32)  # [L, B, T, F]


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_param_has_known_logical_axes(name):
    model = TINY[name]()
    shapes, axes = model.abstract_params()
    flat_shapes = jax.tree_util.tree_leaves_with_path(shapes)
    flat_axes = dict(jax.tree_util.tree_leaves_with_path(
        axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)))
    assert len(flat_shapes) == len(flat_axes)
    for path, shape in flat_shapes:
        spec = flat_axes[path]
        assert len(spec) == len(shape.shape), (path, spec, shape.shape)
        assert all(a in LOGICAL_AXES for a in spec), (path, spec)
        if "layers" in jax.tree_util.keystr(path):
            assert spec[0] == "layers"


@pytest.mark.parametrize("name", sorted(TINY))
def test_gradient_reaches_the_input_embeddings(name):
    model = TINY[name]()
    params = jax.jit(model.init_params)(jax.random.key(0))

    def loss(e):
        return -model.score(params, e, MASK, jnp.array([[5, 6]]), jnp.array([[1, 1]]),
                            **_score_kwargs(model)).sum()

    grad = jax.jit(jax.grad(loss))(model.embed(params, IDS))
    assert float(jnp.abs(grad).sum()) > 0
    assert float(jnp.abs(grad[1, 4]).sum()) == 0.0  # a padded position gets no gradient


@pytest.mark.parametrize("name", ["t5", "roberta", "llama"])
def test_bfloat16_params_and_remat_keep_shapes_and_values(name):
    model = TINY[name]()
    params = jax.jit(model.init_params)(jax.random.key(0))
    remat = TINY[name](remat=True)

    def loss(m, p):
        return m.forward(p, m.embed(p, IDS), MASK, **_kwargs(m)).mean()

    base = jax.jit(jax.value_and_grad(partial(loss, model)))(params)
    again = jax.jit(jax.value_and_grad(partial(loss, remat)))(params)
    jax.tree_util.tree_map(partial(np.testing.assert_allclose, atol=1e-6), base, again)
    half = TINY[name](dtype="bfloat16", param_dtype="bfloat16")
    hparams = jax.jit(half.init_params)(jax.random.key(0))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(hparams))
    assert half.embed(hparams, IDS).dtype == jnp.bfloat16


def test_dropout_is_off_unless_asked_for():
    model = TINY["roberta"](hidden_dropout_prob=0.5)
    params = jax.jit(model.init_params)(jax.random.key(0))
    embeds = model.embed(params, IDS)
    forward = jax.jit(model.forward, static_argnames="deterministic")
    a = forward(params, embeds, MASK)
    b = forward(params, embeds, MASK)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = forward(params, embeds, MASK, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_relative_position_buckets_match_transformers():
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20)):
            ours = relative_position_buckets(300, 300, bidirectional, buckets, distance)
            rel = torch.arange(300)[None, :] - torch.arange(300)[:, None]
            theirs = T5Attention._relative_position_bucket(
                rel, bidirectional=bidirectional, num_buckets=buckets, max_distance=distance)
            np.testing.assert_array_equal(ours, theirs.numpy())


def test_configs_are_hashable_and_reject_bad_values():
    assert hash(dataclasses.replace(TINY["llama"]().config, remat=True))
    with pytest.raises(ValueError, match="variant must be"):
        RobertaConfig(variant="electra")
    with pytest.raises(ValueError, match="unsupported dtype 'float8'"):
        TINY["llama"](dtype="float8").init_params(jax.random.key(0))


@pytest.mark.subprocess
def test_importing_the_library_does_not_import_tensorflow():
    code = ("import sys, prompt_jax, prompt_jax.models, prompt_jax.models.convert; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
