"""Cross-task transfer: the matrix and its files, resuming after a kill, the controls,
relative performance, transfer initialization, ON on a model, correlations, domain shift."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from prompt_jax import engine, transfer
from prompt_jax.transfer import SourceRecipe


def _cell(source, target, accuracy):
    return {"source": source, "target": target, "accuracy": accuracy, "examples": 10}


def test_relative_performance_divides_by_the_targets_own_prompt():
    cells = [_cell(s, t, a) for s, t, a in [
        ("none", "sst2", 0.6), ("none", "rotten_tomatoes", 0.5), ("none", "rte", 0.5),
        ("sst2", "sst2", 0.8), ("sst2", "rotten_tomatoes", 0.6), ("sst2", "rte", 0.55),
        ("rotten_tomatoes", "sst2", 0.4), ("rotten_tomatoes", "rotten_tomatoes", 0.75),
        ("rotten_tomatoes", "rte", 0.5)]]
    sources, targets, score, relative = transfer.matrix_arrays(cells)
    assert sources == ["none", "sst2", "rotten_tomatoes"]
    assert targets == ["sst2", "rotten_tomatoes", "rte"]
    np.testing.assert_allclose(relative[:, 0], [0.6 / 0.8, 1.0, 0.4 / 0.8])
    np.testing.assert_allclose(relative[:, 1], [0.5 / 0.75, 0.6 / 0.75, 1.0])
    assert np.isnan(relative[:, 2]).all()  # rte has no prompt of its own
    assert score[1, 2] == 0.55


def test_matrix_tables_mark_own_prompts_and_shared_text(tmp_path):
    cells = [_cell(s, t, 0.5 + 0.1 * (s == t)) for s in ("sst2", "rotten_tomatoes", "trec")
             for t in ("sst2", "rotten_tomatoes", "trec")]
    paths = transfer.write_matrix(cells, tmp_path)
    md = paths["markdown"].read_text()
    assert "| sst2 | **60.0%** | 50.0% † | 50.0% |" in md
    assert "| trec | 50.0% | 50.0% | **60.0%** |" in md
    csv = paths["csv"].read_text().splitlines()
    assert csv[0] == "source,target,score,relative,examples,shares_text"
    assert "sst2,rotten_tomatoes,0.5000,0.8333,10,1" in csv
    assert paths["heatmap"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert transfer.shares_text("rotten_tomatoes", "sst2")
    assert not transfer.shares_text("sst2", "sst2") and not transfer.shares_text("sst2", "imdb")


def test_random_control_has_the_sources_mean_norm():
    rng = np.random.default_rng(0)
    sources = {"a": rng.normal(size=(4, 8)), "b": 3 * rng.normal(size=(4, 8))}
    control = transfer.random_control(sources, seed=1)
    mean_norm = np.mean([np.linalg.norm(x) for x in sources.values()])
    assert control.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(control), mean_norm, rtol=1e-5)
    assert not np.allclose(control, transfer.random_control(sources, seed=2))


def test_spot_mix_weights_the_top_k_by_the_indicator():
    sources = {"a": np.ones((2, 3)), "b": 2 * np.ones((2, 3)), "c": 10 * np.ones((2, 3))}
    mixed, weights = transfer.spot_mix(sources, {"a": 0.3, "b": 0.1, "c": 0.6}, k=2)
    assert weights == pytest.approx({"c": 2 / 3, "a": 1 / 3})
    np.testing.assert_allclose(mixed, (2 / 3 * 10 + 1 / 3 * 1) * np.ones((2, 3)), rtol=1e-6)
    _, equal = transfer.spot_mix(sources, {"a": -0.3, "b": 0.1, "c": 0.6}, k=3)
    assert equal == pytest.approx({"c": 1 / 3, "b": 1 / 3, "a": 1 / 3})
    with pytest.raises(ValueError, match="k=4 but only 3"):
        transfer.spot_mix(sources, {"a": 1, "b": 1, "c": 1}, k=4)


def test_steps_to_fraction_counts_the_gain_over_zero_shot():
    curve = [(0, 0.70), (40, 0.74), (80, 0.79), (120, 0.80)]
    # gain 0.10 over 0.70: 90% of it is reached at 0.79, step 80 (not at step 0, where the
    # score is already 88% of the final one)
    assert transfer.steps_to_fraction(curve, 0.70, 0.80) == 80
    assert transfer.steps_to_fraction(curve, 0.70, 0.90) is None  # never there
    assert transfer.steps_to_fraction(curve, 0.80, 0.75) is None  # no gain to reach
    results = [{"arm": arm, "seed": s, "curve": c, "final": c[-1][1]}
               for arm, s, c in [("baseline", 0, curve), ("baseline", 1, curve),
                                 ("source:sst2", 0, [(0, 0.78), (40, 0.80), (80, 0.80)]),
                                 ("source:sst2", 1, [(0, 0.75), (40, 0.79), (80, 0.81)])]]
    rows = {r["arm"]: r for r in transfer.init_summary(results, zero_shot=0.70)}
    assert rows["baseline"]["steps"] == [80, 80] and rows["baseline"]["speedup"] == 1.0
    assert rows["source:sst2"]["steps"] == [40, 40]
    assert rows["source:sst2"]["speedup"] == 2.0
    assert rows["source:sst2"]["final"] == pytest.approx(0.805)
    assert transfer.speedup_text(rows["source:sst2"]) == "2.00x"
    there = [{**r, "curve": [(0, 0.80), (40, 0.80), (80, 0.80)]} for r in results[2:]]
    start = {r["arm"]: r for r in transfer.init_summary(results[:2] + there, 0.70)}
    assert start["source:sst2"]["steps"] == [0, 0]
    assert transfer.speedup_text(start["source:sst2"]) == "there at step 0"


def test_correlations_pool_pairs_and_average_per_target():
    measured = np.array([[1.0, 0.2], [0.5, 0.9], [0.1, 0.6], [0.3, 1.0]])
    valid = np.array([[False, True], [True, False], [True, True], [True, True]])
    perfect = transfer.correlations(measured * 2, measured, valid)
    assert perfect["spearman_per_target"] == pytest.approx(1.0)
    assert perfect["kendall"] == pytest.approx(1.0) and perfect["pairs"] == 6
    reverse = transfer.correlations(-measured, measured, valid)
    assert reverse["spearman"] == pytest.approx(-1.0) and reverse["targets"] == 2


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    return engine.load_model(str(tiny_llama), mesh_data=1)


def test_neuron_overlaps_on_a_model(loaded):
    rng = np.random.default_rng(0)
    prompts = {"a": rng.normal(size=(4, 32)).astype(np.float32),
               "b": rng.normal(size=(4, 32)).astype(np.float32)}
    prompts["a_again"] = prompts["a"].copy()
    for mode in transfer.ON_MODES:
        on = transfer.neuron_overlaps(loaded, prompts, "sst2", "a", mode=mode, n_inputs=4)
        assert on["a"] == pytest.approx(1.0) and on["a_again"] == pytest.approx(1.0)
        assert 0.0 < on["b"] < 1.0
        back = transfer.neuron_overlaps(loaded, prompts, "sst2", "b", mode=mode, n_inputs=4)
        assert back["a"] == pytest.approx(on["b"])  # symmetric
    with pytest.raises(ValueError, match="unknown ON mode"):
        transfer.neuron_overlaps(loaded, prompts, "sst2", "a", mode="everywhere")


def test_on_layer_selections_from_one_pass_equal_each_selection_alone(loaded):
    """ON over all layers, the bottom third and the top third, read from one forward pass,
    equal masks read with each selection (`activation_masks(layers=...)`) and overlapped row
    by row; the three differ."""
    from functools import partial

    import jax
    import jax.numpy as jnp

    from prompt_jax import indicators as ind
    from prompt_jax.transfer.indicators import _probe_batch

    rng = np.random.default_rng(2)
    prompts = {n: rng.normal(size=(4, 32)).astype(np.float32) for n in ("a", "b", "c")}
    selections = ind.LAYER_SELECTIONS
    by = transfer.neuron_overlaps_by_layers(loaded, prompts, "sst2", "a", mode="inputs",
                                            n_inputs=4, selections=selections)
    assert list(by) == list(selections)
    task = loaded.task("sst2")
    batch = _probe_batch(loaded, task, "inputs", 4, 0)
    embeds = loaded.model.embed(loaded.params, jnp.asarray(batch["inputs"]))
    positions = jnp.asarray(transfer.label_positions(loaded.model, batch))
    mask = jnp.asarray(batch["input_mask"])

    @partial(jax.jit, static_argnums=1)
    def masks(prompt, sel):  # [B, L', F]
        m = ind.activation_masks(loaded.model, loaded.params, prompt, embeds, mask, positions,
                                 placement=task.placement, layers=sel)
        return jnp.moveaxis(m[:, :, 0], 1, 0)

    for sel in selections:
        ref = masks(jnp.asarray(prompts["a"]), sel)
        for name, p in prompts.items():
            alone = float(ind.neuron_overlap(masks(jnp.asarray(p), sel), ref).mean())
            assert by[sel][name] == pytest.approx(alone, abs=1e-6)
        assert by[sel]["a"] == pytest.approx(1.0)
    assert len({round(by[sel]["b"], 6) for sel in selections}) == 3
    # The same by indicator name, as retrieve, suggest and the SPoT arms name it.
    named = transfer.similarity_to(loaded, {"b": prompts["b"]}, prompts["a"], "sst2",
                                   "ON_inputs_top_third", n_inputs=4)
    assert named["b"] == pytest.approx(by["top_third"]["b"], abs=1e-6)
    with pytest.raises(ValueError, match="ON_<mode>_top_third"):
        transfer.similarity_to(loaded, prompts, prompts["a"], "sst2", "ON_inputs_middle")


def test_on_reads_the_label_position_so_the_input_text_matters(loaded):
    """A decoder predicts the label after its last input token: ON reads there, where the
    text has been seen (reading position 0 would give the same masks for any input)."""
    task = loaded.task("sst2")
    batch = task.encode_texts(["a fine film", "dull, dull and long"])
    positions = transfer.label_positions(loaded.model, batch)
    np.testing.assert_array_equal(positions, batch["input_mask"].sum(-1) - 1)
    assert positions[0] != positions[1]
    rng = np.random.default_rng(1)
    prompts = {"a": rng.normal(size=(4, 32)).astype(np.float32),
               "b": rng.normal(size=(4, 32)).astype(np.float32)}
    paper = transfer.neuron_overlaps(loaded, prompts, "sst2", "a", mode="paper")
    inputs = transfer.neuron_overlaps(loaded, prompts, "sst2", "a", mode="inputs", n_inputs=8)
    assert paper["b"] != pytest.approx(inputs["b"], abs=1e-4)


def test_domain_shift_scores_the_prompt_and_the_tuned_model(loaded, tmp_path):
    from prompt_jax.commands import transfer_study_commands

    recipe = SourceRecipe(steps=2, prompt_length=4, eval_limit=8)
    transfer.train_sources(loaded, ["sst2"], tmp_path, recipe)
    rows = transfer_study_commands.domain_shift(
        loaded, "sst2", ["sst2", "rotten_tomatoes"], tmp_path, tuning=recipe, learning_rate=1e-2,
        limit=8)
    assert [(r["row"], r["target"]) for r in rows] == [
        ("prompt", "sst2"), ("model_tuning", "sst2"), ("prompt", "rotten_tomatoes"),
        ("model_tuning", "rotten_tomatoes")]
    assert all(r["examples"] == 8 for r in rows)
    tuned = transfer.restore_tuned_params(loaded, recipe.config(
        loaded.name, "sst2", tmp_path / "runs" / "model-sst2", tune="model"))
    changed = [not np.allclose(a, b) for a, b in zip(
        jax_leaves(tuned), jax_leaves(loaded.params), strict=True)]
    assert any(changed)
    md = (tmp_path / "domain_shift.md").read_text()
    assert "| sst2 (same task) |" in md and "| rotten_tomatoes † |" in md
    # a rerun with every cell scored needs neither the tuned model nor its run
    shutil.rmtree(tmp_path / "runs")
    again = transfer_study_commands.domain_shift(
        loaded, "sst2", ["sst2", "rotten_tomatoes"], tmp_path, tuning=recipe, learning_rate=1e-2,
        limit=8)
    assert again == rows and not (tmp_path / "runs").exists()


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _matrix_command(model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "prompt_jax", "transfer", "matrix", "--model", str(model),
            "--out", str(out), "--sources", "sst2,trec", "--targets", "sst2,trec,rte",
            "--steps", "3", "--prompt_length", "6", "--limit", "16"]


@pytest.mark.subprocess
def test_matrix_command_writes_its_files_and_resumes_after_a_kill(tiny_llama, tmp_path):
    out = tmp_path / "transfer"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    first = subprocess.Popen(_matrix_command(tiny_llama, out), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    cells = out / "cells"
    deadline = time.monotonic() + 600
    while not list(cells.glob("*.json")) and time.monotonic() < deadline:
        assert first.poll() is None, "the command ended before writing any cell"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in cells.glob("*.json")}
    sources = {p.name: p.stat().st_mtime_ns for p in (out / "sources").glob("*.json")}
    assert 1 <= len(done) < 12 and len(sources) == 2
    finished = subprocess.run(_matrix_command(tiny_llama, out), env=env, capture_output=True,
                              text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "sst2: done" in finished.stdout and "trec: done" in finished.stdout
    for name, (mtime, text) in done.items():  # no finished cell was computed again
        assert (cells / name).stat().st_mtime_ns == mtime and (cells / name).read_text() == text
    assert {p.name: p.stat().st_mtime_ns for p in (out / "sources").glob("*.json")} == sources
    rows = [json.loads(p.read_text()) for p in cells.glob("*.json")]
    assert sorted((r["source"], r["target"]) for r in rows) == sorted(
        (s, t) for s in ("none", "random", "sst2", "trec") for t in ("sst2", "trec", "rte"))
    assert all(r["examples"] == 16 for r in rows)
    csv = (out / "matrix.csv").read_text().splitlines()
    assert len(csv) == 13
    assert (out / "matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "| sst2 | **" in (out / "matrix.md").read_text()
    assert not list(out.rglob("*.tmp"))


def test_init_runs_start_from_the_given_prompt_and_are_read_back(loaded, tmp_path):
    recipe = SourceRecipe(steps=2, prompt_length=4, eval_limit=8)
    start = np.random.default_rng(0).normal(size=(4, 32)).astype(np.float32)
    arms = {transfer.BASELINE: None, "source:x": start, "text": "text:great movie"}
    results = transfer.init_runs(loaded, "sst2", arms, tmp_path, recipe=recipe, seeds=(0,),
                                 eval_every=1, eval_limit=8)
    assert [(r["arm"], [s for s, _ in r["curve"]]) for r in results] == [
        ("baseline", [0, 1, 2]), ("source:x", [0, 1, 2]), ("text", [0, 1, 2])]
    runs = tmp_path / "runs" / "init" / "sst2"
    initial = np.load(runs / "source-x__seed0" / "init_prompt.npy")
    np.testing.assert_array_equal(initial, start)
    inits = {arm: json.loads((runs / f"{arm}__seed0" / "prompt.json").read_text())["init"]
             for arm in ("baseline", "source-x", "text")}
    assert inits == {"baseline": "class_labels", "source-x": "from_array", "text": "text"}
    files = sorted((tmp_path / "init" / "sst2").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in files]
    again = transfer.init_runs(loaded, "sst2", arms, tmp_path, recipe=recipe, seeds=(0,),
                               eval_every=1, eval_limit=8)
    assert again == results and [p.stat().st_mtime_ns for p in files] == stamps
    # a stored run of another recipe is not read back as this study's
    with pytest.raises(ValueError, match=r"eval_every 1 \(asked 2\)"):
        transfer.init_runs(loaded, "sst2", arms, tmp_path, recipe=recipe, seeds=(0,),
                           eval_every=2, eval_limit=8)
    with pytest.raises(ValueError, match=r"steps 2 \(asked 3\)"):
        transfer.init_runs(loaded, "sst2", arms, tmp_path, recipe=dataclasses.replace(
            recipe, steps=3), seeds=(0,), eval_every=1, eval_limit=8)


def test_a_stored_cell_of_another_sample_size_is_refused(loaded, tmp_path):
    prompt = np.random.default_rng(0).normal(size=(4, 32)).astype(np.float32)
    first = transfer.zero_shot_matrix(loaded, {"sst2": prompt}, ["sst2"], tmp_path, limit=8,
                                      batch_size=8, controls=False)
    again = transfer.zero_shot_matrix(loaded, {"sst2": prompt}, ["sst2"], tmp_path, limit=8,
                                      batch_size=8, controls=False)
    assert again == first
    with pytest.raises(ValueError, match="scored with limit 8, this call asks for 16"):
        transfer.zero_shot_matrix(loaded, {"sst2": prompt}, ["sst2"], tmp_path, limit=16,
                                  batch_size=8, controls=False)


def test_init_arms_split_over_runs_write_the_summary_once_the_baseline_is_stored(
        loaded, tmp_path, capsys):
    from prompt_jax.commands import transfer_study_commands

    recipe = SourceRecipe(steps=2, prompt_length=4, eval_limit=8)
    kwargs = dict(recipe=recipe, seeds=(0,), eval_every=1, eval_limit=8, brief=recipe)
    summary = tmp_path / "init" / "sst2" / "summary.json"
    alone = transfer_study_commands.init(loaded, "sst2", ["random_uniform"], tmp_path, **kwargs)
    assert alone["arms"] == [] and not summary.exists()  # no baseline to be relative to
    assert "waits for a run with baseline among --arms" in capsys.readouterr().out
    stored = tmp_path / "init" / "sst2" / "random_uniform__seed0.json"
    stamp = stored.stat().st_mtime_ns
    transfer_study_commands.init(loaded, "sst2", ["baseline"], tmp_path, **kwargs)
    again = transfer_study_commands.init(loaded, "sst2", ["random_uniform"], tmp_path, **kwargs)
    assert [a["arm"] for a in again["arms"]] == ["baseline", "random_uniform"]
    assert json.loads(summary.read_text())["eval_every"] == 1
    assert stored.stat().st_mtime_ns == stamp  # read back, not trained again
    words = "text:Is this review positive or negative?"
    texted = transfer_study_commands.init(loaded, "sst2", ["baseline", words], tmp_path, **kwargs)
    # the summary holds every stored run of the target, whichever call trained it
    assert [a["arm"] for a in texted["arms"]] == ["baseline", "text", "random_uniform"]
    assert texted["notes"]["text"] == "Is this review positive or negative?"
    assert json.loads(summary.read_text())["arms"] == texted["arms"]
    later = transfer_study_commands.init(loaded, "sst2", ["random_uniform"], tmp_path, **kwargs)
    assert [a["arm"] for a in later["arms"]] == ["baseline", "random_uniform", "text"]
    assert later["notes"]["text"] == texted["notes"]["text"]  # kept from the earlier summary
    assert (tmp_path / "init" / "sst2" / "text__seed0.json").exists()
    with pytest.raises(ValueError, match="one text:<words> arm"):
        transfer_study_commands.init(loaded, "sst2", [words, "text:another"], tmp_path, **kwargs)


def test_transfer_commands_say_what_they_need(tmp_path, capsys):
    from prompt_jax.commands import cli

    for action, flag in (("sources", "--sources"), ("matrix", "--sources"), ("init", "--target"),
                         ("domain-shift", "--targets")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["transfer", action, "--out", str(tmp_path)])
        assert exit_info.value.code == 2
        assert f"transfer {action} needs {flag}" in capsys.readouterr().err


def test_a_target_without_a_local_validation_split_is_scored_on_test():
    assert transfer.scored_split("sst2") == "validation"
    assert transfer.scored_split("ag_news") == "test"  # only test.csv in ../shared/data
    with pytest.raises(FileNotFoundError, match="'qqp' has neither"):
        transfer.scored_split("qqp")


def test_sources_table_shows_each_prompts_own_score(tmp_path):
    from prompt_jax.commands import transfer_commands

    for name, accuracy in (("sst2", 0.875), ("trec", 0.5)):
        transfer.write_json(tmp_path / "sources" / f"{name}.json",
                            {"final": {"accuracy": accuracy, "examples": 200},
                             "train_seconds": 12.4})
    table = transfer_commands.sources_table(tmp_path, ["trec", "sst2"]).splitlines()
    assert table[2:] == ["| trec | 50.0% | 200 | 12 |", "| sst2 | 87.5% | 200 | 12 |"]
