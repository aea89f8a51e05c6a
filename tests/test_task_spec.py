"""A file task that outlives its process: its definition in the run folder and the prompt's
sidecar, the task made again from the prompt alone (eval, infer, the bank), a changed file
reported, a gone file refused, the gin route; and (subprocess tier) the same in new processes."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from prompt_jax import engine
from prompt_jax.commands import cli, gin_config
from prompt_jax.serving.bank import PromptBank
from prompt_jax.tasks import get_task, list_tasks, registry, task_spec, user_file

REPO = Path(__file__).resolve().parent.parent
TASK = "movie_stars"


def _reviews(n: int) -> list[dict]:
    return ([{"review": f"an awful, dull film number {i}", "stars": "neg"} for i in range(n)]
            + [{"review": f"a great, moving film number {i}", "stars": "pos"} for i in range(n)])


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _forget(name: str) -> None:
    """As a new process sees it: the file task was never defined here."""
    registry._REGISTRY.pop(name, None)
    user_file.DEFINITIONS.pop(name, None)


def _flags(tmp_path: Path) -> list[str]:
    train = _jsonl(tmp_path / f"{TASK}.jsonl", _reviews(24))
    dev = _jsonl(tmp_path / "dev.jsonl", _reviews(6))
    return ["--task_file", str(train), "--task_eval_file", str(dev), "--text_field", "review",
            "--label_field", "stars", "--verbalizers", "bad,good",
            "--template", "Review: {review}\nSentiment:"]


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory):
    """A prompt trained on a file task (in this process), then the task forgotten."""
    tmp = tmp_path_factory.mktemp("file_task")
    out = tmp / "run"
    cli.main(["train", "--gin_file", "test/tiny.gin", "--model", str(tiny_llama),
              *_flags(tmp), "--output_dir", str(out)])
    spec = get_task(TASK)
    _forget(TASK)
    return out, spec


def test_the_definition_is_stored_in_the_run_folder_and_the_sidecar(trained, tiny_llama):
    out, _ = trained
    stored = json.loads((out / task_spec.SPEC_FILE).read_text())
    assert stored["name"] == TASK and set(stored["files"]) == {"train", "validation"}
    for entry in stored["files"].values():
        assert entry["sha256"] == user_file.sha256(entry["path"])
    assert stored["labels"] == ["neg", "pos"] and stored["verbalizers"] == ["bad", "good"]
    assert stored["template"] == "Review: {text_a}\nSentiment:"
    for name in ("prompt.json", "best_prompt.json"):
        sidecar = json.loads((out / name).read_text())
        assert sidecar["task_spec"] == stored and sidecar["model"] == str(tiny_llama)


def test_the_prompt_alone_evaluates_infers_and_fills_a_bank(trained, tiny_llama, capsys):
    out, spec = trained
    prompt = str(out / "prompt.npy")
    assert TASK not in list_tasks()
    # eval: the task and the model come from the prompt's sidecar (test/tiny.gin's default
    # task does not hide them)
    cli.main(["eval", "--gin_file", "test/tiny.gin", "--prompt", prompt])
    metrics = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    assert metrics["task"] == TASK
    assert metrics["accuracy"] == pytest.approx(summary["final"]["accuracy"])
    remade = get_task(TASK)
    assert dataclasses.replace(remade, task_id=spec.task_id) == spec
    _forget(TASK)
    cli.main(["infer", "--gin_file", "test/tiny.gin", "--prompt", prompt, "--text",
              "a great film", "--text", "an awful film"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines] == ["a great film", "an awful film"]
    assert {line.split("\t")[0] for line in lines} <= {"neg", "pos"}
    _forget(TASK)
    bank = PromptBank(engine.load_model(str(tiny_llama), mesh_data=1), max_input_length=32)
    entry = bank.add_file(prompt)
    assert entry.task.name == TASK and entry.labels == ("neg", "pos")
    # --task_spec: the run's task_spec.json (or a sidecar) makes the task for any prompt
    _forget(TASK)
    cli.main(["eval", "--gin_file", "test/tiny.gin", "--model", str(tiny_llama),
              "--task_spec", str(out / task_spec.SPEC_FILE)])
    assert json.loads(capsys.readouterr().out)["task"] == TASK


def test_a_changed_file_is_reported_and_a_gone_one_refused(trained, tmp_path):
    out, _ = trained
    spec = json.loads((out / task_spec.SPEC_FILE).read_text())
    train = Path(spec["files"]["train"]["path"])
    copy = _jsonl(tmp_path / "train.jsonl", _reviews(24))
    spec["files"]["train"]["path"] = str(copy)
    assert task_spec.define_from_spec(spec) == TASK  # same bytes: nothing said
    _jsonl(copy, _reviews(25))
    with pytest.warns(task_spec.TaskFileChangedWarning, match=f"train file {copy} changed"):
        task_spec.define_from_spec(spec, where="p.npy")
    copy.unlink()
    with pytest.raises(FileNotFoundError, match=f"p.npy: task 'movie_stars' was defined on its "
                                                f"train file {copy}, which no longer exists"):
        task_spec.define_from_spec(spec, where="p.npy")
    with pytest.raises(ValueError, match="not a file task's definition"):
        task_spec.define_from_spec({"name": "x"})
    assert train.is_file()
    _forget(TASK)


def test_the_gin_route_defines_a_file_task(trained, tmp_path):
    out, _ = trained
    config = gin_config.resolve(["tasks/file_task.gin"])
    assert config.task == "my_reviews"
    definition = task_spec.definition("my_reviews")
    assert definition["files"]["train"]["path"].endswith("rotten_tomatoes/train.jsonl")
    assert get_task("my_reviews").verbalizers == ("terrible", "great")
    _forget(TASK)
    config = gin_config.resolve([], ["RunConfig.task = @file_task()",
                                     f"file_task.spec = '{out / 'prompt.json'}'"])
    assert config.task == TASK and TASK in list_tasks()
    _forget(TASK)
    _forget("my_reviews")


# ------------------------------------------------------------------------------------------
# New processes, given only the prompt file
# ------------------------------------------------------------------------------------------


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prompt_jax", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, **kwargs)


@pytest.mark.subprocess
def test_new_processes_evaluate_infer_serve_and_transfer_from_the_prompt_file(trained,
                                                                            tmp_path):
    out, _ = trained
    prompt = str(out / "prompt.npy")
    summary = json.loads((out / "summary.json").read_text())
    done = _cli("eval", "--gin_file", "test/tiny.gin", "--prompt", prompt)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["task"] == TASK
    assert metrics["accuracy"] == pytest.approx(summary["final"]["accuracy"])
    done = _cli("infer", "--gin_file", "test/tiny.gin", "--prompt", prompt, "--text",
                "a great film")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\t")[0] in ("neg", "pos")

    # transfer: the prompt as a library source, its file task as a target
    library = tmp_path / "library"
    library.mkdir()
    for suffix in (".npy", ".json"):
        (library / f"{TASK}{suffix}").write_bytes((out / f"prompt{suffix}").read_bytes())
    sidecar = json.loads((out / "prompt.json").read_text())
    done = _cli("transfer", "matrix", "--out", str(tmp_path / "xp"), "--model",
                sidecar["model"], "--prompts", str(library), "--targets", TASK,
                "--limit", "8", "--no_controls")
    assert done.returncode == 0, done.stderr
    cell = json.loads((tmp_path / "xp" / "cells" / f"{TASK}__{TASK}.json").read_text())
    assert cell["examples"] == 8 and 0 <= cell["accuracy"] <= 1

    # serve --bank: the folder of the prompt alone
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen(
        [sys.executable, "-m", "prompt_jax", "serve", "--model", sidecar["model"], "--bank",
         str(library), "--port", str(port), "--batch_buckets", "8", "--length_buckets", "32",
         "--max_input_length", "32", "--log_level", "warning"], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "the server did not start"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/classify", method="POST",
            data=json.dumps({"task": TASK, "text": "a great film"}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert answer["label"] in ("neg", "pos"), answer
    finally:
        server.terminate()
        server.wait(30)
