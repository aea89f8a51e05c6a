"""A user's own task and prompt library in the transfer commands: library prompts fitted (length)
or refused (width, unless projected), file tasks as sources and targets across commands, and
`transfer suggest` end to end on a tiny model (a library of three prompts, a file task)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jax
import numpy as np
import pytest

from prompt_jax import projectors, stats
from prompt_jax.commands import cli
from prompt_jax.prompts.files import PromptShapeError, load_prompt, save_prompt
from prompt_jax.tasks import list_tasks, registry, user_file
from prompt_jax.transfer import library

TASK = "my_reviews"
WIDTH = 32  # the tiny Llama's


def _reviews(n: int) -> list[dict]:
    return ([{"review": f"an awful, dull film number {i}", "stars": "neg"} for i in range(n)]
            + [{"review": f"a great, moving film number {i}", "stars": "pos"} for i in range(n)])


def _task_flags(tmp_path: Path) -> list[str]:
    train = tmp_path / f"{TASK}.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in _reviews(30)))
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps(r) + "\n" for r in _reviews(10)))
    return ["--task_file", str(train), "--task_eval_file", str(dev), "--text_field", "review",
            "--label_field", "stars", "--verbalizers", "bad,good",
            "--template", "Review: {review}\nSentiment:"]


def _library(folder: Path, lengths=(4, 2, 6), width: int = WIDTH) -> Path:
    """Three saved prompts with sidecars naming a built-in task each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, length in zip(("sst2", "trec", "rte"), lengths, strict=True):
        save_prompt(rng.normal(size=(length, width)).astype(np.float32) * 0.1,
                    folder / f"{name}.npy", format="prompt_jax",
                    metadata={"task": name, "backbone": "llama"})
    return folder


def _forget(name: str) -> None:
    registry._REGISTRY.pop(name, None)
    user_file.DEFINITIONS.pop(name, None)


def test_library_prompts_are_fitted_to_the_length_and_refused_at_another_width(tmp_path):
    prompt = np.arange(12, dtype=np.float32).reshape(3, 4)
    same, note = library.fit_length(prompt, 3)
    assert note == library.AS_SAVED and (same == prompt).all()
    cut, note = library.fit_length(prompt, 2)
    assert (cut == prompt[:2]).all() and note == "truncated from 3 to its first 2 vectors"
    tiled, note = library.fit_length(prompt, 7)
    assert (tiled == prompt[[0, 1, 2, 0, 1, 2, 0]]).all() and note == "tiled from 3 to 7 vectors"

    items = library.read_library(_library(tmp_path / "lib"), WIDTH, 4)
    assert [(i.name, i.task, i.array.shape, i.handling) for i in items] == [
        ("rte", "rte", (4, WIDTH), "truncated from 6 to its first 4 vectors"),
        ("sst2", "sst2", (4, WIDTH), library.AS_SAVED),
        ("trec", "trec", (4, WIDTH), "tiled from 2 to 4 vectors")]
    wide = _library(tmp_path / "wide", width=48)
    with pytest.raises(PromptShapeError, match="width is 48, the model's is 32; give a "
                                               "projector .* that maps 48 to 32"):
        library.read_library(wide, WIDTH, 4)
    config = projectors.ProjectorConfig(kind="linear", source_width=48, target_width=WIDTH)
    path = tmp_path / "p.safetensors"
    projectors.save_projector(path, config, projectors.init(config, jax.random.PRNGKey(0)))
    items = library.read_library(wide, WIDTH, 4, projector=path)
    assert all(i.array.shape == (4, WIDTH) for i in items)
    assert items[0].handling == (f"projected from width 48 to 32 by {path}; truncated from 6 "
                                 "to its first 4 vectors")


def test_file_tasks_and_a_library_in_the_transfer_commands(tiny_llama, tmp_path, capsys):
    out = tmp_path / "xp"
    lib = _library(tmp_path / "lib")
    common = ["--out", str(out), "--model", str(tiny_llama), "--prompt_length", "4",
              "--steps", "3", "--limit", "8"]
    cli.main(["transfer", "matrix", *common, *_task_flags(tmp_path), "--sources", TASK,
              "--prompts", str(lib), "--targets", f"{TASK},sst2"])
    printed = capsys.readouterr().out
    assert "tiled from 2 to 4 vectors" in printed or "tiled" in (out / "prompts" /
                                                                "trec.json").read_text()
    cells = {p.stem for p in (out / "cells").glob("*.json")}
    assert {f"{s}__{t}" for s in (TASK, "sst2", "trec", "rte", "none", "random")
            for t in (TASK, "sst2")} == cells
    cell = json.loads((out / "cells" / f"trec__{TASK}.json").read_text())
    assert len(cell["correct"]) == cell["examples"] == 8  # per-row outcomes, for paired tests
    assert stats.accuracy(cell["correct"]).value == pytest.approx(cell["accuracy"])
    assert json.loads((out / "sources" / "trec.json").read_text())["library"] == str(
        lib / "trec.npy")
    assert (out / "tasks" / f"{TASK}.json").is_file()

    # later commands, as a new process sees them: the file task comes from the experiment
    _forget(TASK)
    cli.main(["transfer", "init", *common, "--target", TASK, "--arms", "baseline,source:trec",
              "--seeds", "0", "--eval_every", "3"])
    assert TASK in list_tasks()
    summary = json.loads((out / "init" / TASK / "summary.json").read_text())
    assert [a["arm"] for a in summary["arms"]] == ["baseline", "source:trec"]
    started = json.loads((out / "init" / TASK / "source-trec__seed0.json").read_text())
    assert started["curve"][0][0] == 0  # scored from its (library) start
    capsys.readouterr()


def test_suggest_ranks_a_library_scores_with_intervals_and_writes_a_start(tiny_llama,
                                                                         tmp_path, capsys):
    out = tmp_path / "suggest"
    lib = _library(tmp_path / "lib")
    cli.main(["transfer", "suggest", "--out", str(out), "--model", str(tiny_llama),
              *_task_flags(tmp_path), "--prompts", str(lib), "--prompt_length", "4",
              "--brief_steps", "3", "--batch_size", "8", "--sample", "12", "--retrieval",
              str(tmp_path / "none.json")])
    printed = capsys.readouterr().out
    result = json.loads((out / "suggestion.json").read_text())
    assert result["indicator"] == "E_cos" and "no stored retrieval benchmark" in printed
    assert [r["name"] for r in result["ranking"]] == sorted(
        (r["name"] for r in result["ranking"]), key=lambda n: -next(
            x["value"] for x in result["ranking"] if x["name"] == n))
    assert {r["name"]: r["handling"] for r in result["ranking"]}["trec"] == \
        "tiled from 2 to 4 vectors"
    assert set(result["scores"]) == {"none", "spot_mix", "sst2", "trec", "rte"}
    for name, scores in result["scores"].items():
        acc = scores["accuracy"]
        assert acc["n"] == 12 and acc["low"] <= acc["value"] <= acc["high"]
        assert (acc["low"], acc["high"]) == pytest.approx(stats.wilson_interval(
            sum(scores["correct"]), 12))
        if name != "none":
            assert scores["vs_template"]["difference"]["value"] == pytest.approx(
                acc["value"] - result["scores"]["none"]["accuracy"]["value"])
    assert result["reading"].startswith(stats.reading(
        [s["vs_template"]["beyond_noise"] for n, s in result["scores"].items() if n != "none"],
        "starts"))
    start = load_prompt(out / "start.npy")
    assert start.array.shape == (4, WIDTH) and start.metadata["suggested"] == result["chosen"]
    assert start.metadata["task_spec"]["name"] == TASK
    assert result["command"] in printed and "--init from_array --init_prompt" in printed
    # the printed command starts a run from the suggested prompt, in a new process's state
    _forget(TASK)
    args = shlex.split(result["command"])[1:]
    cli.main([*args, "--gin_file", "test/tiny.gin", "--steps", "2"])
    capsys.readouterr()
    run = out / "train"
    assert json.loads((run / "config.json").read_text())["init"] == "from_array"
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] >= 1


def test_the_suggested_indicator_is_the_stored_benchmarks_best_and_its_file_shown_from_the_root(
        tmp_path):
    from prompt_jax.transfer import suggest

    stored = suggest.stored_retrieval("smollm2-135m-instruct")
    name, why = suggest.best_indicator(stored)
    rates = json.loads(stored.read_text())["accuracy"]
    assert rates[name]["1"] == max(r["1"] for r in rates.values())
    assert "stored retrieval benchmark benchmarks/results/transfer/smollm2-135m-instruct/" \
           "retrieval.json (" in why
    elsewhere = tmp_path / "retrieval.json"
    elsewhere.write_text(json.dumps({"accuracy": {"E_cos": {"1": 0.25, "3": 0.5},
                                                  "ON_paper": {"1": 0.25, "3": 0.75}}}))
    assert suggest.best_indicator(elsewhere) == (
        "ON_paper", f"the best top-1 indicator of the stored retrieval benchmark {elsewhere} "
        "(25% of its targets)")


def test_the_suggested_start_says_whether_its_interval_shows_it_helps():
    from prompt_jax.transfer import suggest

    def result(low, value):
        return {"chosen": "laptop", "scores": {"laptop": {"vs_template": {
            "beyond_noise": low > 0 or value < 0, "difference": {"value": value, "low": low}}}}}

    assert suggest.chosen_text(result(-0.01, 0.02)).endswith("within noise of the template: "
                                                           "not shown to help)")
    assert suggest.chosen_text(result(0.01, 0.03)) == "laptop (above the template beyond noise)"
