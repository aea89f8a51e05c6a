"""Checkpoint tensors -> a param tree, strictly, and (given shardings) straight into shards.

A family's key table (`convert_<family>.py`) lists, for each of our params, the checkpoint key
it comes from and how it is stored (`Entry.kind`). `assemble_params` first checks the whole table
against the checkpoint without reading any data (every key present with the right shape,
nothing left unmapped), then reads the params.

Given a sharding per param (the rules table's, `partitioning.param_shardings`), each device's
shard is read from the file by itself and put on its device at once: the host holds one shard
at a time, never the whole model, and no device ever holds a whole sharded tensor. The box of
the checkpoint tensor a shard needs is computed from the storage kind (a transposed torch
Linear, a flattened per-head bias, layers stacked on a leading axis), so a shard of a
[vocab, embed] table or of a [layers, embed, heads, kv] projection reads only its rows and
columns. Formats that can read a box by itself (safetensors) read nothing else; the others
(GGUF, pytorch_model.bin) read one whole tensor at a time and cut the shards out of it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Sharding

from prompt_jax.models.base import Backbone, Params, dtype_of

log = logging.getLogger(__name__)

Index = tuple[slice, ...]  # a box of an array: one slice per dimension


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, or disagrees with its config or our key table."""


@dataclasses.dataclass
class Tensor:
    """A tensor in a checkpoint file, read on demand.

    Attributes:
      file: the file it is in.
      shape: its shape in the file.
      read: `read()` -> the whole tensor.
      read_box: `read_box(index)` -> only the box `index`, read from the file by itself; None
        for formats read a whole tensor at a time (GGUF, whose blocks are dequantized whole,
        and pytorch_model.bin).
    """

    file: Path
    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]
    read_box: Callable[[Index], np.ndarray] | None = None


@dataclasses.dataclass(frozen=True)
class Entry:
    """One parameter: our path <- checkpoint key ('{i}' = layer index, stacked on axis 0).

    kind: 'copy' (same shape), 'reshape' (flat -> ours, e.g. per-head biases),
      'linear1' / 'linear2' (a torch Linear weight [out, in], transposed, with 1 or 2 of our
      leading dims being inputs: [embed, heads, kv] and [heads, kv, embed]).
    aliases: other keys that hold the same tensor (tied copies); used when `key` is absent,
      checked equal when both are present.
    """

    path: tuple[str, ...]
    key: str
    kind: str = "copy"
    aliases: tuple[str, ...] = ()


def checkpoint_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape in the checkpoint of a param (one layer of it) of our `shape`."""
    if kind == "copy":
        return shape
    if kind == "reshape":
        return (math.prod(shape),)
    n_in = {"linear1": 1, "linear2": 2}[kind]
    return (math.prod(shape[n_in:]), math.prod(shape[:n_in]))


# --------------------------------------------------------------------------------------------
# Boxes: which part of the checkpoint tensor a box of our param needs
# --------------------------------------------------------------------------------------------


def _ranges(index: Index, dims: Sequence[int]) -> list[range]:
    return [range(*s.indices(n)) for s, n in zip(index, dims, strict=True)]


def _flat_positions(dims: Sequence[int], index: Index) -> np.ndarray:
    """Positions, in the row-major flattening of `dims`, of the elements of box `index`, in
    the box's own row-major order."""
    grid = np.ix_(*[np.asarray(r, np.int64) for r in _ranges(index, dims)])
    return np.ravel_multi_index(grid, tuple(dims)).ravel()


def _take(read: Callable[[Index], np.ndarray], positions: Sequence[np.ndarray]) -> np.ndarray:
    """The elements at `positions` (one increasing array per dimension) of a tensor, reading
    the smallest box that holds them: exactly them when each is a contiguous run (a shard of
    one sharded axis always is)."""
    box = tuple(slice(int(p[0]), int(p[-1]) + 1) for p in positions)
    values = read(box)
    if all(p.size == s.stop - s.start for p, s in zip(positions, box, strict=True)):
        return values
    return values[np.ix_(*[p - s.start for p, s in zip(positions, box, strict=True)])]


def read_ours(kind: str, read: Callable[[Index], np.ndarray], shape: tuple[int, ...],
              index: Index) -> np.ndarray:
    """Box `index` of one layer of our param, of our (per-layer) `shape`, from a checkpoint
    tensor stored as `kind` says, through `read(box)` of the checkpoint tensor."""
    box_shape = tuple(len(r) for r in _ranges(index, shape))
    if kind == "copy":
        return read(index)
    if kind == "reshape":  # flat in the checkpoint
        return _take(read, [_flat_positions(shape, index)]).reshape(box_shape)
    n_in = {"linear1": 1, "linear2": 2}[kind]  # [out, in] in the checkpoint, transposed
    inputs = _flat_positions(shape[:n_in], index[:n_in])
    outputs = _flat_positions(shape[n_in:], index[n_in:])
    return _take(read, [outputs, inputs]).T.reshape(box_shape)


# --------------------------------------------------------------------------------------------
# The plan: every param's checkpoint tensors, checked before anything is read
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one param comes from: per layer (once when not stacked) the checkpoint key and
    tensor read, and the tied copies (key, tensor) checked equal to it."""

    path: tuple[str, ...]
    kind: str
    shape: tuple[int, ...]  # ours, with the leading layer axis when stacked
    stacked: bool
    layers: tuple[tuple[str, Tensor, tuple[tuple[str, Tensor], ...]], ...]

    def read(self, index: Index, dtype: np.dtype,
             read_box: Callable[[Tensor, Index], np.ndarray]) -> np.ndarray:
        """Box `index` of the param, in `dtype`, reading each tensor through `read_box`.

        Raises:
          CheckpointError: a tied copy differs from the tensor it should equal (in this box).
        """
        if not self.stacked:
            # A fresh array: never a view that keeps a whole tensor alive.
            return np.array(self._read_layer(0, self.shape, index, read_box), dtype)
        out = np.empty(tuple(len(r) for r in _ranges(index, self.shape)), dtype)
        for row, layer in enumerate(range(len(self.layers))[index[0]]):
            out[row] = self._read_layer(layer, self.shape[1:], index[1:], read_box)
        return out

    def _read_layer(self, layer: int, shape: tuple[int, ...], index: Index,
                    read_box: Callable[[Tensor, Index], np.ndarray]) -> np.ndarray:
        key, tensor, aliases = self.layers[layer]
        value = read_ours(self.kind, lambda box: read_box(tensor, box), shape, index)
        for alias, other in aliases:
            copy = read_ours(self.kind, lambda box, t=other: read_box(t, box), shape, index)
            if not np.array_equal(value, copy):
                raise CheckpointError(f"{other.file}: {alias} should equal {key} (tied "
                                      "weights) but differs")
        return value


def _matches(key: str, pattern: str) -> bool:
    if "{i}" not in pattern:
        return key == pattern
    head, tail = pattern.split("{i}")
    middle = key[len(head):len(key) - len(tail)]
    return key.startswith(head) and key.endswith(tail) and middle.isdigit()


def plan(model: Backbone, entries: list[Entry], ignored: list[str],
         tensors: dict[str, Tensor]) -> list[Source]:
    """Every param's source, checked against the checkpoint without reading any data.

    Raises:
      CheckpointError: a tensor of the wrong shape, a missing weight, or a checkpoint tensor
        the key table does not map (and `ignored` does not name); naming the file and keys.
    """
    shapes, _ = model.abstract_params()
    sources: list[Source] = []
    used: set[str] = set()
    missing: list[str] = []

    def find(key: str, entry: Entry, shape: tuple[int, ...]) -> Tensor | None:
        if key not in tensors:
            return None
        t = tensors[key]
        expected = checkpoint_shape(entry.kind, shape)
        if tuple(t.shape) != expected:
            raise CheckpointError(
                f"{t.file}: {key} has shape {tuple(t.shape)} but the config expects {expected} "
                f"({model.family}, param {'/'.join(entry.path)} {shape})"
            )
        used.add(key)
        return t

    for entry in entries:
        target = _get(shapes, entry.path)
        stacked = "{i}" in entry.key
        layer_shape = tuple(target.shape[1:] if stacked else target.shape)
        keys = ([entry.key.format(i=i) for i in range(target.shape[0])] if stacked
                else [entry.key])
        layers = []
        for key in keys:
            found = [(k, t) for k in (key, *entry.aliases)
                     if (t := find(k, entry, layer_shape)) is not None]
            if not found:
                missing.append(key)
                continue
            (first_key, first), *others = found
            layers.append((first_key, first, tuple(others)))
        if len(layers) == len(keys):
            sources.append(Source(entry.path, entry.kind, tuple(target.shape), stacked,
                                  tuple(layers)))
    if missing:
        files = sorted({str(t.file) for t in tensors.values()})
        raise CheckpointError(
            f"{', '.join(files)}: missing weights for {model.family}: {missing[:8]}"
            + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        )
    unmapped = sorted(
        k for k in tensors if k not in used and not any(_matches(k, pat) for pat in ignored)
    )
    if unmapped:
        files = sorted({str(tensors[k].file) for k in unmapped})
        raise CheckpointError(
            f"{', '.join(files)}: unmapped tensors (not in the {model.family} key table): "
            f"{unmapped[:8]}" + (f" and {len(unmapped) - 8} more" if len(unmapped) > 8 else "")
        )
    return sources


# --------------------------------------------------------------------------------------------
# Reading: whole arrays, or straight into shards
# --------------------------------------------------------------------------------------------


def place_by_shard(shape: tuple[int, ...], sharding: Sharding,
                   read: Callable[[Index], np.ndarray]) -> jax.Array:
    """A global array of `shape` laid out by `sharding`, each addressable shard read by itself
    (`read(index)`) and put on its device at once, so the host holds one shard at a time. A
    box that several devices hold (replicated over an axis) is read once and copied between
    devices. In a multi-process job each process reads only its own devices' shards."""
    placed: dict[tuple, jax.Array] = {}
    arrays = []
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        key = tuple((r.start, r.stop) for r in _ranges(index, shape))
        if key in placed:
            arrays.append(jax.device_put(placed[key], device))
        else:
            placed[key] = jax.device_put(read(tuple(slice(a, b) for a, b in key)), device)
            arrays.append(placed[key])
    return jax.make_array_from_single_device_arrays(shape, sharding, arrays)


def _box_reader() -> Callable[[Tensor, Index], np.ndarray]:
    """`read_box(tensor, box)`; a tensor whose format reads no box is read whole once and kept
    as long as this reader (one param's placement)."""
    whole: dict[int, np.ndarray] = {}

    def read_box(tensor: Tensor, box: Index) -> np.ndarray:
        if tensor.read_box is not None:
            return tensor.read_box(box)
        if id(tensor) not in whole:
            whole[id(tensor)] = tensor.read()
        return whole[id(tensor)][box]

    return read_box


def assemble_params(model: Backbone, entries: list[Entry], ignored: list[str],
                    tensors: dict[str, Tensor], param_dtype: str = "float32",
                    shardings: Params | None = None) -> Params:
    """Builds the param tree from checkpoint tensors following the key table, strictly.

    Args:
      model: the backbone (its abstract params give every shape).
      entries, ignored: the family's key table (e.g. `convert_llama.llama_table`).
      tensors: the checkpoint's tensors by key.
      param_dtype: the dtype the params are stored in.
      shardings: a `Sharding` per param (a tree like the params'): each param is read
        straight into its shards (see the module docstring). None: each param is read whole
        onto the default device.

    Raises:
      CheckpointError: see `plan`; or a tied copy that differs from its tensor.
    """
    sources = plan(model, entries, ignored, tensors)
    dtype = np.dtype(dtype_of(param_dtype))
    params: dict = {}
    for source in sources:
        read = functools.partial(source.read, dtype=dtype, read_box=_box_reader())
        if shardings is None:
            value = jnp.asarray(read(tuple(slice(None) for _ in source.shape)))
        else:
            value = place_by_shard(source.shape, _get(shardings, source.path), read)
        node = params
        for p in source.path[:-1]:
            node = node.setdefault(p, {})
        node[source.path[-1]] = value
    return params


def same_values(a: Tensor, b: Tensor, rows: int = 1024) -> bool:
    """Whether two checkpoint tensors hold the same values, compared `rows` leading rows at a
    time where both read by box (so two large tables are never both whole in memory)."""
    if tuple(a.shape) != tuple(b.shape):
        return False
    if a.read_box is None or b.read_box is None or not a.shape:
        return bool(np.array_equal(a.read(), b.read()))
    rest = tuple(slice(None) for _ in a.shape[1:])
    return all(np.array_equal(a.read_box((slice(i, i + rows), *rest)),
                              b.read_box((slice(i, i + rows), *rest)))
               for i in range(0, a.shape[0], rows))


def resolve_tying(config, tensors: dict[str, Tensor], head_key: str, embed_key: str):
    """Follows transformers: a config that ties the head but a checkpoint holding a different
    head matrix means the head is untied; a config that unties it needs the matrix."""
    if config.tie_word_embeddings and head_key in tensors and embed_key in tensors:
        head, embed = tensors[head_key], tensors[embed_key]
        if not same_values(head, embed):
            log.info("%s differs from %s: loading an untied output head", head_key, embed_key)
            return dataclasses.replace(config, tie_word_embeddings=False)
    return config


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree
