"""The training step: only the prompt moves, sharding does not change the math, no recompiles,
and the gradient reaches the prompt through every backbone family."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_jax import partitioning, prompts, scoring
from prompt_jax.training import train
from tests.test_interface import TINY

B, T, K, P = 8, 6, 2, 4


def _batch(seed=0, family="llama"):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, T + 1, size=B)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    inputs = np.where(mask > 0, rng.integers(3, 60, size=(B, T)), 0).astype(np.int32)
    label = rng.integers(0, 2, size=B).astype(np.int32)
    candidates = np.array([[11, 12], [21, 0]], np.int32)
    cmask = np.array([[1, 1], [1, 0]], np.int32)
    target_position = np.zeros(B, np.int32)
    if family in ("roberta", "bert"):
        inputs[:, 1] = 63  # the <mask> token
        target_position[:] = 1
    return {
        "inputs": inputs, "input_mask": mask,
        "targets": candidates[label], "target_mask": cmask[label],
        "label": label, "target_position": target_position,
        "weight": np.ones(B, np.float32),
    }, (jnp.asarray(candidates), jnp.asarray(cmask))


def _expressive(params):
    """Random init (std 0.02) leaves a tiny model nearly blind to its input, and a width-16
    output head cannot make a peaked distribution: scale matrices up (vocabulary ones most) so
    that the prompt can steer the model, as pretrained weights allow."""
    def scale(path, x):
        name = jax.tree_util.keystr(path)
        if "embedding" in name and "relpos" not in name or "lm_head" in name:
            return x * 25.0
        return x * 10.0 if "kernel" in name else x
    return jax.tree_util.tree_map_with_path(scale, params)


def _setup(name):
    model = TINY[name]()
    params = _expressive(jax.jit(model.init_params)(jax.random.key(0)))
    opt = train.make_optimizer(train.OptimizerConfig())
    batch, _ = _batch(family=model.family)
    step = train.make_train_step(model, opt, placement=model.default_placement)  # target CE
    prompt = prompts.random_uniform(jax.random.key(1), P, model.d_model)
    return model, params, opt, batch, step, train.init_state(prompt, opt)


def test_only_the_prompt_changes_and_frozen_params_stay_bit_identical():
    model, params, opt, batch, step, state = _setup("llama")
    before = jax.tree_util.tree_map(np.array, params)
    prompt0 = np.array(state.trainable)
    jitted = train.jit_train_step(step, model, partitioning.make_mesh(1, 1, jax.devices()[:1]))
    for _ in range(3):
        state, _ = jitted(state, params, batch)
    assert int(state.step) == 3
    assert not np.array_equal(np.asarray(state.trainable), prompt0)
    jax.tree_util.tree_map(np.testing.assert_array_equal, before,
                           jax.tree_util.tree_map(np.array, params))


@pytest.mark.parametrize("shape", [(8, 1), (4, 2)])
def test_sharded_step_equals_single_device(shape):
    assert jax.device_count() == 8
    model, params, opt, batch, step, state = _setup("llama")
    state_copy = jax.tree_util.tree_map(jnp.array, state)
    single = train.jit_train_step(step, model, partitioning.make_mesh(1, 1, jax.devices()[:1]))
    mesh = partitioning.make_mesh(*shape)
    sharded = train.jit_train_step(step, model, mesh)
    sharded_params = partitioning.shard_params(params, model, mesh)
    if shape[1] == 2:  # the model axis really splits some weights
        q = sharded_params["layers"]["attn"]["q"]["kernel"]
        assert q.sharding.spec == jax.sharding.PartitionSpec(None, None, "model", None)
    a, ma = single(state, params, batch)
    b, mb = sharded(state_copy, sharded_params, batch)
    np.testing.assert_allclose(float(ma["loss"]), float(mb["loss"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(a.trainable), np.asarray(b.trainable), atol=1e-5)


def test_batch_size_must_divide_the_data_axis():
    with pytest.raises(ValueError, match=r"batch size 6 is not divisible by the mesh's data "
                                         r"axis \(4 devices\)"):
        partitioning.check_batch_size(6, partitioning.make_mesh(4, 2))


def test_no_recompilation_after_the_first_train_and_eval_step():
    model, params, opt, batch, step, state = _setup("llama")
    mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
    jitted = train.jit_train_step(step, model, mesh)
    evaluate = scoring.jit_eval_step(
        scoring.make_eval_step(model, placement="prefix"), model, mesh)
    state = train.place_state(state, mesh)
    cands = (jnp.array([[11, 12], [21, 0]]), jnp.array([[1, 1], [1, 0]]))
    for seed in range(4):  # new values, same shapes
        state, _ = jitted(state, params, _batch(seed)[0])
        evaluate(state.trainable, params, _batch(seed)[0], *cands)
    assert jitted._cache_size() == 1
    assert evaluate._cache_size() == 1


@pytest.mark.parametrize("name,loss", [("t5", "rank"), ("t5_v1_1", "target_ce"),
                                       ("roberta", "rank"), ("bert", "target_ce"),
                                       ("llama", "target_ce"), ("llama", "rank")])
def test_prompt_training_halves_the_loss_for_every_family(name, loss):
    """A fixed batch whose gold answer is always the same candidate: an 8-vector prompt alone
    must steer the frozen model there (Adafactor, constant LR 0.3)."""
    model = TINY[name]()
    params = _expressive(jax.jit(model.init_params)(jax.random.key(0)))
    batch, cands = _batch(family=model.family)
    batch["label"][:] = 0
    batch["targets"], batch["target_mask"] = np.asarray(cands[0])[0], np.asarray(cands[1])[0]
    batch["targets"] = np.broadcast_to(batch["targets"], (B, K)).copy()
    batch["target_mask"] = np.broadcast_to(batch["target_mask"], (B, K)).copy()
    opt = train.make_optimizer(train.OptimizerConfig())
    step = jax.jit(train.make_train_step(model, opt, loss=loss,
                                         placement=model.default_placement),
                   donate_argnums=(0,))
    state = train.init_state(prompts.random_uniform(jax.random.key(1), 8, model.d_model), opt)
    state, first = step(state, params, batch, cands)
    for _ in range(200):
        state, metrics = step(state, params, batch, cands)
    assert float(metrics["loss"]) <= 0.5 * float(first["loss"]), (first, metrics)


def test_model_tuning_trains_every_weight_and_leaves_the_callers_params_alone():
    """Model tuning (no prompt): the step's gradient is the loss gradient w.r.t. all params,
    the caller's params stay usable (the state holds a copy), and the loss falls."""
    model, params, _, batch, _, _ = _setup("llama")
    before = jax.tree_util.tree_map(np.array, params)
    opt = train.make_optimizer(train.OptimizerConfig(name="sgd", learning_rate=1e-2))
    step = train.make_train_step(model, opt, trainable=train.MODEL)
    jitted = train.jit_train_step(step, model, partitioning.make_mesh(1, 1, jax.devices()[:1]),
                                  train.MODEL)
    state = train.init_state(params, opt)
    grad = jax.grad(lambda p: train.loss_fn(None, p, batch, model=model, loss="target_ce",
                                            placement="prefix")[0])(params)
    new_state, first = jitted(state, None, batch)
    assert train.MODEL.prompt(new_state.trainable) is None and int(new_state.step) == 1
    expected = jax.tree_util.tree_map(lambda p, g: p - 1e-2 * g, before, grad)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                           expected, new_state.trainable)
    for _ in range(30):
        new_state, metrics = jitted(new_state, None, batch)
    assert float(metrics["loss"]) < 0.5 * float(first["loss"]), (first, metrics)
    jax.tree_util.tree_map(np.testing.assert_array_equal, before,
                           jax.tree_util.tree_map(np.array, params))
    with pytest.raises(ValueError, match="nothing to train"):
        train.init_state({}, opt)


@pytest.mark.parametrize("name", ["llama", "gemma3"])
@pytest.mark.parametrize("k", [1, 2])
def test_shared_prefix_path_equals_inserting_the_prompt(k, name):
    """A decoder's prefix prompt computed once per batch gives the scores, loss and gradient
    of prepending it to every row."""
    model = TINY[name]()
    params = _expressive(jax.jit(model.init_params)(jax.random.key(0)))
    batch, _ = _batch()
    prompt = prompts.random_uniform(jax.random.key(1), P, model.d_model)
    cands = (jnp.array([[11, 12], [21, 0]])[:, :k], jnp.array([[1, 1], [1, 0]])[:, :k])

    def by_insertion(prompt):
        embeds, mask, pos = prompts.prompted_inputs(model, params, prompt, batch, "prefix")
        return model.score(params, embeds, mask, *cands, target_positions=pos)

    def shared(prompt):
        return scoring.candidate_scores(model, params, prompt, batch, cands, "prefix")

    np.testing.assert_allclose(jax.jit(shared)(prompt), jax.jit(by_insertion)(prompt),
                               atol=1e-5, rtol=1e-5)
    g_shared = jax.jit(jax.grad(lambda p: shared(p).sum()))(prompt)
    g_insert = jax.jit(jax.grad(lambda p: by_insertion(p).sum()))(prompt)
    np.testing.assert_allclose(g_shared, g_insert, atol=1e-4, rtol=1e-4)
