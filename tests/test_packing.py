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


def _generation_batch(seed=0, k=7):
    """Examples of uneven input and target lengths (targets right-padded, as the pipeline makes
    them), the last a filler row."""
    batch = _batch(seed, weight=np.r_[np.ones(B - 1), 0.0].astype(np.float32))
    rng = np.random.default_rng(seed + 100)
    lengths = rng.integers(1, k + 1, size=B)
    lengths[0] = k  # one target fills its slots
    mask = (np.arange(k)[None] < lengths[:, None]).astype(np.int32)
    batch.update(targets=np.where(mask > 0, rng.integers(3, 60, size=(B, k)), 0).astype(np.int32),
                 target_mask=mask)
    return batch


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


def test_pack_batch_with_targets_layout():
    """Each example's target follows its input in its segment, positions running on, and
    last[i, j] is the token that predicts target token j."""
    batch = _generation_batch()
    packed = packing.pack_batch(batch, rows=2, multiple=8, pad_id=0, targets=True)
    width, k = packed["inputs"].shape[1], batch["targets"].shape[1]
    n_in, n_tgt = batch["input_mask"].sum(1), batch["target_mask"].sum(1)
    per_row = (n_in + n_tgt)[:-1].tolist() + [0]  # the filler row takes no room
    assert width == -(-max(sum(per_row[:4]), sum(per_row[4:])) // 8) * 8
    assert packed["last"].shape == (B, k)
    flat = {key: packed[key].reshape(-1) for key in ("inputs", "segment_ids", "positions")}
    for i in range(B - 1):
        end = packed["last"][i, 0]  # the last input token
        start, stop = end - n_in[i] + 1, end + n_tgt[i] + 1
        np.testing.assert_array_equal(flat["inputs"][start:end + 1],
                                      batch["inputs"][i, :n_in[i]])
        np.testing.assert_array_equal(flat["inputs"][end + 1:stop],
                                      batch["targets"][i, :n_tgt[i]])
        assert set(flat["segment_ids"][start:stop]) == {i % 4 + 1} and start // width == i // 4
        np.testing.assert_array_equal(flat["positions"][start:stop], np.arange(stop - start))
        np.testing.assert_array_equal(packed["last"][i, :n_tgt[i]], end + np.arange(n_tgt[i]))
        assert (packed["last"][i] < stop).all()  # padded slots point inside the example
    assert packed["input_mask"].sum() == sum(per_row)
    np.testing.assert_array_equal(packed["targets"], batch["targets"])


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_packed_targets_score_loss_and_gradient_equal_one_example_per_row(name):
    """A generation batch packed with its targets (inputs and targets of uneven lengths, a
    filler row) gives each example's target log-likelihood, the target_ce loss and its
    gradient with respect to the prompt of the batch one example per row."""
    model, params = _model(name)
    batch = _generation_batch(3)
    packed = packing.pack_batch(batch, rows=2, multiple=8, targets=True)
    prompt = prompts.random_uniform(jax.random.key(1), P, model.d_model)

    @jax.jit
    def scores_loss_and_grad(prompt, b):
        gold = (b["targets"][:, None], b["target_mask"][:, None])  # [B, 1, K]
        scores = scoring.candidate_scores(model, params, prompt, b, gold, "prefix")[:, 0]
        return scores, *jax.value_and_grad(lambda p: train.loss_fn(
            p, params, b, model=model, loss="target_ce", placement="prefix")[0])(prompt)

    (scores_packed, loss_packed, grad_packed), (scores, loss, grad) = (
        scores_loss_and_grad(prompt, b) for b in (packed, batch))
    real = batch["weight"] > 0  # (a filler row's score is dropped)
    np.testing.assert_allclose(scores_packed[real], scores[real], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(loss_packed, loss, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(grad_packed, grad, atol=1e-5, rtol=1e-5)
    assert np.abs(grad).max() > 1e-2  # the loss does reach the prompt


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


def test_packed_batches_score_single_token_candidates_or_their_own_targets():
    model, params = _model()
    packed = packing.pack_batch(_batch(), multiple=8)
    two_tokens = (jnp.array([[11, 12], [21, 0]]), jnp.array([[1, 1], [1, 0]]))
    with pytest.raises(ValueError, match="got 2 candidates of 2 tokens for a batch packed "
                                         "without its targets"):
        scoring.candidate_scores(model, params, None, packed, two_tokens, "prefix")
    with_targets = packing.pack_batch(_generation_batch(k=2), multiple=8, targets=True)
    with pytest.raises(ValueError, match="got 2 candidates of 2 tokens for a batch packed "
                                         "with its 2-token targets"):
        scoring.candidate_scores(model, params, None, with_targets, two_tokens, "prefix")
    # single-token candidates are read at the last input token, targets packed or not
    scores = jax.jit(lambda b: scoring.candidate_scores(model, params, None, b, CANDS, "prefix"))
    np.testing.assert_allclose(scores(with_targets)[:-1], scores(_generation_batch(k=2))[:-1],
                               atol=1e-5, rtol=1e-5)  # (real rows: the filler's is dropped)
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


def test_a_generation_packer_counts_the_targets_it_packs():
    """Packing targets costs their tokens: a batch whose short inputs would pack does not when
    its long targets fill their slots."""
    keys = 3070.0
    batch = _generation_batch(k=7)
    batch["inputs"] = np.pad(batch["inputs"], ((0, 0), (0, 16)))
    batch["input_mask"] = np.pad(batch["input_mask"], ((0, 0), (0, 16)))
    packer = packing.packer_for(None, "prefix", keys, rows=1, prefix_length=4, pad_id=0)
    real = batch["weight"] > 0
    tokens = batch["input_mask"][real].sum() + batch["target_mask"][real].sum()
    assert packer.targets and packing.packed_width(batch, 1, 32, targets=True) == -(
        -tokens // 32) * 32
    assert packer(batch)["last"].shape == (B, 7)
    long_targets = dict(batch, targets=np.ones((B, 200), np.int32),
                        target_mask=np.ones((B, 200), np.int32))
    assert packer(long_targets) is long_targets
    assert packing.Packer(1, 4, keys)(long_targets) is not long_targets  # inputs alone: packs
    for candidates, placement in ((None, "after_bos"), ((np.ones((2, 2)), None), "prefix")):
        assert packing.packer_for(candidates, placement, keys, rows=1, prefix_length=4,
                                  pad_id=0) is None
    assert packing.packer_for(None, "prefix", 0.0, rows=1, prefix_length=4, pad_id=0) is None
    assert not packing.packer_for((np.ones((2, 1)), None), "prefix", keys, rows=1,
                                  prefix_length=4, pad_id=0).targets
