"""The engine: one loaded model, many tasks and prompts; one step, loop and checkpoint format
for any trainable pytree; an output folder holds one run."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_jax import engine, partitioning, prompts
from prompt_jax.models import convert
from prompt_jax.training import loop, run, train
from tests.test_interface import TINY
from tests.test_train_step import _batch, _expressive

TASKS = ("sst2", "laptop", "trec")  # 2, 3 and 6 classes


def test_three_prompts_on_three_tasks_read_the_checkpoint_once(tiny_llama, monkeypatch):
    reads = []
    real_read = convert.read_hf_weights

    def counted(directory):
        reads.append(directory)
        return real_read(directory)

    monkeypatch.setattr(convert, "read_hf_weights", counted)
    loaded = engine.load_model(str(tiny_llama), mesh_data=1)
    prompt_list = [prompts.random_uniform(jax.random.key(i), n, loaded.model.d_model)
                   for i, n in enumerate((3, 5, 8))]
    results = {}
    for name in TASKS:
        task = loaded.task(name, max_input_length=32)
        assert len(task.labels) == {"sst2": 2, "laptop": 3, "trec": 6}[name]
        evaluate = loaded.evaluator(task, "validation", batch_size=8, limit=16)
        for i, prompt in enumerate(prompt_list):
            results[name, i] = evaluate(prompt)
    assert len(reads) == 1, reads
    assert len(results) == 9 and all(r["examples"] == 16 for r in results.values())
    # The handle gives what a whole evaluation job (which loads the model itself) gives.
    config = run.RunConfig(model=str(tiny_llama), task="laptop", max_input_length=32,
                           eval_limit=16, eval_batch_size=8, mesh_data=1)
    np.save(tiny_llama.parent / "p1.npy", np.asarray(prompt_list[1]))
    job = run.evaluate_prompt(config, str(tiny_llama.parent / "p1.npy"))
    assert job["accuracy"] == pytest.approx(results["laptop", 1]["accuracy"])
    assert len(reads) == 2  # the job loaded its own copy


def _linear_map_job(seed=0):
    """A trainable that is not the prompt: a [H, H] map applied to a fixed [P, H] array."""
    model = TINY["llama"]()
    params = _expressive(jax.jit(model.init_params)(jax.random.key(0)))
    fixed = jax.random.normal(jax.random.key(7), (4, model.d_model))
    trainable = train.mapped_prompt("linear_map", lambda t: fixed @ t["w"])
    opt = train.make_optimizer(train.OptimizerConfig())
    mesh = partitioning.make_mesh(1, 1)
    step = train.jit_train_step(train.make_train_step(model, opt, trainable=trainable), model,
                                mesh, trainable)
    state = train.place_state(train.init_state({"w": jnp.eye(model.d_model)}, opt, seed), mesh)

    def batches(start):  # batch i depends only on i: replayable after a resume
        i = start
        while True:
            yield _batch(seed=i)[0]
            i += 1

    return params, step, state, batches, trainable, fixed


def _config(steps):
    return loop.LoopConfig(steps=steps, eval_every=0, checkpoint_every=2, log_every=1)


def test_a_trainable_that_is_not_the_prompt_trains_checkpoints_and_resumes(tmp_path):
    params, step, state, batches, trainable, fixed = _linear_map_job()
    before = jax.tree.map(np.array, params)
    w0 = np.array(state.trainable["w"])

    def export(state):
        return np.asarray(trainable.prompt(state.trainable))

    full = loop.run(state, params, step, batches, _config(8), tmp_path / "full", export=export)
    w = np.asarray(full.state.trainable["w"])
    assert not np.allclose(w, w0), "the map never moved"
    np.testing.assert_allclose(full.best_prompt, np.asarray(fixed) @ w, rtol=1e-5, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, params))

    params, step, state, batches, *_ = _linear_map_job()
    loop.run(state, params, step, batches, _config(5), tmp_path / "cut", export=export)
    params, step, fresh, batches, *_ = _linear_map_job()
    resumed = loop.run(fresh, params, step, batches, _config(8), tmp_path / "cut", resume=True,
                       export=export)
    assert int(resumed.state.step) == 8
    np.testing.assert_array_equal(np.asarray(resumed.state.trainable["w"]), w)
    jax.tree.map(np.testing.assert_array_equal, full.state.opt_state, resumed.state.opt_state)


def _lines(path):
    return [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]


def test_an_output_folder_holds_one_run(tmp_path):
    params, step, state, batches, *_ = _linear_map_job()
    out = tmp_path / "run"
    loop.run(state, params, step, batches, _config(5), out)
    assert [x["step"] for x in _lines(out)] == [1, 2, 3, 4, 5]

    params, step, state, batches, *_ = _linear_map_job()
    with pytest.raises(loop.RunExistsError, match="already holds a run.*--resume.*--overwrite"):
        loop.run(state, params, step, batches, _config(3), out)
    assert [x["step"] for x in _lines(out)] == [1, 2, 3, 4, 5]  # untouched

    # A killed run logged steps past its last checkpoint: after the resume each step is
    # logged once.
    (out / "checkpoints" / "5").rename(tmp_path / "step5-gone")
    params, step, state, batches, *_ = _linear_map_job()
    loop.run(state, params, step, batches, _config(7), out, resume=True)
    assert [x["step"] for x in _lines(out)] == [1, 2, 3, 4, 5, 6, 7]

    params, step, state, batches, *_ = _linear_map_job()
    loop.run(state, params, step, batches, _config(2), out, overwrite=True)
    assert [x["step"] for x in _lines(out)] == [1, 2]
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2]


def test_cli_train_refuses_a_folder_with_a_run_unless_told(tiny_llama, tmp_path, capsys):
    from prompt_jax.commands import cli

    out = tmp_path / "run"
    args = ["train", "--gin_file", "test/tiny.gin", "--model", str(tiny_llama),
            "--output_dir", str(out), "--steps", "2"]
    cli.main(args)
    first = json.loads(capsys.readouterr().out)
    gin_text = (out / "config.gin").read_text()
    with pytest.raises(SystemExit):
        cli.main([*args[:-1], "3"])
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err
    assert (out / "config.gin").read_text() == gin_text  # nothing written before refusing
    cli.main([*args[:-1], "3", "--overwrite"])
    second = json.loads(capsys.readouterr().out)
    assert first["steps"] == 2 and second["steps"] == 3
    assert [x["step"] for x in _lines(out) if x["split"] == "train"] == [1, 2, 3]


def test_scores_of_raw_texts_on_a_sharded_mesh_equal_one_device(tiny_llama):
    """Three texts over an 8-way data axis: the batch is filled up to split evenly, and the
    scores are the single device's."""
    texts = ["a gorgeous , witty film .", "dull and tedious .", "it was fine ."]
    prompt = prompts.random_uniform(jax.random.key(3), 4, 32)
    scores = []
    for devices in (1, 8):
        loaded = engine.load_model(str(tiny_llama), mesh_data=devices)
        scores.append(loaded.scores(loaded.task("sst2", max_input_length=32), prompt, texts))
    assert scores[0].shape == (3, 2)
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-5)


def test_a_batch_mixing_three_real_tasks_scores_each_row_as_alone(tiny_llama):
    """SST-2 (2 classes), laptop (3) and TREC (6) rows with prompts of 5, 20 and 100 vectors in
    one batch, through the engine: each row's scores are its scores run alone."""
    loaded = engine.load_model(str(tiny_llama), mesh_data=1)
    handles = [loaded.task(name, max_input_length=32) for name in TASKS]
    prompt_list = [prompts.random_uniform(jax.random.key(i), n, loaded.model.d_model)
                   for i, n in enumerate((5, 20, 100))]
    rows = [(handles[0], "a gorgeous , witty film .", 0),
            (handles[1], "the battery life is great\tbattery life", 1),
            (handles[2], "Who wrote Hamlet ?", 2),
            (handles[2], "How far is the moon from the earth ?", 0),
            (handles[0], "dull and tedious .", 2)]
    mixed = loaded.mixed_scores(prompts.PromptSet.stack(prompt_list), rows)
    for (task, text, index), scores in zip(rows, mixed, strict=True):
        alone = loaded.scores(task, prompt_list[index], [text])[0]
        assert scores.shape == (len(task.labels),)
        np.testing.assert_allclose(scores, alone, atol=1e-5)
        assert scores.argmax() == alone.argmax()
