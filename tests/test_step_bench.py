"""The step benchmark's correctness pieces on tiny models: the hand FLOP count against XLA's
count of the compiled step (its layer loop unrolled), and the synthetic batches' shapes."""

from __future__ import annotations

import argparse

import jax
import numpy as np
import pytest

from benchmarks import step_bench
from prompt_jax import partitioning
from prompt_jax.models import layers, load_pretrained
from prompt_jax.training import train


def _tiny(kind, directory):
    """A small random HF model, wide enough that matmuls dominate the elementwise work."""
    import torch
    import transformers

    torch.manual_seed(0)
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    elif kind == "t5_v1_0":
        model = transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=512, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
            feed_forward_proj="relu", dropout_rate=0.0, decoder_start_token_id=0))
    else:
        model = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
            vocab_size=512, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=256, max_position_embeddings=40, type_vocab_size=1))
    model.save_pretrained(directory)
    return directory


def _xla_flops(model, params, batch, prompt_length, unrolled):
    opt = train.make_optimizer(train.OptimizerConfig(name="adamw", learning_rate=1e-2))
    mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
    prompt = np.zeros((prompt_length, model.d_model), np.float32)
    state = train.init_state(prompt, opt)
    step = train.jit_train_step(train.make_train_step(model, opt), model, mesh)
    if unrolled:
        with layers.unrolled_scans():
            cost = step.lower(state, params, batch).cost_analysis()
    else:
        cost = step.lower(state, params, batch).cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def _full_batch(b, t, vocab, k=1):
    """Rows without padding, so that what XLA computes is what the step needs."""
    rng = np.random.default_rng(0)
    return {"inputs": rng.integers(3, vocab, (b, t)).astype(np.int32),
            "input_mask": np.ones((b, t), np.int32),
            "targets": rng.integers(3, vocab, (b, k)).astype(np.int32),
            "target_mask": np.ones((b, k), np.int32), "label": np.zeros(b, np.int32),
            "target_position": np.ones(b, np.int32), "weight": np.ones(b, np.float32)}


@pytest.mark.parametrize("kind", ["llama", "t5_v1_0", "roberta"])
def test_hand_flops_match_xla(tmp_path, kind):
    # Wide enough that matmuls dominate the elementwise work XLA also counts.
    pre = load_pretrained(_tiny(kind, tmp_path / kind))
    batch = _full_batch(4, 16, 512, k=2 if kind == "t5_v1_0" else 1)
    xla = _xla_flops(pre.model, pre.params, batch, 4, unrolled=True)
    looped = _xla_flops(pre.model, pre.params, batch, 4, unrolled=False)
    hand = step_bench.needed_flops(pre.model, batch, 4)
    # XLA also counts softmax, norms and the optimizer; the hand count is the matmuls. For
    # decoder-only models XLA computes each row's prompt keys and values once per batch too.
    assert 0.9 * xla < hand <= xla, (hand, xla)
    assert looped < 0.75 * xla  # the loop body counted once: why the count unrolls it


def test_synthetic_batches_shapes():
    args = argparse.Namespace(real=False, steps=3, batch_size=4, seq_len=40, prompt_length=5)
    for shape in ("smollm2-135m", "t5-small", "roberta-base"):
        for batch in step_bench.batches(shape, args, 32128):
            b, t = batch["inputs"].shape
            assert b == 4 and t % 16 == 0 and t >= batch["input_mask"].sum(1).max()
            lengths = batch["input_mask"].sum(1)
            assert (lengths >= 10).all() and (lengths <= 40).all()
            if shape == "roberta-base":
                rows = np.arange(b)
                assert (batch["inputs"][rows, batch["target_position"]] == step_bench.MASK_ID).all()
            assert batch["targets"].shape == (4, 2 if shape == "t5-small" else 1)


def _layout(total, median):
    return {"total_seconds": total, "median_step_seconds": median,
            "examples_per_second": 8 / median}


def test_layout_reading_weighs_a_faster_step_against_a_longer_compile():
    # per-layer: 0.1 s faster per step, 50 s more compile over the 30 timed steps: it repays
    # after 30 + 50 / 0.1 = 530 steps, so over 320 steps the scan (default) stays fastest.
    sides = {"ours": _layout(40.0, 0.8), "ours-per-layer": _layout(90.0, 0.7),
             "peft": _layout(10.0, 1.0)}
    text = step_bench.layout_reading("m", sides, steps=30)
    assert "the fastest step is `ours-per-layer`'s" in text and "(1.14x the default's" in text
    assert "the fastest is `ours`" in text and "`ours` 272 s, `ours-per-layer` 293 s" in text
    assert "after about 530 steps" in text
    # Over a run long enough, the per-layer layout wins outright and nothing is said of repaying.
    text = step_bench.layout_reading("m", sides, steps=30, run_steps=1000)
    assert "the fastest is `ours-per-layer`" in text and "repays" not in text
    assert step_bench.layout_reading("m", {"ours": sides["ours"]}, steps=30) == ""
