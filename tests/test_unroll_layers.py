"""The decoder-only backbones' layer layouts: `unroll_layers` (the layer loop unrolled in the
compiled program, the same stacked params) and `scan_layers=False` (each layer's params apart,
a Python loop) give the same loss, gradient, greedy decoding and FFN activations as the scanned
loop, and their compiled programs really have no layer loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_jax import decoding, partitioning
from prompt_jax.models import layers
from prompt_jax.training import train
from tests.test_interface import TINY
from tests.test_train_step import _batch, _expressive


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_every_layer_layout_computes_what_the_scan_computes(family):
    scanned = TINY[family]()
    params = _expressive(jax.jit(scanned.init_params)(jax.random.key(0)))
    layouts = {"scan": (scanned, params),
               "unrolled": (TINY[family](unroll_layers=True), params),
               "per_layer": (TINY[family](scan_layers=False),
                             {**params, "layers": layers.split_layers(params["layers"])})}
    for model, model_params in layouts.values():  # the params each layout's model makes
        assert jax.tree.structure(model_params) == jax.tree.structure(
            jax.eval_shape(model.init_params, jax.random.key(0)))
    assert set(layouts["per_layer"][1]["layers"]) == {
        str(i) for i in range(scanned.config.num_hidden_layers)}
    prompt = np.asarray(jax.random.normal(jax.random.key(1), (3, scanned.d_model))) * 0.3
    batch = _batch(seed=0)[0]
    mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
    opt = train.make_optimizer(train.OptimizerConfig())
    out, programs = {}, {}
    for name, (model, model_params) in layouts.items():
        step = train.jit_train_step(train.make_train_step(model, opt), model, mesh)
        state = train.place_state(train.init_state(prompt, opt), mesh)
        programs[name] = step.lower(state, model_params, batch).as_text()
        state, metrics = step(state, model_params, batch)
        generation = decoding.greedy(model, model_params, jnp.asarray(prompt),
                                     batch["inputs"][:2], batch["input_mask"][:2],
                                     max_new_tokens=4, eos_ids=-1)
        embeds = model.embed(model_params, batch["inputs"][:2])
        activations = model.activations(model_params, embeds, batch["input_mask"][:2])
        out[name] = (float(metrics["loss"]), np.asarray(state.trainable),
                     generation.token_ids, np.asarray(activations["decoder"]))
    for name in ("unrolled", "per_layer"):
        np.testing.assert_allclose(out[name][0], out["scan"][0], rtol=1e-5)
        np.testing.assert_allclose(out[name][1], out["scan"][1], rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(out[name][2], out["scan"][2])
        np.testing.assert_allclose(out[name][3], out["scan"][3], rtol=1e-5, atol=1e-6)
    # The layer loops (forward and backward) are gone; the RNG's own small loop stays.
    loops = {k: v.count("stablehlo.while") for k, v in programs.items()}
    assert loops["unrolled"] <= loops["scan"] - 2, loops
    assert loops["per_layer"] == loops["unrolled"], loops


def test_a_model_loaded_with_its_layers_apart_scores_as_the_stacked_one(tiny_llama):
    from prompt_jax import engine

    stacked, apart = (engine.load_model(str(tiny_llama), mesh_data=1, mesh_model=2,
                                        scan_layers=scan) for scan in (True, False))
    assert apart.model.config.scan_layers is False
    gate = stacked.params["layers"]["mlp"]["gate"]["kernel"]  # [L, embed, mlp]
    for i, layer in apart.params["layers"].items():  # each layer's slice, split as before
        np.testing.assert_array_equal(layer["mlp"]["gate"]["kernel"], gate[int(i)])
        assert tuple(layer["mlp"]["gate"]["kernel"].sharding.spec) == gate.sharding.spec[1:]
    ids = np.array([[5, 6, 7, 8], [9, 10, 11, 0]])
    mask = (ids > 0).astype(np.int32)
    logits = {name: np.asarray(loaded.model.forward(
        loaded.params, loaded.model.embed(loaded.params, ids), mask))
        for name, loaded in (("stacked", stacked), ("apart", apart))}
    np.testing.assert_allclose(logits["apart"], logits["stacked"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("option", [{"unroll_layers": True}, {"scan_layers": False}])
def test_a_layout_option_is_refused_where_there_is_no_such_option(tmp_path, option):
    from prompt_jax import engine
    from tests.hf_models import save_tiny

    with pytest.raises(ValueError, match="decoder-only"):
        engine.load_model(str(save_tiny("roberta", tmp_path / "r")), **option)
