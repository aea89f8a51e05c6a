"""Compiles counted: one eval step per model serves every task of the same bucketed shapes,
one train step per static configuration serves run after run, and every scorer (evaluator,
transfer matrix, raw-text inference, the serving classifier) goes through the one entry point
(a random 2-layer Llama with SmolLM2's tokenizer, real local data)."""

from __future__ import annotations

import contextlib

import jax
import numpy as np
import pytest

from prompt_jax import engine, prompts, scoring
from prompt_jax.training import run, train

SAME_SHAPES = ("sst2", "rotten_tomatoes", "imdb")  # 2 single-token classes each


@contextlib.contextmanager
def backend_compiles():
    """Counts every XLA compilation of the process while open (jax.monitoring's event)."""
    count = [0]

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _signature(batch) -> tuple:
    """The shapes of what the eval step sees of a batch."""
    return tuple(sorted((k, np.shape(v)) for k, v in batch.items() if k in scoring.SCORED_KEYS))


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    return engine.load_model(str(tiny_llama), mesh_data=1)


def test_three_tasks_of_the_same_shapes_compile_the_eval_step_once(loaded):
    prompt = prompts.random_uniform(jax.random.key(0), 4, loaded.model.d_model)
    step = loaded.eval_step()
    start = step._cache_size()
    signatures, results = set(), {}
    for i, name in enumerate(SAME_SHAPES):
        task = loaded.task(name, max_input_length=32, pack=False)
        signatures |= {_signature(b) for b in task.batches("validation", 8, limit=16)}
        evaluate = loaded.evaluator(task, "validation", batch_size=8, limit=16)
        if i == 0:
            results[name] = evaluate(prompt)
            continue
        with backend_compiles() as compiles:  # a new task on the loaded model
            results[name] = evaluate(prompt)
            zero_shot = evaluate(None)  # no prompt: another signature, compiled once
            results[name] = evaluate(prompt)
        assert compiles[0] == (1 if i == 1 else 0), name
        assert zero_shot["examples"] == 16
    assert len(signatures) == 1, signatures  # the premise: the three tasks' shapes are one
    assert step._cache_size() - start == 2  # with the prompt, and without
    assert all(r["examples"] == 16 for r in results.values())


def test_raw_texts_of_a_new_task_compile_nothing(loaded):
    """`infer`'s path: a 3-class task's candidates pad to the 4-class bucket (as a 4-class
    task's are), so a loaded model that scored one scores the other without compiling."""
    prompt = prompts.random_uniform(jax.random.key(1), 6, loaded.model.d_model)
    texts = ["the battery is great\tbattery", "the screen is dim\tscreen"]
    first = loaded.scores(loaded.task("ag_news", max_input_length=32), prompt,
                          ["Stocks fell\tMarkets slid on Monday", "A win\tThe team won"])
    assert first.shape == (2, 4)
    task = loaded.task("laptop", max_input_length=32)
    with backend_compiles() as compiles:
        scores = loaded.scores(task, prompt, texts)
    assert compiles[0] == 0 and scores.shape == (2, 3)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("loss", ["rank", "target_ce"])
def test_two_tasks_trained_back_to_back_compile_the_train_step_once_per_shape(
        loaded, tmp_path, loss):
    signatures, sizes = [], []
    for name in ("sst2", "rotten_tomatoes"):
        config = run.RunConfig(model=loaded.name, task=name, output_dir=str(tmp_path / name),
                               prompt_length=4, init="random_uniform", loss=loss, steps=3,
                               batch_size=8, max_input_length=32, pack=False, eval_every=0,
                               eval_limit=8, eval_batch_size=8, checkpoint_every=3,
                               log_every=1, mesh_data=1)
        run.train_prompt(config, loaded=loaded)
        task = run.task_for(loaded, config)
        batches = run.train_batches(task, config)(0)
        signatures.append({tuple(sorted((k, v.shape) for k, v in next(batches).items()))
                           for _ in range(config.steps)})  # the train step sees whole batches
        step = loaded.train_step(task, config.optimizer, loss=loss).func
        sizes.append(step._cache_size())
    assert sizes[0] == len(signatures[0])
    assert sizes[1] - sizes[0] == len(signatures[1] - signatures[0])  # only new batch shapes
    assert sizes[1] <= 2


def test_padded_candidates_give_the_rank_loss_and_gradient_of_the_real_ones(loaded):
    """A task's candidates padded to their bucket (3 classes -> 4, 1 token -> 1) train exactly
    as the real ones: the padded class scores -inf and drops out of the softmax."""
    task = loaded.task("laptop", max_input_length=32, pack=False)
    batch = next(task.batches("train", 8))
    prompt = prompts.random_uniform(jax.random.key(2), 4, loaded.model.d_model)
    padded = scoring.pad_candidates(*task.candidates)
    assert padded[0].shape == (4, 1) and task.candidates[0].shape == (3, 1)

    def loss(p, cands):
        return train.loss_fn(p, loaded.params, batch, model=loaded.model, loss="rank",
                             placement=task.placement, candidates=cands)[0]

    real = jax.value_and_grad(loss)(prompt, task.candidates)
    bucketed = jax.value_and_grad(loss)(prompt, padded)
    np.testing.assert_allclose(bucketed[0], real[0], rtol=1e-6)
    np.testing.assert_allclose(bucketed[1], real[1], rtol=1e-5, atol=1e-7)
    assert np.isfinite(np.asarray(bucketed[1])).all()


def test_every_scorer_goes_through_the_one_entry_point(loaded, tmp_path, monkeypatch):
    from prompt_jax import transfer
    from prompt_jax.serving.bank import PromptBank
    from prompt_jax.serving.classifier import Buckets, MixedClassifier

    calls = []
    real = scoring.score_batch

    def counted(*args, **kwargs):
        calls.append(kwargs.get("place"))
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_batch", counted)
    prompt = np.asarray(prompts.random_uniform(jax.random.key(3), 4, loaded.model.d_model))
    task = loaded.task("sst2", max_input_length=32)
    loaded.evaluator(task, "validation", batch_size=8, limit=8)(prompt)
    assert len(calls) == 1  # the evaluator: one batch
    transfer.zero_shot_matrix(loaded, {"sst2": prompt}, ["rotten_tomatoes"], tmp_path,
                              limit=8, batch_size=8, controls=False)
    assert len(calls) == 2  # the transfer matrix: one cell, one batch
    loaded.scores(task, prompt, ["a witty film"])
    assert len(calls) == 3  # raw texts (infer)
    bank = PromptBank(loaded, slots=2, prompt_length=8, max_input_length=32)
    bank.add("sst2", prompt, "sst2")
    [prediction] = MixedClassifier(bank, Buckets((8,), (32,))).classify([("sst2", "a witty film")])
    assert len(calls) == 4  # the serving classifier (and `infer --bank`)
    alone = loaded.scores(task, prompt, ["a witty film"])[0]
    np.testing.assert_allclose(list(prediction.scores.values()), alone, atol=1e-5)


def test_a_transfer_workload_compiles_once_per_shape_not_once_per_run(loaded, tmp_path):
    """benchmarks/transfer_compiles.py's workload, small: a matrix of 3 same-shape tasks x 2
    prompts, then 4 short runs back to back (the fourth repeats the first task): after the
    first run, every compile is a new batch shape of a cached step."""
    from benchmarks import transfer_compiles

    found = transfer_compiles.workload(loaded, prompts=2, runs=4, steps=2, limit=16,
                                       out=tmp_path)
    result = {"workload": found}
    assert found["matrix"]["cells"] == 6
    assert found["runs"][0]["compiles"] > 0  # the premise: the counter counts
    assert transfer_compiles.per_run_compiles(result) == 0, found["runs"]
    assert found["runs"][-1]["compiles"] == found["runs"][-1]["new_shapes"]
