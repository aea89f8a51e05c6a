"""A bank folder survives SIGKILL: killed at every file-system step of an add, a replacement or
a removal, the folder settles (`store.recover`, what every start runs) to the old bank or the
new one, never a torn prompt; and a real `prompt-jax serve` killed while adds are in flight
restarts serving every prompt it had answered for."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import jax
import numpy as np
import pytest

from prompt_jax import engine, prompts
from prompt_jax.prompts.files import load_prompt
from prompt_jax.serving import store
from prompt_jax.serving.bank import PromptBank
from tests.serving_util import save, upload

pytestmark = pytest.mark.subprocess  # every test starts another process
REPO = Path(__file__).resolve().parent.parent
KEY = "crash-test-key-0123456789"

# Runs one bank change again and again in forked copies of itself, each killed by SIGKILL just
# before its k-th file-system call (k = 1, 2, ... until one finishes), each on its own copy of
# the base folder: work/k001, work/k002, ...
CHILD = r"""
import json, os, shutil, signal, sys, traceback
from pathlib import Path
import numpy as np
from prompt_jax.serving import store

base, work, scenario = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
outcomes, k = {}, 1
while True:
    folder = work / f"k{k:03d}"
    shutil.copytree(base, folder)
    pid = os.fork()
    if pid == 0:
        try:
            calls = [0]
            def crashing(fn):
                def call(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == k:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return fn(*args, **kwargs)
                return call
            for name in ("open", "replace", "rename", "fsync", "unlink", "mkdir"):
                setattr(os, name, crashing(getattr(os, name)))
            if scenario == "remove":
                store.remove(folder, folder / "b.npy")
            else:
                name, task = ("a", "trec") if scenario == "replace" else ("c", "mrpc")
                store.write(folder, name, np.load(base.parent / "new.npy"), {"task": task})
        except BaseException:
            traceback.print_exc()
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    outcomes[k] = "killed" if killed else os.waitstatus_to_exitcode(status)
    if not killed:
        break
    k += 1
print(json.dumps(outcomes))
"""


def _state(folder: Path) -> dict[str, tuple[bytes, str]]:
    """What a start serves from `folder`: name -> (the array's bytes, its sidecar's task)."""
    out = {}
    for path in store.prompt_files(folder):
        prompt = load_prompt(path)  # raises on a torn pair (a sidecar of another length)
        out[path.stem] = (prompt.array.tobytes(), prompt.metadata["task"])
    return out


@pytest.mark.parametrize("scenario", ["new", "replace", "remove"])
def test_a_kill_at_any_step_leaves_the_old_bank_or_the_new(tmp_path, scenario):
    base = tmp_path / "base"
    base.mkdir()
    old_a, b, new = (np.random.default_rng(i).normal(size=(n, 8)).astype(np.float32)
                     for i, n in ((0, 4), (1, 5), (2, 6)))
    for name, array, task in (("a", old_a, "sst2"), ("b", b, "rte")):
        save(base, name, array, "tiny", task)
    np.save(tmp_path / "new.npy", new)
    old = _state(base)
    wanted = dict(old)
    if scenario == "remove":
        del wanted["b"]
    else:
        name, task = ("a", "trec") if scenario == "replace" else ("c", "mrpc")
        wanted[name] = (new.tobytes(), task)
    work = tmp_path / "work"
    work.mkdir()
    child = subprocess.run([sys.executable, "-c", CHILD, str(base), str(work), scenario],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    outcomes = json.loads(child.stdout)
    assert list(outcomes.values())[-1] == 0, outcomes  # the last one ran to its end
    assert len(outcomes) >= 8, outcomes  # a kill before each of its steps
    seen = []
    for k in outcomes:
        folder = work / f"k{int(k):03d}"
        store.recover(folder)
        state = _state(folder)
        assert state in (old, wanted), (scenario, k)
        seen.append("new" if state == wanted else "old")
        assert not any((folder / store.PENDING).glob("*"))  # nothing left in flight
        if scenario == "remove" and state == wanted:
            assert (folder / store.REMOVED / "b.npy").is_file()
    assert seen[0] == "old" and seen[-1] == "new"
    assert seen == sorted(seen, key=lambda s: s == "new"), seen  # committed once, for good


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(tiny_llama, folder: Path, port: int, log: Path) -> subprocess.Popen:
    """`prompt-jax serve` on the folder, with an API key; returns once /health answers."""
    cmd = [sys.executable, "-m", "prompt_jax", "serve", "--model", str(tiny_llama), "--bank",
           str(folder), "--port", str(port), "--batch_buckets", "8", "--length_buckets", "64",
           "--max_input_length", "64", "--log_level", "warning"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PROMPT_JAX_API_KEY": KEY},
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))  # noqa: SIM115
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)


def test_a_server_killed_during_adds_restarts_with_every_answered_prompt(tiny_llama, tmp_path):
    folder = tmp_path / "bank"
    folder.mkdir()
    model = str(tiny_llama)
    for i, task in enumerate(("sst2", "trec")):
        save(folder, task, prompts.random_uniform(jax.random.key(i), 4, 32), model, task)
    versions = [np.asarray(prompts.random_uniform(jax.random.key(10 + i), 5 + i, 32))
                for i in range(2)]
    port = _free_port()
    proc = _start(tiny_llama, folder, port, tmp_path / "first.log")
    answered: list[str] = []
    fresh: dict[str, np.ndarray] = {}
    stop = threading.Event()

    def adds():
        """Replaces `hot` (two versions in turn) and adds new names, until the server dies."""
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"Authorization": f"Bearer {KEY}"}) as client:
            for i in range(10_000):
                if stop.is_set():
                    return
                name = "hot" if i % 2 == 0 else f"n{i}"
                array = versions[(i // 2) % 2] if name == "hot" else versions[0][:, ::-1] + i
                fresh[name] = array
                try:
                    r = client.post("/prompts", json=upload(name, array, model, "sst2"))
                except httpx.TransportError:
                    return  # killed
                assert r.status_code == 200, r.text
                answered.append(name)

    thread = threading.Thread(target=adds, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while len(answered) < 6:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    time.sleep(random.Random(0).uniform(0, 0.05))  # most likely inside an add
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    thread.join(30)

    bank = PromptBank(engine.load_model(model, mesh_data=1), slots=8, prompt_length=16,
                      max_input_length=64)
    bank.load_dir(folder)  # recovers, then reads every prompt: nothing torn
    assert set(answered) <= set(bank.names)
    assert any(np.array_equal(bank.get("hot").prompt, v) for v in versions)
    for name in set(answered) - {"hot"}:
        np.testing.assert_array_equal(bank.get(name).prompt, fresh[name])

    restarted = _start(tiny_llama, folder, port, tmp_path / "second.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                          headers={"Authorization": f"Bearer {KEY}"}) as client:
            served = {t["name"] for t in client.get("/tasks").json()["tasks"]}
            assert served == set(bank.names)
            r = client.post("/classify", json={"task": "hot", "text": "a witty film"})
            assert r.status_code == 200 and r.json()["task"] == "hot"
    finally:
        restarted.terminate()
        restarted.wait(60)
