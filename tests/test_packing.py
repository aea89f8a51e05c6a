"""Packed batches: the layout is what the docstring promises, and a packed batch gives the
scores, loss and gradients of the same examples one per row, on one device and sharded."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_jax import partitioning, prompts, scoring
from prompt_jax.training import packing, train
from tests.test_interface import TINY
from tests.test_train_step import _expressive

B, T, P = 8, 16, 4
CANDS = (jnp.array([[11], [21]]), jnp.array([[1], [1]]))


def _batch(seed=0, weight=None):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=B)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    inputs = np.where(mask > 0, rng.integers(3, 60, size=(B, T)), 0).astype(np.int32)
    label = rng.integers(0, 2, size=B).astype(np.int32)
    return {"inputs": inputs, "input_mask": mask, "targets": np.asarray(CANDS[0])[label],
            "target_mask": np.ones((B, 1), np.int32), "label": label,
            "target_position": np.zeros(B, np.int32), "index": np.arange(B, dtype=np.int32),
            "weight": np.ones(B, np.float32) if weight is None else weight}


def _model(name="llama"):
    model = TINY[name]()
    return model, _expressive(jax.jit(model.init_params)(jax.random.key(0)))


def test_pack_batch_layout():
    batch = _batch()
    batch["weight"][-1] = 0.0  # a filler row takes no room
    packed = packing.pack_batch(batch, rows=2, multiple=8, pad_id=0)
    lengths = batch["input_mask"].sum(1) * (batch["weight"] > 0)
    width = packed["inputs"].shape[1]
    assert packed["inputs"].shape == (2, width) and width % 8 == 0
    assert width == -(-max(lengths[:4].sum(), lengths[4:].sum()) // 8) * 8
    flat = {k: packed[k].reshape(-1) for k in ("inputs", "segment_ids", "positions")}
    for i in range(B - 1):
        end = packed["last"][i]
        start = end - lengths[i] + 1
        assert end // width == i // 4  # examples 0-3 in row 0, 4-7 in row 1
        np.testing.assert_array_equal(flat["inputs"][start:end + 1],
                                      batch["inputs"][i, :lengths[i]])
        assert set(flat["segment_ids"][start:end + 1]) == {i % 4 + 1}
        np.testing.assert_array_equal(flat["positions"][start:end + 1], np.arange(lengths[i]))
    assert packed["input_mask"].sum() == lengths.sum()
    np.testing.assert_array_equal(packed["label"], batch["label"])
    assert packing.is_packed(packed) and not packing.is_packed(batch)
    with pytest.raises(ValueError, match="already packed"):
        packing.pack_batch(packed)
    with pytest.raises(ValueError, match="cannot pack 8 examples into 3 rows"):
        packing.pack_batch(batch, rows=3)


@pytest.mark.parametrize("name", ["llama", "gemma3"])
@pytest.mark.parametrize("with_prompt", [True, False])
@pytest.mark.parametrize("rows", [1, 2])
def test_packed_scores_and_gradients_equal_one_example_per_row(with_prompt, rows, name):
    model, params = _model(name)
    batch = _batch(1)
    packed = packing.pack_batch(batch, rows=rows, multiple=8)
    prompt = prompts.random_uniform(jax.random.key(1), P, model.d_model) if with_prompt else None

    def scores(prompt, b):
        return scoring.candidate_scores(model, params, prompt, b, CANDS, "prefix")

    np.testing.assert_allclose(jax.jit(scores)(prompt, packed), jax.jit(scores)(prompt, batch),
                               atol=1e-5, rtol=1e-5)
    if with_prompt:
        def loss(p, b):
            return train.loss_fn(p, params, b, model=model, loss="target_ce",
                                 placement="prefix")[0]

        np.testing.assert_allclose(jax.jit(jax.grad(loss))(prompt, packed),
                                   jax.jit(jax.grad(loss))(prompt, batch), atol=1e-5, rtol=1e-4)


def test_packed_train_step_sharded_equals_unpacked_single_device():
    """A packed batch with one row per data shard, on a 4 x 2 mesh, takes the step an unpacked
    batch takes on one device."""
    model, params = _model()
    opt = train.make_optimizer(train.OptimizerConfig())
    step = train.make_train_step(model, opt)
    prompt = np.asarray(prompts.random_uniform(jax.random.key(1), P, model.d_model))
    batch = _batch(2)  # (each step donates its state: both start from a numpy prompt)
    single = train.jit_train_step(step, model, partitioning.make_mesh(1, 1, jax.devices()[:1]))
    a, ma = single(train.init_state(prompt, opt), params, batch)
    mesh = partitioning.make_mesh(4, 2)
    sharded = train.jit_train_step(step, model, mesh)
    b, mb = sharded(train.init_state(prompt, opt), partitioning.shard_params(params, model, mesh),
                    packing.pack_batch(batch, rows=4, multiple=8))
    np.testing.assert_allclose(float(ma["loss"]), float(mb["loss"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(a.trainable), np.asarray(b.trainable), atol=1e-5)


def test_packed_batches_score_single_token_candidates_only():
    model, params = _model()
    packed = packing.pack_batch(_batch(), multiple=8)
    two_tokens = (jnp.array([[11, 12], [21, 0]]), jnp.array([[1, 1], [1, 0]]))
    with pytest.raises(ValueError, match="single-token candidates only"):
        scoring.candidate_scores(model, params, None, packed, two_tokens, "prefix")
    with pytest.raises(ValueError, match="one \\[P, H\\] prefix prompt"):
        scoring.candidate_scores(model, params, jnp.zeros((B, P, model.d_model)), packed, CANDS,
                                 "prefix")
    prompt_set = prompts.PromptSet.stack([jnp.zeros((P, model.d_model))])
    with pytest.raises(ValueError, match="not a PromptSet: packed rows share one prefix"):
        scoring.candidate_scores(model, params, prompt_set,
                                 {**packed, "prompt_index": np.zeros(B, np.int32)}, CANDS,
                                 "prefix")


def test_packer_packs_padded_batches_and_leaves_dense_ones():
    """Short inputs in a wide batch pack; full-width rows would only grow the attention."""
    model, _ = _model()
    packer = packing.Packer(rows=1, prefix_length=20, keys_per_token=3070.0, multiple=32)
    padded = _batch()
    padded["inputs"] = np.pad(padded["inputs"], ((0, 0), (0, 112)))
    padded["input_mask"] = np.pad(padded["input_mask"], ((0, 0), (0, 112)))
    assert packing.is_packed(packer(padded))
    dense = _batch()
    dense["inputs"] = np.ones((B, 128), np.int32)
    dense["input_mask"] = np.ones((B, 128), np.int32)
    assert packer(dense) is dense
    assert model.pack_keys_per_token() > 0
