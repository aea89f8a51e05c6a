"""Prompt projectors: shapes, the closed-form linear fit, distance training, task tuning through
a frozen tiny Llama (only the projector changes), files in and out, and `prompt-jax project`."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_jax import engine, projectors, prompts
from prompt_jax.commands import cli, projector_commands
from prompt_jax.prompts import files as prompt_io
from prompt_jax.training import loop, run, train

SOURCE_WIDTH = 48  # the tiny target Llama is 32 wide


def _prompts(seed, n, length, width):
    return np.asarray(jax.random.normal(jax.random.key(seed), (n, length, width)), np.float32)


@pytest.mark.parametrize("p_s,d_s,p_t,d_t", [(4, 8, 4, 12), (5, 16, 3, 8), (1, 8, 7, 8)])
@pytest.mark.parametrize("activation", ["tanh", "leaky_relu"])
def test_flat_projector_maps_any_source_shape_to_any_target_shape(p_s, d_s, p_t, d_t,
                                                                   activation):
    config, params = projectors.init_flat(jax.random.key(0), p_s, d_s, p_t, d_t, hidden=16,
                                          activation=activation)
    prompt = jnp.asarray(_prompts(1, 1, p_s, d_s)[0])
    out = projectors.apply(config, params, prompt)
    assert out.shape == (p_t, d_t) and out.dtype == jnp.float32
    # The paper's LayerNorm over each target vector: zero mean, unit variance at init.
    np.testing.assert_allclose(np.asarray(out.mean(-1)), 0.0, atol=1e-5)
    assert projectors.apply_batch(config, params, jnp.stack([prompt] * 3)).shape == (3, p_t, d_t)


def test_token_and_linear_projectors_keep_any_prompt_length():
    token, token_params = projectors.init_token(jax.random.key(0), 8, 12, hidden=16)
    linear, linear_params = projectors.fit_linear(_prompts(1, 2, 6, 8), _prompts(2, 2, 6, 12))
    for length in (1, 5, 20):
        prompt = jnp.asarray(_prompts(3, 1, length, 8)[0])
        assert projectors.apply(token, token_params, prompt).shape == (length, 12)
        assert projectors.apply(linear, linear_params, prompt).shape == (length, 12)


def test_least_squares_recovers_a_known_linear_map():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(8, 12)).astype(np.float32), rng.normal(size=12).astype(np.float32)
    sources = rng.normal(size=(4, 10, 8)).astype(np.float32)  # 40 vectors, 9 unknowns a column
    config, params = projectors.fit_linear(sources, sources @ w + b)
    assert (config.kind, config.source_width, config.target_width) == ("linear", 8, 12)
    np.testing.assert_allclose(np.asarray(params["w"]), w, atol=1e-5)
    np.testing.assert_allclose(np.asarray(params["b"]), b, atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "token"])
def test_distance_training_lowers_the_loss(kind, tmp_path):
    sources, targets = _prompts(1, 6, 4, 8), _prompts(2, 6, 4, 12)
    config, params = projector_commands.new_projector(kind, (4, 8), 12, hidden=32)
    before = float(projectors.distance_loss(config, params, sources, targets))
    adam = train.OptimizerConfig(name="adamw", learning_rate=1e-2)
    trained, after = projector_commands.train_distance(
        config, params, sources, targets, tmp_path / "full", steps=200, optimizer=adam)
    assert after == pytest.approx(float(projectors.distance_loss(config, trained, sources,
                                                                 targets)))
    assert after < 0.5 * before
    losses = [json.loads(line)["loss"]
              for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 20 and losses[-1] < losses[0]  # one line every 10 steps
    # Minibatches of 2 pairs lower it too.
    _, minibatch = projector_commands.train_distance(
        config, params, sources, targets, tmp_path / "mini", steps=100, optimizer=adam,
        batch_size=2)
    assert minibatch < before


def test_distance_training_resumes_exactly(tmp_path):
    """Stopped after 7 steps and resumed to 20, minibatches included, it ends bit-identical
    to an uninterrupted run of 20: the engine's checkpoints and replayed batches."""
    sources, targets = _prompts(1, 5, 3, 8), _prompts(2, 5, 3, 12)
    config, params = projector_commands.new_projector("token", (3, 8), 12, hidden=16)
    settings = dict(optimizer=train.OptimizerConfig(name="adamw", learning_rate=1e-2),
                    batch_size=2, seed=3, checkpoint_every=7, log_every=1)
    full, _ = projector_commands.train_distance(config, params, sources, targets,
                                                tmp_path / "full", steps=20, **settings)
    projector_commands.train_distance(config, params, sources, targets, tmp_path / "cut",
                                      steps=7, **settings)
    with pytest.raises(loop.RunExistsError):  # a folder holding a run is refused
        projector_commands.train_distance(config, params, sources, targets, tmp_path / "cut",
                                          steps=20, **settings)
    resumed, _ = projector_commands.train_distance(config, params, sources, targets,
                                                   tmp_path / "cut", steps=20, resume=True,
                                                   **settings)
    for name in full:
        assert np.array_equal(np.asarray(full[name]), np.asarray(resumed[name])), name
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 21))


def test_a_prompt_of_the_wrong_width_names_both_widths():
    config, params = projectors.init_token(jax.random.key(0), 8, 12, hidden=16)
    with pytest.raises(ValueError, match=r"width 8.*width 9"):
        projectors.apply(config, params, jnp.zeros((3, 9)))
    flat, flat_params = projectors.init_flat(jax.random.key(0), 4, 8, 4, 12, hidden=16)
    with pytest.raises(ValueError, match=r"length 4.*length 5"):
        projectors.apply(flat, flat_params, jnp.zeros((5, 8)))


@pytest.mark.parametrize("kind", ["flat", "token", "linear"])
def test_save_then_load_is_bit_exact(kind, tmp_path):
    sources, targets = _prompts(1, 3, 4, 8), _prompts(2, 3, 4, 12)
    if kind == "linear":
        config, params = projectors.fit_linear(sources, targets)
    else:
        config, params = projector_commands.new_projector(kind, (4, 8), 12, hidden=16,
                                                          activation="leaky_relu", seed=3)
    meta = {"source_backbone": "t5-small", "target_backbone": "t5-base", "mode": "distance"}
    written = projectors.save_projector(tmp_path / "proj", config, params, metadata=meta)
    assert [p.name for p in written] == ["proj.safetensors", "proj.json"]
    saved = projectors.load_projector(tmp_path / "proj.safetensors")
    assert saved.config == config and saved.metadata == meta
    assert sorted(saved.params) == sorted(params)
    for name, value in params.items():
        assert np.array_equal(saved.params[name], np.asarray(value)), name
    assert np.array_equal(saved.apply(sources[0]),
                          np.asarray(projectors.apply(config, params, jnp.asarray(sources[0]))))
    with pytest.raises(FileExistsError):
        projectors.save_projector(tmp_path / "proj", config, params)
    with pytest.raises(ValueError, match=r"width 8.*width 768"):
        saved.apply(np.zeros((4, 768), np.float32))


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    return engine.load_model(str(tiny_llama), mesh_data=1)


def test_task_tuning_trains_only_the_projector(loaded, tiny_llama, tmp_path):
    """The target model's params and the source prompt come out bit-identical; the projector
    changes and the task loss through the frozen model goes down."""
    source = _prompts(5, 1, 4, SOURCE_WIDTH)[0] * 0.5  # another model's 4 x 48 prompt
    source_before = source.copy()
    frozen_before = jax.tree.map(np.array, loaded.params)
    projector, params = projectors.init_flat(jax.random.key(0), 4, SOURCE_WIDTH, 4,
                                             loaded.model.d_model, hidden=16)
    params_before = jax.tree.map(np.array, params)
    config = run.RunConfig(
        model=str(tiny_llama), task="sst2", steps=12, batch_size=8, eval_batch_size=8,
        eval_limit=16, eval_every=0, checkpoint_every=6, log_every=1, max_input_length=32,
        mesh_data=1, output_dir=str(tmp_path / "run"),
        optimizer=train.OptimizerConfig(name="adamw", learning_rate=3e-2))
    summary = projector_commands.task_tune(config, projector, params, source, loaded=loaded,
                                           metadata={"source_backbone": "tiny-48"})

    assert summary["tune"] == "projector" and summary["steps"] == 12
    assert summary["trainable_params"] == sum(x.size for x in jax.tree.leaves(params))
    assert np.array_equal(source, source_before)
    for before, after in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(loaded.params),
                             strict=True):
        assert np.array_equal(before, np.asarray(after))
    saved = projectors.load_projector(summary["projector"])
    assert saved.metadata["task"] == "sst2" and saved.metadata["source_backbone"] == "tiny-48"
    assert any(not np.array_equal(params_before[k], saved.params[k]) for k in params_before)
    # The exported prompt is the trained projector's projection of the source prompt.
    exported = prompt_io.load_prompt_for(loaded.model, summary["prompt"])
    np.testing.assert_allclose(exported.array, saved.apply(source), atol=1e-6)
    assert exported.metadata["init"] == "projector"

    task = loaded.task("sst2", max_input_length=32)
    batches = [next(run.train_batches(task, config)(i)) for i in range(4)]

    @jax.jit
    def batch_loss(projector_params, frozen, batch):
        prompt = projectors.apply(projector, projector_params, jnp.asarray(source))
        return train.loss_fn(prompt, frozen, batch, model=loaded.model, loss="target_ce",
                             placement=task.placement)[0]

    def task_loss(projector_params):
        return np.mean([float(batch_loss(projector_params, loaded.params, b)) for b in batches])

    before, after = task_loss(params_before), task_loss(saved.params)
    print(f"task loss {before:.3f} -> {after:.3f}")
    assert after < before - 0.05  # a random tiny model: the prompt moves it a little


def test_cli_distance_train_then_apply_writes_a_prompt_the_target_model_reads(loaded, tmp_path,
                                                                             capsys):
    pairs = tmp_path / "pairs"
    sources, targets = _prompts(1, 3, 4, SOURCE_WIDTH), _prompts(2, 3, 4, 32)
    for i in range(3):
        for side, arrays in (("source", sources), ("target", targets)):
            (pairs / side).mkdir(parents=True, exist_ok=True)
            np.save(pairs / side / f"task{i}.npy", arrays[i])
    cli.main(["project", "train", "--mode", "distance", "--pairs", str(pairs), "--kind",
              "token", "--hidden", "16", "--steps", "50", "--learning_rate", "1e-2",
              "--out", str(tmp_path / "proj"), "--source_backbone", "src",
              "--target_backbone", "tiny-llama"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 3 and summary["loss"] < summary["first_loss"]
    assert projectors.load_projector(tmp_path / "proj").metadata["target_backbone"] == \
        "tiny-llama"

    source = _prompts(9, 1, 6, SOURCE_WIDTH)[0]  # a token projector takes any length
    np.save(tmp_path / "in.npy", source)
    cli.main(["project", "apply", "--projector", str(tmp_path / "proj.safetensors"),
              "--prompt", str(tmp_path / "in.npy"), "--output", str(tmp_path / "out.npy")])
    capsys.readouterr()
    projected = prompt_io.load_prompt_for(loaded.model, tmp_path / "out.npy")
    assert projected.array.shape == (6, 32) and projected.format == "prompt_jax"
    assert projected.metadata["backbone"] == "tiny-llama"
    assert projected.metadata["init"] == "projector"
    # What `train --init from_array --init_prompt` starts from.
    task = loaded.task("sst2", max_input_length=32)
    init = prompts.initial_prompt(loaded, task, "from_array", 6,
                                 init_prompt=str(tmp_path / "out.npy"))
    np.testing.assert_array_equal(np.asarray(init), projected.array)

    # The wrong width: the CLI's error names the file and both widths.
    np.save(tmp_path / "wide.npy", np.zeros((6, 64), np.float32))
    with pytest.raises(SystemExit):
        cli.main(["project", "apply", "--projector", str(tmp_path / "proj"), "--prompt",
                  str(tmp_path / "wide.npy"), "--output", str(tmp_path / "bad.npy")])
    err = capsys.readouterr().err
    assert "wide.npy" in err and f"width {SOURCE_WIDTH}" in err and "width 64" in err
    assert not (tmp_path / "bad.npy").exists()


def test_pairs_as_source_equals_target_and_the_linear_fit(tmp_path):
    sources, targets = _prompts(1, 2, 3, 8), _prompts(2, 2, 3, 8)
    specs = []
    for i in range(2):
        np.save(tmp_path / f"s{i}.npy", sources[i])
        np.save(tmp_path / f"t{i}.npy", targets[i])
        specs.append(f"{tmp_path / f's{i}.npy'}={tmp_path / f't{i}.npy'}")
    summary = projector_commands.train_from_pairs(specs, tmp_path / "lin", kind="linear")
    assert summary["kind"] == "linear" and summary["pairs"] == 2
    with pytest.raises(ValueError, match="SOURCE=TARGET"):
        projector_commands.pair_paths([str(tmp_path / "nothing-here")])
