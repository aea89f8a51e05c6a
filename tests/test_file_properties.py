"""Property-based tests (hypothesis) of the readers of untrusted files: real prompt files
(numpy with its sidecar, a `torch.save` zip, safetensors, a PEFT adapter) and task files
(JSONL, CSV, TSV), mutated at random (bytes flipped, overwritten, inserted, deleted, duplicated,
the file cut short). Each mutated file is read or refused with a ValueError-family error (the
readers' own, or UnicodeDecodeError), never another exception, and within `HANG_S` seconds.

Examples: `EXAMPLES` (150) mutated files per seed file, 7 prompt seeds and 3 task seeds:
1,500 reads, derandomized (the same files at every run); and 9 crafted files that random edits
do not reach (sizes overflowing int64, headers nested too deep, fields over csv's limit, a zip
of an unsupported compression method).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prompt_jax.prompts.files import load_prompt, save_prompt
from prompt_jax.prompts.torch_pickle import save_torch_file
from prompt_jax.tasks.user_file import define_file_task

EXAMPLES = 150
HANG_S = 10
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@st.composite
def mutations(draw, data: bytes) -> bytes:
    """`data` with 1-4 random edits."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "duplicate", "cut"]))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and out:
            out[at] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord("{"), ord("9"), ord('"')]))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del out[at:at + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            out[at:at] = out[at:at + draw(st.integers(1, 64))]
        else:
            del out[at:]
    return bytes(out)


@contextlib.contextmanager
def _no_hang(seconds: int = HANG_S):
    """Raises TimeoutError in this (the main) thread after `seconds`."""
    def alarm(signum, frame):
        raise TimeoutError(f"a read took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _prompt_seeds(root: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (the file a mutation rewrites, what `load_prompt` is given), each in its own
    folder, written by the writers these formats come from."""
    array = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    seeds = {}

    def folder(name: str) -> Path:
        path = root / name
        path.mkdir()
        return path

    d = folder("prompt_jax")
    save_prompt(array, d / "p.npy", format="prompt_jax",
                metadata={"task": "sst2", "backbone": "llama", "template": "{text_a}"})
    seeds["npy"] = (d / "p.npy", d / "p.npy")
    seeds["sidecar"] = (d / "p.json", d / "p.npy")
    d = folder("torch_save")
    torch.save(torch.from_numpy(array), d / "task_prompt")
    seeds["torch.save"] = (d / "task_prompt", d / "task_prompt")
    d = folder("torch_dict")
    save_torch_file(d / "ckpt.pt", {"prompt": array, "step": np.arange(3)})
    seeds["torch dict"] = (d / "ckpt.pt", d / "ckpt.pt")
    d = folder("safetensors")
    safetensors.numpy.save_file({"soft_prompt": array}, str(d / "p.safetensors"))
    seeds["safetensors"] = (d / "p.safetensors", d / "p.safetensors")
    d = folder("peft")
    save_prompt(array, d / "adapter", format="peft", metadata={"task_type": "CAUSAL_LM"})
    seeds["peft weights"] = (d / "adapter" / "adapter_model.safetensors", d / "adapter")
    seeds["peft config"] = (d / "adapter" / "adapter_config.json", d / "adapter")
    return seeds


@pytest.fixture(scope="module")
def prompt_seeds(tmp_path_factory):
    return _prompt_seeds(tmp_path_factory.mktemp("seeds"))


PROMPT_SEEDS = ("npy", "sidecar", "torch.save", "torch dict", "safetensors", "peft weights",
                "peft config")


@pytest.mark.parametrize("seed", PROMPT_SEEDS)
def test_a_mutated_prompt_file_is_read_or_refused_with_a_clear_error(seed, prompt_seeds,
                                                                     tmp_path):
    mutated, target = prompt_seeds[seed]
    root = mutated.parent if target == mutated or target.is_file() else target.parent
    work = tmp_path / "work"
    original = mutated.read_bytes()
    assert load_prompt(target).array.shape == (5, 8)  # the seed itself reads
    outcomes = {"read": 0, "refused": 0}

    @SETTINGS
    @given(data=mutations(original))
    def read(data):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(root, work)
        (work / mutated.relative_to(root)).write_bytes(data)
        with _no_hang():
            try:
                prompt = load_prompt(work / target.relative_to(root))
            except ValueError as e:  # PromptFormatError, TorchFileError, UnicodeDecodeError...
                assert str(e)
                outcomes["refused"] += 1
                return
        assert prompt.array.dtype == np.float32 and prompt.array.ndim == 2
        assert np.isfinite(prompt.array).all()
        outcomes["read"] += 1

    read()
    assert outcomes["refused"] > 0, outcomes  # the mutations do break files


TASK_ROWS = [{"review": f"a {'great' if i % 2 else 'dull'}, \"quoted\" film, no. {i}",
              "stars": "pos" if i % 2 else "neg"} for i in range(12)]


def _task_seeds(root: Path) -> dict[str, Path]:
    jsonl = root / "t.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in TASK_ROWS), encoding="utf-8")
    csv = root / "t.csv"
    csv.write_text("review,stars\n" + "".join(
        '"' + r["review"].replace('"', '""') + f'",{r["stars"]}\n' for r in TASK_ROWS))
    tsv = root / "t.tsv"
    tsv.write_text("review\tstars\n" + "".join(
        f"{r['review']}\t{r['stars']}\n" for r in TASK_ROWS))
    return {"jsonl": jsonl, "csv": csv, "tsv": tsv}


@pytest.mark.parametrize("kind", ["jsonl", "csv", "tsv"])
def test_a_mutated_task_file_is_read_or_refused_with_a_clear_error(kind, tmp_path):
    seed = _task_seeds(tmp_path)[kind]
    original = seed.read_bytes()

    def define(path: Path):
        return define_file_task("fuzzed_task", path, text_fields=["review"],
                                label_field="stars", register_task=False)

    assert define(seed).labels == ("neg", "pos")
    outcomes = {"read": 0, "refused": 0}
    work = tmp_path / f"mutated.{kind}"

    @SETTINGS
    @given(data=mutations(original))
    def read(data):
        work.write_bytes(data)
        with _no_hang():
            try:
                spec = define(work)
            except ValueError as e:  # the reader's own messages, or UnicodeDecodeError
                assert str(e)
                outcomes["refused"] += 1
                return
        assert len(spec.labels) >= 2
        outcomes["read"] += 1

    read()
    assert outcomes["refused"] > 0 and outcomes["read"] > 0, outcomes


def _npy_with_header(header: str) -> bytes:
    text = header.encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


def _zip_with_method(data: bytes, method: int) -> bytes:
    """A zip archive whose members all claim compression `method` (99: AES, unsupported)."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = out.find(signature)
        while at >= 0:
            out[at + offset:at + offset + 2] = method.to_bytes(2, "little")
            at = out.find(signature, at + 4)
    return bytes(out)


CRAFTED = {  # name -> (file name, its bytes); beyond what random mutations reach
    "npy shape overflowing int64": ("p.npy", _npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }")),
    "npy negative shape": ("p.npy", _npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }")),
    "npy unbalanced header": ("p.npy", _npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "(" * 3000 + "), }")),
    "npy record dtype": ("p.npy", _npy_with_header(
        "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1, 3), }") + b"\0" * 12),
    "zip of an unsupported compression": ("task_prompt", b""),  # made below from torch.save
    "sidecar nested too deep": ("p.json", b"[" * 100_000),
    "csv field over the csv limit": ("t.csv", b'review,stars\n"' + b"x" * 200_000 + b'",pos\n'),
    "tsv field over the csv limit": ("t.tsv", b"review\tstars\n" + b"x" * 200_000 + b"\tpos\n"),
    "jsonl nested too deep": ("t.jsonl", b"[" * 100_000 + b"\n"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_file_is_refused_with_a_clear_error(case, tmp_path):
    name, data = CRAFTED[case]
    path = tmp_path / name
    if case.startswith("zip"):
        torch.save(torch.ones(2, 3), path)
        data = _zip_with_method(path.read_bytes(), 99)
    if name == "p.json":
        save_prompt(np.ones((2, 3), np.float32), tmp_path / "p.npy", format="prompt_jax")
    path.write_bytes(data)
    with _no_hang(), pytest.raises(ValueError) as refused:
        if path.suffix in (".csv", ".tsv", ".jsonl"):
            define_file_task("crafted", path, text_fields=["review"], label_field="stars",
                             register_task=False)
        else:
            load_prompt(tmp_path / ("p.npy" if name == "p.json" else name))
    assert str(tmp_path) in str(refused.value)  # it names the file
