"""Whole jobs: `prompt-jax train|eval|infer` end to end on a tiny model with a real tokenizer and
real SST-2 data; a killed run resumes to the same prompt; the real SmolLM2 learns."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from prompt_jax import partitioning, prompts, tasks
from prompt_jax.commands import cli, demo
from prompt_jax.models import load_pretrained, load_tokenizer
from prompt_jax.training import run, train

REPO = Path(__file__).resolve().parent.parent


def _cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "prompt_jax", *args], cwd=REPO,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          **kwargs)


def _train_args(model, out, *extra):
    return ["train", "--gin_file", "test/tiny.gin", "--model", str(model),
            "--output_dir", str(out), *extra]


def test_cli_train_eval_infer_end_to_end(tiny_llama, tmp_path, capsys):
    out = tmp_path / "run"
    cli.main(_train_args(tiny_llama, out))
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 6 and summary["trainable_params"] == 4 * 32
    assert set(summary["final"]) == {"accuracy", "macro_f1", "examples"}
    for name in ("prompt.npy", "prompt.json", "best_prompt.npy", "config.json", "config.gin",
                 "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    sidecar = json.loads((out / "prompt.json").read_text())
    assert sidecar["backbone"] == "llama" and sidecar["task"] == "sst2"
    assert sidecar["length"] == 4 and sidecar["d_model"] == 32 and sidecar["steps"] == 6
    assert sidecar["template"] == "Review: {text_a}\nSentiment:"
    assert "RunConfig.steps = 6" in (out / "config.gin").read_text()
    assert json.loads((out / "config.json").read_text())["prompt_length"] == 4
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["split"] == "eval"]
    assert [e["step"] for e in evals] == [3, 6]

    cli.main(["eval", "--gin_file", "test/tiny.gin", "--model", str(tiny_llama),
              "--prompt", str(out / "prompt.npy")])
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] == pytest.approx(summary["final"]["accuracy"])

    # No prompt: the hand-written template alone, the task's own or one's own.
    zero = {}
    for template in ("Review: {text_a}\nSentiment:", "{text_a} All in all, it was"):
        cli.main(["eval", "--gin_file", "test/tiny.gin", "--model", str(tiny_llama),
                  "--template", template])
        zero[template] = json.loads(capsys.readouterr().out)
    config = run.RunConfig(model=str(tiny_llama), max_input_length=32, eval_limit=16,
                           eval_batch_size=8, mesh_data=1)
    loaded, task = run.load(config)
    assert zero["Review: {text_a}\nSentiment:"]["accuracy"] == pytest.approx(
        run.evaluator(loaded, task, config)(None)["accuracy"])
    assert zero["{text_a} All in all, it was"]["template"] == "{text_a} All in all, it was"

    cli.main(["infer", "--gin_file", "test/tiny.gin", "--model", str(tiny_llama),
              "--prompt", str(out / "prompt.npy"), "--text", "a masterpiece .",
              "--text", "dull and tedious ."])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(x.split("\t")[0] in ("negative", "positive") for x in lines)


def test_each_command_claims_its_folder_once_and_loads_the_model_once(tiny_llama, tmp_path,
                                                                     capsys, monkeypatch):
    """Counted through real runs (each counter calls the real function): `train` and
    `project train --mode task` claim the output folder once and load the model once."""
    from prompt_jax import engine
    from prompt_jax.training import loop

    counts = collections.Counter()

    def count(module, name):
        real = getattr(module, name)

        def counted(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    for module, name in ((loop, "claim_output_dir"), (run, "load"), (engine, "load_model")):
        count(module, name)
    once = {"claim_output_dir": 1, "load": 1, "load_model": 1}
    cli.main(_train_args(tiny_llama, tmp_path / "train", "--steps", "2"))
    assert counts == once and (tmp_path / "train" / "config.gin").is_file()
    capsys.readouterr()

    counts.clear()
    np.save(tmp_path / "source.npy", np.ones((3, 48), np.float32))
    cli.main(["project", "train", "--mode", "task", "--gin_file", "test/tiny.gin", "--model",
              str(tiny_llama), "--task", "sst2", "--source_prompt", str(tmp_path / "source.npy"),
              "--kind", "token", "--hidden", "8", "--steps", "2", "--out",
              str(tmp_path / "project")])
    assert counts == once and (tmp_path / "project" / "config.gin").is_file()
    assert json.loads(capsys.readouterr().out)["steps"] == 2


def test_every_command_resolves_a_model_the_same_way(tiny_llama, smollm2_gguf, capsys):
    """A real-model name, a local directory or file, else a hub id: `info` as well as `train`
    (`engine.model_source` is `models.resolve_model`)."""
    from prompt_jax import engine
    from prompt_jax.models import resolve_model

    assert resolve_model("smollm2-135m-instruct") == str(smollm2_gguf)
    assert engine.model_source("smollm2-135m-instruct") == str(smollm2_gguf)
    assert resolve_model(tiny_llama) == str(tiny_llama)
    assert resolve_model("someone/some-model") == "someone/some-model"  # a hub id, as given
    for source, expected in ((str(tiny_llama), str(tiny_llama)),
                             ("smollm2-135m-instruct", str(smollm2_gguf))):
        cli.main(["info", source])
        info = json.loads(capsys.readouterr().out)
        assert info["family"] == "llama" and str(info["source"]) == expected


def test_cli_model_tuning_trains_the_weights_without_a_prompt(tiny_llama, tmp_path, capsys):
    out = tmp_path / "model"
    cli.main(_train_args(tiny_llama, out, "--tune", "model", "--learning_rate", "1e-3",
                         "--gin_param", "OptimizerConfig.name='adamw'"))
    summary = json.loads(capsys.readouterr().out)
    n_params = sum(x.size for x in jax.tree.leaves(load_pretrained(tiny_llama).params))
    assert summary["tune"] == "model" and summary["trainable_params"] == n_params
    assert summary["steps"] == 6 and set(summary["final"]) == {"accuracy", "macro_f1", "examples"}
    assert "prompt" not in summary and not (out / "prompt.npy").exists()
    assert (out / "checkpoints" / "6").is_dir()
    with pytest.raises(SystemExit):
        cli.main(_train_args(tiny_llama, tmp_path / "bad", "--tune", "everything"))
    assert "unknown tune 'everything'; use one of ('prompt', 'model')" in capsys.readouterr().err


def test_bad_input_gets_clear_errors(tiny_llama, tmp_path, capsys):
    cases = [
        (["--prompt_length", "0"], "prompt length must be at least 1, got 0"),
        (["--prompt_length", "300"], "prompt length 300 + input length 32 exceeds the "
                                     "model's maximum length 256"),
        (["--task", "no_such_task"], "no_such_task"),
        (["--batch_size", "6", "--gin_param", "RunConfig.mesh_data=4"],
         "batch size 6 is not divisible by the mesh's data axis (4 devices)"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit):
            cli.main(_train_args(tiny_llama, tmp_path / "bad", *extra))
        assert message in capsys.readouterr().err, extra
    wrong = tmp_path / "wide.npy"
    np.save(wrong, np.zeros((4, 48), np.float32))
    with pytest.raises(SystemExit):
        cli.main(["eval", "--gin_file", "test/tiny.gin", "--model", str(tiny_llama),
                  "--prompt", str(wrong)])
    err = capsys.readouterr().err
    assert "wide.npy" in err and "(4, 48)" in err and "llama" in err and "32" in err


def test_demo_prints_the_table_and_saves_the_prompt(tiny_llama, tmp_path, capsys):
    """The main job's path (`prompt-jax demo`) on a tiny Llama: zero-shot, training, the table,
    and a prompt file with its sidecar where the output says."""
    out = tmp_path / "demo"
    result = demo.main(demo.with_overrides(model=str(tiny_llama), steps=4, eval_limit=16,
                                           output_dir=str(out)))
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    assert table[0] == "| method | accuracy | macro-F1 | trainable params | training time |"
    zero, tuned = table[1], table[2]
    assert zero.startswith("| hand-written prompt, zero-shot, best of 3 templates")
    assert f"(`{demo._template_text(result['best_template'])}`) | " in zero
    assert f" | {result['zero_shot']['accuracy']:.1%} |" in zero
    assert tuned.startswith("| soft prompt (20 tokens, 4 steps) | "
                            f"{result['soft_prompt']['final']['accuracy']:.1%} |")
    assert f"| {20 * 32:,} |" in tuned  # 20 vectors of the tiny model's width 32
    # the templates were ranked on the sample, the winner scored (here the same 16 rows)
    assert [r["examples"] for r in result["templates"]] == [16, 16, 16]
    best = max(result["templates"], key=lambda r: r["accuracy"])
    assert result["best_template"] == best["template"]
    assert result["zero_shot"]["accuracy"] == best["accuracy"]
    stored = json.loads((out / "demo.json").read_text())
    assert stored["total_seconds"] > stored["zero_shot_seconds"] > 0
    assert stored["provenance"]["machine"]["cores"] >= 1
    prompt = Path(result["soft_prompt"]["prompt"])
    assert f"The trained prompt is {prompt.resolve()}" in printed
    assert np.load(prompt).shape == (20, 32)
    assert json.loads(prompt.with_suffix(".json").read_text())["length"] == 20


@pytest.mark.subprocess
def test_killed_run_resumes_to_the_same_prompt(tiny_llama, tmp_path):
    args = ["--steps", "60", "--gin_param", "RunConfig.checkpoint_every=5",
            "--gin_param", "RunConfig.eval_every=0"]
    full = _cli(*_train_args(tiny_llama, tmp_path / "full", *args), timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "prompt_jax",
                             *_train_args(tiny_llama, cut, *args)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = [p for p in (cut / "checkpoints").glob("*") if p.name.isdigit()]
        if any(int(p.name) >= 10 for p in done):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "prompt.npy").exists(), "the run finished before it could be killed"
    resumed = _cli(*_train_args(tiny_llama, cut, *args, "--resume"), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    np.testing.assert_array_equal(np.load(cut / "prompt.npy"), np.load(tmp_path / "full" /
                                                                       "prompt.npy"))


@pytest.mark.real_model
@pytest.mark.parametrize("gguf", ["smollm2_gguf", "gemma3_gguf"])
def test_real_prompt_training_lowers_the_loss(gguf, request):
    """A few Adafactor steps on four real SST-2 training sentences, on each real model: the
    loss goes down and nothing but the prompt changes."""
    path = request.getfixturevalue(gguf)
    pre, tok = load_pretrained(path), load_tokenizer(path)
    model, params = pre.model, pre.params
    task = tasks.get_task("sst2")
    batch = next(iter(tasks.batches(task, "train", tok, "causal", 4, max_length=64, seed=0)))
    opt = train.make_optimizer(train.OptimizerConfig())
    step = train.jit_train_step(train.make_train_step(model, opt), model,
                                partitioning.make_mesh(1, 1))  # target CE: no candidates
    ids = tok("Classify the sentiment of the review.", add_special_tokens=False)["input_ids"]
    prompt = prompts.text(lambda i: model.embed(params, i), ids, 8)
    initial = np.array(prompt)  # the step donates its state
    state = train.place_state(train.init_state(prompt, opt), partitioning.make_mesh(1, 1))
    before = jax.tree_util.tree_map(np.array, params)
    losses = []
    for _ in range(4):
        state, metrics = step(state, params, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0], losses
    assert not np.allclose(np.asarray(state.trainable), initial), "the prompt never moved"
    jax.tree_util.tree_map(np.testing.assert_array_equal, before,
                           jax.tree_util.tree_map(np.array, params))
