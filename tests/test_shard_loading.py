"""Shard-direct loading: each device's slice of every param read from the checkpoint by itself
(`load_pretrained(mesh=)`), equal to the ordinary load, with a counter on the reader showing
that no sharded tensor is ever read whole and that the file is read once."""

from __future__ import annotations

import dataclasses
import weakref

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from prompt_jax import partitioning
from prompt_jax.models import convert, load_pretrained
from tests.hf_models import save_tiny

MODEL_AXIS = 4

# Widths every mesh axis divides (4 heads, 4 key-value heads), so that each family's large
# matrices really split 4 ways.
FAMILIES = {
    "llama": dict(hidden_size=64, intermediate_size=128, num_key_value_heads=4),
    "gemma3": dict(hidden_size=64, intermediate_size=128, num_key_value_heads=4),
    "t5_v1_1": {},
    "bert": {},
}


@dataclasses.dataclass
class ReadCounter:
    """What the checkpoint readers returned: (key, bytes) of each read, and the most bytes of
    read data alive at once (each array counted until it is freed)."""

    reads: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    live: int = 0
    peak: int = 0

    def count(self, key: str, array: np.ndarray) -> np.ndarray:
        self.reads.append((key, array.nbytes))
        self.live += array.nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(array, self._freed, array.nbytes)
        return array

    def _freed(self, nbytes: int) -> None:
        self.live -= nbytes


@pytest.fixture
def counter(monkeypatch) -> ReadCounter:
    counted = ReadCounter()
    real = convert.read_hf_weights

    def read_hf_weights(directory):
        def wrap(key, t):
            box = None if t.read_box is None else (
                lambda index: counted.count(key, t.read_box(index)))
            return dataclasses.replace(t, read=lambda: counted.count(key, t.read()),
                                       read_box=box)

        return {key: wrap(key, t) for key, t in real(directory).items()}

    monkeypatch.setattr(convert, "read_hf_weights", read_hf_weights)
    return counted


def _as_torch_bin(directory):
    """The same weights as pytorch_model.bin, a format read a whole tensor at a time."""
    tensors = load_file(directory / "model.safetensors")
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()},
               directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()


@pytest.mark.parametrize("family,fmt", [(f, "safetensors") for f in FAMILIES]
                         + [("bert", "bin")])
def test_shard_direct_load_equals_the_ordinary_load(family, fmt, tmp_path, counter):
    directory = save_tiny(family, tmp_path / family, **FAMILIES[family])
    if fmt == "bin":
        _as_torch_bin(directory)
    sizes = {k: t.nbytes for k, t in (load_file(directory / "model.safetensors").items()
                                      if fmt == "safetensors" else
                                      torch.load(directory / "pytorch_model.bin").items())}
    whole = load_pretrained(directory)
    whole_reads, whole_peak = counter.reads, counter.peak
    counter.reads, counter.peak = [], 0

    mesh = partitioning.make_mesh(2, MODEL_AXIS)
    sharded = load_pretrained(directory, mesh=mesh)
    expected = partitioning.param_shardings(sharded.model, mesh)

    def check(path, a, b, sharding):
        name = jax.tree_util.keystr(path)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
        assert b.sharding.is_equivalent_to(sharding, b.ndim), name
        if "model" in sharding.spec:  # split 4 ways: no device holds it whole
            assert {s.data.size for s in b.addressable_shards} == {b.size // MODEL_AXIS}, name

    jax.tree_util.tree_map_with_path(check, whole.params, sharded.params, expected)
    assert any("model" in s.spec for s in jax.tree.leaves(expected))

    # The file is read once, in pieces: a piece the data axis shares is read once and copied
    # between devices, and each tensor read whole is read once for all the devices.
    assert sum(n for _, n in whole_reads) == sum(n for _, n in counter.reads) \
        == sum(sizes.values())
    largest = max(sizes, key=sizes.get)  # the embedding table, split over 'model'
    shard_reads = [n for k, n in counter.reads if k == largest]
    if fmt == "safetensors":  # each quarter read by itself, never the whole table
        assert shard_reads == [sizes[largest] // MODEL_AXIS] * MODEL_AXIS
    else:  # a format read whole: once, the quarters cut from it
        assert shard_reads == [sizes[largest]]
    if fmt == "safetensors":
        # The host holds one read at a time, smaller than a whole stacked param (which the
        # ordinary load builds on the host before placing it). (A .bin is unpickled whole.)
        largest_group = max(x.nbytes for x in jax.tree.leaves(sharded.params))
        assert counter.peak == max(n for _, n in counter.reads) < largest_group // 2
        assert whole_peak == max(n for _, n in whole_reads)


def test_the_engine_loads_sharded_and_remat_changes_no_number(tiny_llama):
    """`engine.load_model` reads straight into shards; `remat=True` (RunConfig.remat, for models
    whose activations would not fit) gives the same scores and prompt gradient."""
    from prompt_jax import engine, prompts, scoring

    plain = engine.load_model(str(tiny_llama), mesh_data=1)
    sharded = engine.load_model(str(tiny_llama), mesh_data=2, mesh_model=MODEL_AXIS, remat=True)
    assert sharded.model.config.remat and not plain.model.config.remat
    q = sharded.params["layers"]["attn"]["q"]["kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, None, "model", None)
    task = plain.task("sst2", max_input_length=32)
    texts = ["a gorgeous, witty film", "dull and tedious", "it works", "not at all"]
    prompt = prompts.random_uniform(jax.random.key(0), 4, plain.model.d_model)
    np.testing.assert_allclose(sharded.scores(sharded.task("sst2", max_input_length=32),
                                              prompt, texts),
                               plain.scores(task, prompt, texts), atol=1e-5)
    batch = task.encode_texts(texts)

    def grad(loaded):
        def total(p):
            return scoring.candidate_scores(loaded.model, loaded.params, p, batch,
                                            task.candidates, "prefix").sum()
        return np.asarray(jax.jit(jax.grad(total))(prompt))

    np.testing.assert_allclose(grad(sharded), grad(plain), atol=1e-5)
