"""Multi-process jobs on jax.distributed: two local processes (127.0.0.1, four CPU devices each)
train like one process with eight devices, only process 0 writes files, a killed process fails
the job in bounded time, and --resume ends with the prompt of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from prompt_jax import distributed
from prompt_jax.commands import cli
from prompt_jax.tasks import registry
from prompt_jax.tasks.readers import data_root

REPO = Path(__file__).resolve().parent.parent
STEPS = 24
TIMEOUT = 300  # seconds any one job may take before the test gives up on it (no hang)

# Runs `prompt-jax ...` after installing an audit hook that records every file this process
# opens for writing or renames into place (Python's `open`, `os.open`, `os.replace`; orbax's
# tensorstore writes are C++ and unseen).
LAUNCH = """
import os, sys
record = open(os.environ["WRITES_LOG"], "w", buffering=1)
under = os.path.realpath(os.environ["WRITES_UNDER"])
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1] or "", args[2] or 0
        if not (any(c in mode for c in "wax+") or flags & WRITE_FLAGS):
            return
        path = args[0]
    elif event == "os.rename":  # os.rename and os.replace: the destination
        path = args[1]
    else:
        return
    path = os.path.realpath(os.fsdecode(path))
    if path.startswith(under + os.sep):
        record.write(os.path.relpath(path, under) + "\\n")

sys.addaudithook(hook)
from prompt_jax.commands.cli import main
main(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def task_flags(tmp_path_factory) -> list[str]:
    """A task of real SST-2 rows (the first 200 training and 32 validation sentences of
    ../shared/data), small enough that each process reads it at once."""
    folder = tmp_path_factory.mktemp("task")
    source = data_root() / "glue_sst2"
    for split, rows in (("train", 200), ("validation", 32)):
        lines = (source / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        (folder / f"{split}.tsv").write_text("\n".join(lines[:rows + 1]) + "\n", encoding="utf-8")
    return ["--task_file", str(folder / "train.tsv"), "--task_eval_file",
            str(folder / "validation.tsv"), "--task", "sst2_rows", "--text_field", "sentence",
            "--labels", "0,1", "--verbalizers", "negative,positive",
            "--template", "Review: {sentence}\nSentiment:"]


def _args(model, out, task_flags, *extra) -> list[str]:
    """A few steps on a ('data': 4, 'model': 2) mesh: eight devices, in one process or two."""
    return ["train", "--gin_file", "test/tiny.gin", "--model", str(model), "--output_dir",
            str(out), "--steps", str(STEPS), "--gin_param", "RunConfig.mesh_data=4",
            "--gin_param", "RunConfig.mesh_model=2", "--gin_param", "RunConfig.eval_every=0",
            "--gin_param", "RunConfig.checkpoint_every=4", *task_flags, *extra]


def _launch(args: list[str], out: Path) -> list[subprocess.Popen]:
    """Two processes of one job, four CPU devices each, a 10 s heartbeat timeout."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
               "JAX_PLATFORMS": "cpu", "WRITES_LOG": str(out.parent / f"{out.name}.writes{rank}"),
               "WRITES_UNDER": str(out)}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", LAUNCH, *args, "--coordinator_address",
             f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(rank),
             "--heartbeat_timeout", "10", "--init_timeout", "60"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
            results.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.fixture(scope="module")
def one_process(tiny_llama, task_flags, tmp_path_factory) -> Path:
    """The reference: this test process, its eight devices, no jax.distributed."""
    assert jax.device_count() == 8 and jax.process_count() == 1
    out = tmp_path_factory.mktemp("one") / "run"
    before = dict(registry._REGISTRY)
    try:
        cli.main(_args(tiny_llama, out, task_flags))
    finally:  # the run registers its task file; later test modules see the built-in tasks only
        registry._REGISTRY.clear()
        registry._REGISTRY.update(before)
    return out


@pytest.fixture(scope="module")
def two_processes(tiny_llama, task_flags, tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("two") / "run"
    results = _finish(_launch(_args(tiny_llama, out, task_flags), out))
    for rank, (code, _, stderr) in enumerate(results):
        assert code == 0, f"process {rank}:\n{stderr[-3000:]}"
    return out, results


GLOO = re.compile(r"\[Gloo\] Rank \d+ is connected to \d+ peer ranks\. Expected number of "
                  r"connected peer ranks is : \d+\n?")


def _ours(stdout: str) -> str:
    """A process's standard output without what gloo (the CPU collectives) prints into it
    from its own threads, at times in the middle of its own earlier lines."""
    while GLOO.search(stdout):
        stdout = GLOO.sub("", stdout)
    return stdout.strip()


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.subprocess
def test_two_processes_end_with_the_prompt_of_one_process_with_eight_devices(
        one_process, two_processes):
    two, results = two_processes
    # Equal up to float rounding: the data-parallel gradient sums run across processes
    # (gloo) instead of inside one, in another order.
    np.testing.assert_allclose(np.load(two / "prompt.npy"), np.load(one_process / "prompt.npy"),
                               rtol=0, atol=1e-5)
    ones, twos = _metrics(one_process), _metrics(two)
    assert [(m["step"], m["split"]) for m in twos] == [(m["step"], m["split"]) for m in ones]
    assert [(m["step"], m["split"]) for m in twos][-2:] == [(STEPS, "train"), (STEPS, "eval")]
    for a, b in zip(ones, twos, strict=True):
        assert a.get("accuracy") == b.get("accuracy")
        assert a.get("loss", 0) == pytest.approx(b.get("loss", 0), abs=1e-5)
    printed = [_ours(stdout) for _, stdout, _ in results]
    assert json.loads(printed[0])["steps"] == STEPS and printed[1] == ""  # by process 0 only


@pytest.mark.subprocess
def test_only_process_0_writes_files_and_each_once(two_processes):
    out, results = two_processes
    writes = [(out.parent / f"{out.name}.writes{rank}").read_text().splitlines()
              for rank in range(2)]
    # Process 1 writes nothing but its part of the collective orbax saves.
    assert [w for w in writes[1] if not w.startswith("checkpoints")] == []
    written = set(writes[0])
    for name in ("config.gin", "config.json", "metrics.jsonl", "best_prompt.npy",
                 "best_prompt.json", "prompt.npy", "prompt.json", "summary.json"):
        assert name in written, name
    assert any(w.startswith("tb/events.out.tfevents") for w in written)
    assert len(list((out / "tb").iterdir())) == 1
    steps = [(m["step"], m["split"]) for m in _metrics(out)]
    assert len(steps) == len(set(steps)) == STEPS + 1  # each line once
    assert "train:" in results[0][2] and "train:" not in results[1][2]  # one progress bar


@pytest.mark.subprocess
def test_a_killed_process_fails_the_job_and_resume_ends_with_the_uninterrupted_prompt(
        tiny_llama, task_flags, two_processes, tmp_path):
    out = tmp_path / "run"
    args = _args(tiny_llama, out, task_flags)
    procs = _launch(args, out)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "checkpoints" / "4").is_dir():
            assert time.monotonic() < deadline, "no checkpoint written in time"
            assert all(p.poll() is None for p in procs), _finish(procs)
            time.sleep(0.02)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code = procs[0].wait(timeout=120)
        waited = time.monotonic() - killed
    finally:
        _finish(procs)
    assert code != 0 and waited < 60, (code, waited)  # a 10 s heartbeat timeout
    assert not (out / "prompt.npy").exists(), "the job finished before it could be killed"

    results = _finish(_launch(args + ["--resume"], out))
    for rank, (code, _, stderr) in enumerate(results):
        assert code == 0, f"process {rank}:\n{stderr[-3000:]}"
    uninterrupted, _ = two_processes
    np.testing.assert_array_equal(np.load(out / "prompt.npy"),
                                  np.load(uninterrupted / "prompt.npy"))


def test_a_half_named_job_is_refused_before_anything_starts(monkeypatch):
    for name in distributed.ENVIRONMENT.values():
        monkeypatch.delenv(name, raising=False)
    assert not distributed.initialize(distributed.DistributedConfig())  # one process: nothing
    with pytest.raises(ValueError, match="missing: --num_processes, --process_id"):
        distributed.initialize(distributed.DistributedConfig(coordinator_address="h:1"))
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    with pytest.raises(ValueError, match="process id 2 is not below the process count 2"):
        distributed.initialize(distributed.DistributedConfig(coordinator_address="h:1"))
    config = distributed.from_environment(distributed.DistributedConfig(process_id=1))
    assert (config.num_processes, config.process_id) == (2, 1)  # a flag wins
