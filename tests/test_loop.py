"""The loop: exact resume from orbax checkpoints, NaN guard, metrics on disk."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from prompt_jax import partitioning, prompts
from prompt_jax.training import loop, train
from tests.test_interface import TINY
from tests.test_train_step import _batch, _expressive


def _job(seed=0):
    model = TINY["llama"]()
    params = _expressive(jax.jit(model.init_params)(jax.random.key(0)))
    opt = train.make_optimizer(train.OptimizerConfig())
    mesh = partitioning.make_mesh(1, 1)
    step = train.jit_train_step(train.make_train_step(model, opt), model, mesh)
    state = train.place_state(
        train.init_state(prompts.random_uniform(jax.random.key(1), 4, model.d_model), opt, seed),
        mesh)

    def batches(start):  # batch i depends only on i: replayable after a resume
        i = start
        while True:
            yield _batch(seed=i)[0]
            i += 1

    return params, step, state, batches


def _config(steps, **kw):
    return loop.LoopConfig(steps=steps, eval_every=0, checkpoint_every=2, log_every=1, **kw)


def test_resume_continues_bit_for_bit(tmp_path):
    params, step, state, batches = _job()
    full = loop.run(state, params, step, batches, _config(8), tmp_path / "full")
    params, step, state, batches = _job()
    loop.run(state, params, step, batches, _config(5), tmp_path / "cut")
    params, step, fresh, batches = _job()
    resumed = loop.run(fresh, params, step, batches, _config(8), tmp_path / "cut", resume=True)
    assert int(resumed.state.step) == 8
    np.testing.assert_array_equal(np.asarray(full.state.trainable),
                                  np.asarray(resumed.state.trainable))
    jax.tree_util.tree_map(np.testing.assert_array_equal, full.state.opt_state,
                           resumed.state.opt_state)
    np.testing.assert_array_equal(np.asarray(full.state.rng), np.asarray(resumed.state.rng))
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 9))
    assert all(np.isfinite(x["loss"]) for x in lines)
    assert list((tmp_path / "full" / "tb").iterdir())  # TensorBoard event file


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    params, step, state, batches = _job()

    def poisoned(state, params, batch):
        new_state, metrics = step(state, params, batch)
        if int(new_state.step) == 5:
            metrics = {**metrics, "loss": metrics["loss"] * np.nan}
        return new_state, metrics

    with pytest.raises(FloatingPointError, match=r"loss became nan at step 5; stopping\. The "
                                                 r"last good checkpoint is step 4"):
        loop.run(state, params, poisoned, batches, _config(8), tmp_path)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 4


def test_eval_keeps_the_best_prompt(tmp_path):
    params, step, state, batches = _job()
    scores = iter([0.5, 0.9, 0.7])
    seen = []

    def evaluate(state):
        return {"accuracy": next(scores)}

    result = loop.run(state, params, step, batches,
                      loop.LoopConfig(steps=6, eval_every=2, checkpoint_every=3), tmp_path,
                      evaluate=evaluate, export=lambda state: np.asarray(state.trainable),
                      on_best=lambda p, m, s: seen.append(s))
    assert seen == [2, 4] and result.best_metrics == {"accuracy": 0.9, "step": 4}
    assert result.last_metrics == {"accuracy": 0.7}
