"""Reading checkpoint files: a Hugging Face directory's weights (model.safetensors or
pytorch_model.bin, sharded with an index file or not) and GGUF files (llama.cpp; dequantized
with `gguf`), with GGUF's metadata read strictly (`gguf_field`).

Every reader returns lazy `Tensor`s (`models.assemble`) by checkpoint key and raises
`CheckpointError` naming the file for anything unreadable; what the keys mean is each family's
conversion (`models.convert_*`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from prompt_jax.models.assemble import CheckpointError, Tensor
from prompt_jax.prompts.safetensors_file import open_safetensors
from prompt_jax.prompts.torch_pickle import TorchFileError, UnsafePickleError, load_torch_file


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a .safetensors file (read lazily, whole or by box; header validated by
    `safetensors`)."""
    return {name: Tensor(path, shape, read, read_box=read)
            for name, (shape, read) in open_safetensors(path, CheckpointError).items()}


def read_torch_bin(path: Path) -> dict[str, Tensor]:
    """Reads a pytorch_model.bin state dict through the restricted unpickler (no torch)."""
    try:
        state = load_torch_file(path)
    except (TorchFileError, UnsafePickleError) as e:
        raise CheckpointError(str(e)) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    out = {}
    for name, value in state.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: entry {name!r} is {type(value).__name__}, not a tensor")
        out[name] = Tensor(path, value.shape, lambda v=value: v)
    return out


_WEIGHT_FILES = (
    ("model.safetensors.index.json", read_safetensors),
    ("model.safetensors", read_safetensors),
    ("pytorch_model.bin.index.json", read_torch_bin),
    ("pytorch_model.bin", read_torch_bin),
)


def read_hf_weights(directory: Path) -> dict[str, Tensor]:
    """All tensors of a Hugging Face model directory (single file or sharded with an index)."""
    for name, reader in _WEIGHT_FILES:
        path = directory / name
        if not path.exists():
            continue
        if not name.endswith(".index.json"):
            return reader(path)
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt index file: {e!r}") from None
        tensors: dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = directory / shard
            if not shard_path.exists():
                raise CheckpointError(f"{path}: lists shard {shard}, which does not exist")
            tensors.update(reader(shard_path))
        absent = sorted(set(weight_map) - set(tensors))
        if absent:
            raise CheckpointError(f"{path}: keys listed in the index are absent from their "
                                  f"shards: {absent[:5]}")
        return tensors
    raise CheckpointError(
        f"{directory}: no weights found (looked for {', '.join(n for n, _ in _WEIGHT_FILES)})"
    )


@dataclasses.dataclass(frozen=True)
class UndecodableField:
    """A GGUF metadata value the `gguf` reader could not decode (e.g. a string that is not
    UTF-8). Kept in the metadata so that reading the field raises, naming it."""

    reason: str


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """GGUF metadata and tensors (dequantized to float32 on read).

    A field that cannot be decoded maps to `UndecodableField`: `gguf_field` raises on it, so a
    field the model needs is never silently replaced by a default.
    """
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the reader raises assorted errors on bad bytes
        raise CheckpointError(
            f"{path}: not a readable GGUF file: {type(e).__name__}: {e}"
        ) from None
    meta: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if name.startswith("tokenizer.ggml.") and name not in _GGUF_TOKEN_IDS:
            continue  # large vocab arrays: the tokenizer is read by transformers
        try:
            meta[name] = field.contents()
        except Exception as e:  # noqa: BLE001 - e.g. UnicodeDecodeError; raised when read
            meta[name] = UndecodableField(f"{type(e).__name__}: {e}")
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))

        def dequantize(data, t=t):
            try:
                return gguf.quants.dequantize(data, t.tensor_type)
            except NotImplementedError as e:
                raise CheckpointError(f"{path}: tensor {t.name} is of GGUF type "
                                      f"{t.tensor_type.name}, which cannot be dequantized ({e})"
                                      ) from None

        dequantize(t.data[:1])  # an unsupported type fails here, before any other check

        def read(t=t, shape=shape, dequantize=dequantize):
            return dequantize(t.data).astype(np.float32).reshape(shape)

        tensors[t.name] = Tensor(path, shape, read)
    return meta, tensors


_GGUF_TOKEN_IDS = (
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id",
)

_GGUF_KINDS: dict[type, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,)}


def gguf_field(meta: dict[str, Any], key: str, kind: type, path: Path, *,
               required: bool = True) -> Any:
    """One GGUF metadata value, checked to be a `kind` (int, float or str).

    Args:
      meta: metadata from `read_gguf`.
      key: the full field name, e.g. "llama.rope.freq_base".
      kind: the Python type the value must have (an int is accepted for a float).
      path: the file, for error messages.
      required: raise when the field is absent (else return None).

    Raises:
      CheckpointError: naming the field and the file, when it is absent and required, cannot
        be decoded, or holds a value of another type.
    """
    if key not in meta:
        if required:
            raise CheckpointError(f"{path}: GGUF metadata lacks {key}")
        return None
    value = meta[key]
    if isinstance(value, UndecodableField):
        raise CheckpointError(f"{path}: GGUF metadata field {key} cannot be decoded "
                              f"({value.reason})")
    if isinstance(value, bool) or not isinstance(value, _GGUF_KINDS[kind]):
        raise CheckpointError(f"{path}: GGUF metadata field {key} holds {value!r} "
                              f"({type(value).__name__}), expected {kind.__name__}")
    return kind(value)


def gguf_getters(meta: dict, path: Path, arch: str):
    """(required, optional) readers of `{arch}.*` GGUF fields (see `gguf_field`)."""
    def get(key, kind):
        return gguf_field(meta, f"{arch}.{key}", kind, path)

    def optional(key, kind, default):
        value = gguf_field(meta, f"{arch}.{key}", kind, path, required=False)
        return default if value is None else value

    return get, optional


def gguf_token_ids(meta: dict, path: Path) -> dict[str, int | None]:
    """The tokenizer's special-token ids as config fields (bos/eos/pad_token_id; None when
    absent)."""
    return {f"{name}_token_id": gguf_field(meta, f"tokenizer.ggml.{gguf_name}_token_id", int,
                                           path, required=False)
            for name, gguf_name in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"))}

