"""`unroll_layers`: the decoder-only backbones' layer loop unrolled in the compiled program
(the same stacked params) gives the same logits, loss, gradient and greedy decoding as the
scanned loop, and the compiled program really has no loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_jax import decoding, partitioning
from prompt_jax.training import train
from tests.test_interface import TINY
from tests.test_train_step import _batch, _expressive


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_unrolled_layers_compute_what_the_scan_computes(family):
    scanned, unrolled = TINY[family](), TINY[family](unroll_layers=True)
    params = _expressive(jax.jit(scanned.init_params)(jax.random.key(0)))
    assert jax.tree.structure(params) == jax.tree.structure(
        jax.eval_shape(unrolled.init_params, jax.random.key(0)))  # the same params
    prompt = np.asarray(jax.random.normal(jax.random.key(1), (3, scanned.d_model))) * 0.3
    batch = _batch(seed=0)[0]
    mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
    opt = train.make_optimizer(train.OptimizerConfig())
    out, programs = {}, {}
    for name, model in (("scan", scanned), ("unrolled", unrolled)):
        step = train.jit_train_step(train.make_train_step(model, opt), model, mesh)
        state = train.place_state(train.init_state(prompt, opt), mesh)
        programs[name] = step.lower(state, params, batch).as_text()
        state, metrics = step(state, params, batch)
        generation = decoding.greedy(model, params, jnp.asarray(prompt), batch["inputs"][:2],
                                     batch["input_mask"][:2], max_new_tokens=4, eos_ids=-1)
        out[name] = (float(metrics["loss"]), np.asarray(state.trainable),
                     generation.token_ids)
    np.testing.assert_allclose(out["unrolled"][0], out["scan"][0], rtol=1e-5)
    np.testing.assert_allclose(out["unrolled"][1], out["scan"][1], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(out["unrolled"][2], out["scan"][2])
    # The layer loops (forward and backward) are gone; the RNG's own small loop stays.
    loops = {k: v.count("stablehlo.while") for k, v in programs.items()}
    assert loops["unrolled"] <= loops["scan"] - 2, loops


def test_unroll_layers_is_refused_where_there_is_no_such_option(tmp_path):
    from prompt_jax import engine
    from tests.hf_models import save_tiny

    with pytest.raises(ValueError, match="decoder-only"):
        engine.load_model(str(save_tiny("roberta", tmp_path / "r")), unroll_layers=True)
