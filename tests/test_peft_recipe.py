"""Our prompt-tuning step is Hugging Face PEFT's: on a tiny Llama, prompt_jax (AdamW, shared
prefix, packed or not, constant or cosine rate) and PEFT prompt tuning (torch AdamW, with the
benchmark's rates) take the same steps."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from peft import PromptTuningConfig, TaskType, get_peft_model

from benchmarks.peft_vs_prompt_jax import learning_rates, peft_loss
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


def _peft_steps(reference, prompt0, batches, schedule):
    """PEFT prompt tuning with the benchmark's own loss (benchmarks/peft_vs_prompt_jax.py)."""
    model = get_peft_model(reference, PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                         num_virtual_tokens=P))
    weight = model.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        weight.copy_(torch.from_numpy(prompt0))
    optimizer = torch.optim.AdamW([weight], lr=LR, weight_decay=0.01)
    losses = []
    for b, lr in zip(batches, learning_rates(schedule, LR, STEPS), strict=True):
        optimizer.param_groups[0]["lr"] = lr
        loss = peft_loss(model, b)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
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
