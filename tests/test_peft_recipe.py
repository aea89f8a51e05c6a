"""Our prompt-tuning step is Hugging Face PEFT's: on a tiny Llama, prompt_jax (AdamW, shared
prefix, packed or not, constant or cosine rate) and PEFT prompt tuning (torch AdamW, with the
benchmark's rates) take the same steps."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from benchmarks import peft_side
from benchmarks.peft_vs_prompt_jax import learning_rates
from prompt_jax import partitioning
from prompt_jax.models import load_pretrained
from prompt_jax.training import packing, train
from tests.hf_models import load_reference, save_tiny

B, T, P, STEPS, LR = 4, 8, 3, 6, 3e-2


def _batches(vocab: int):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(STEPS):
        lengths = rng.integers(2, T + 1, size=B)
        mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
        inputs = np.where(mask > 0, rng.integers(3, vocab, size=(B, T)), 0).astype(np.int32)
        targets = rng.integers(3, vocab, size=(B, 1)).astype(np.int32)
        out.append({"inputs": inputs, "input_mask": mask, "targets": targets,
                    "target_mask": np.ones((B, 1), np.int32), "label": np.zeros(B, np.int32),
                    "target_position": np.zeros(B, np.int32), "weight": np.ones(B, np.float32)})
    return out


def _peft_steps(reference, prompt0, batches, schedule, *, best=False, speedups=None):
    """PEFT prompt tuning through the benchmarks' one PEFT setup (benchmarks/peft_side.py)."""
    speedups = speedups or peft_side.Speedups()
    model, weight = peft_side.wrap(reference, "causal", P, prompt0, best=best,
                                   speedups=speedups)
    one = peft_side.trainer(model, reference, weight, "causal", P, best=best, lr=LR,
                            weight_decay=0.01, speedups=speedups)
    losses = [one(b, lr).item()
              for b, lr in zip(batches, learning_rates(schedule, LR, STEPS), strict=True)]
    return np.array(losses), weight.detach().numpy().copy()


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("pack", [False, True])
def test_prompt_tuning_steps_equal_peft(tmp_path, pack, schedule):
    directory = save_tiny("llama", tmp_path / "llama")
    pre = load_pretrained(directory)
    model, params = pre.model, pre.params
    batches = _batches(model.vocab_size)
    prompt0 = np.random.default_rng(1).normal(0, 0.3, (P, model.d_model)).astype(np.float32)
    theirs, their_prompt = _peft_steps(load_reference("llama", directory), prompt0, batches,
                                       schedule)

    opt = train.make_optimizer(train.OptimizerConfig(name="adamw", learning_rate=LR,
                                                     weight_decay=0.01, schedule=schedule,
                                                     total_steps=STEPS))
    mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
    step = train.jit_train_step(train.make_train_step(model, opt), model, mesh)
    state = train.place_state(train.init_state(prompt0, opt), mesh)
    ours = []
    for b in batches:
        state, metrics = step(state, params, packing.pack_batch(b, multiple=8) if pack else b)
        ours.append(float(metrics["loss"]))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(state.trainable), their_prompt, atol=1e-4)


@pytest.mark.parametrize("steps", [2, 5, 320])
def test_benchmark_rates_are_the_library_schedule(steps):
    """The PEFT side's plain-Python rates are `train.make_schedule`'s, update by update."""
    for schedule in ("constant", "cosine"):
        cfg = train.OptimizerConfig(name="adamw", learning_rate=LR, schedule=schedule,
                                    total_steps=steps)
        expected = [float(train.make_schedule(cfg)(t)) for t in range(steps)]
        np.testing.assert_allclose(learning_rates(schedule, LR, steps), expected, atol=1e-8)


def test_every_peer_variant_takes_the_same_steps(tmp_path):
    """PEFT at its best (the head at the last positions only) takes the steps PEFT as users
    write it takes, and under bf16 autocast nearly those; the evaluation at its best
    (inference_mode, the head at one position) predicts what the users' one does."""
    directory = save_tiny("llama", tmp_path / "llama")
    model = load_pretrained(directory).model
    batches = _batches(model.vocab_size)
    prompt0 = np.random.default_rng(1).normal(0, 0.3, (P, model.d_model)).astype(np.float32)
    written, _ = _peft_steps(load_reference("llama", directory), prompt0, batches, "constant")
    best, best_prompt = _peft_steps(load_reference("llama", directory), prompt0, batches,
                                    "constant", best=True)
    np.testing.assert_allclose(best, written, rtol=1e-5)
    bf16, _ = _peft_steps(load_reference("llama", directory), prompt0, batches, "constant",
                          best=True, speedups=peft_side.Speedups(bf16_autocast=True))
    np.testing.assert_allclose(bf16[0], written[0], rtol=2e-2)
    assert np.abs(bf16 - written).max() > 0  # autocast really ran in bfloat16

    reference = load_reference("llama", directory)
    model, _ = peft_side.wrap(reference, "causal", P, best_prompt, best=True)
    candidates = np.array([5, 9, 11])
    preds = {best: np.concatenate([p for p, _ in peft_side.rank_predictions(
        model, batches, candidates, P, best=best)]) for best in (False, True)}
    np.testing.assert_array_equal(preds[True], preds[False])
    assert len(set(preds[True])) > 1  # not a constant prediction
    with pytest.raises(ValueError, match="single-token"):
        next(peft_side.rank_predictions(model, batches, candidates[None], P, best=True))


def test_cpu_bf16_is_read_from_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert not peft_side.cpu_has_bf16(info)
    info.write_text("flags\t\t: fpu avx2 avx512f amx_bf16\n")
    assert peft_side.cpu_has_bf16(info)
    assert not peft_side.cpu_has_bf16(tmp_path / "missing")
