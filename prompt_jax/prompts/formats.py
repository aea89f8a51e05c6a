"""Readers and writers for each soft-prompt file format; `prompt_io` is the public face.

Everything here treats files as untrusted: sizes are checked against headers before reading,
PyTorch pickles go through `torch_pickle`'s restricted unpickler, numpy object arrays are
refused, and writes go through a temporary file.
"""

from __future__ import annotations

import json
import math
import os
import re
import tokenize
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from prompt_jax.prompts.safetensors_file import open_safetensors
from prompt_jax.prompts.torch_pickle import load_torch_file

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_OPTIONS = ("task_type", "base_model_name_or_path", "revision", "tokenizer_name_or_path",
                "num_attention_heads", "num_layers")

# PEFT's task_type for each backbone family: the default of a PEFT adapter written for it.
PEFT_TASK_TYPES = {"t5": "SEQ_2_SEQ_LM", "llama": "CAUSAL_LM", "gemma3": "CAUSAL_LM"}

_FLOAT_DTYPES = {np.dtype(d) for d in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)}


def is_float(dtype: np.dtype) -> bool:
    """float16/bfloat16/float32/float64, in either byte order."""
    return dtype.newbyteorder("=") in _FLOAT_DTYPES


_PROMPT_NAME = re.compile(
    r"(?:^|[./])(?:soft_embeds|prompt_embeddings(?:\.weight)?|soft_prompt(?:\.weight)?|"
    r"prefix_shared|prompt_encoder\.[^./]+\.embedding\.weight|prompt)$"
)


class PromptFormatError(ValueError):
    """A file is not a readable soft prompt, or is ambiguous about which tensor is the prompt."""


class PromptShapeError(ValueError):
    """A prompt's shape does not fit the backbone it is meant for."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def sniff(path: Path) -> str | None:
    """The format a file's first bytes announce: npy, zip, safetensors, json, or None."""
    with open(path, "rb") as f:
        return sniff_bytes(f.read(16))


def sniff_bytes(head: bytes) -> str | None:
    """The format that bytes starting a file announce (see `sniff`)."""
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 2**27:
        return "safetensors"
    if head.lstrip()[:1] in (b"{", b"[", b'"'):
        return "json"
    return None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts / lists -> {"a/b/0": leaf}; a bare leaf -> {"": leaf}."""
    if isinstance(tree, Mapping):
        items = ((str(k), v) for k, v in tree.items())
    elif isinstance(tree, list | tuple):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out = {}
    for name, value in items:
        out.update(flatten(value, f"{prefix}/{name}" if prefix else name))
    return out


def describe(leaves: Mapping[str, Any], limit: int = 20) -> str:
    """`[name (shape), ...]` of a container's tensors, for error messages."""
    shown = [f"{name or '<root>'} {tuple(getattr(v, 'shape', ()))}"
             for name, v in list(leaves.items())[:limit]]
    more = f", ... ({len(leaves) - limit} more)" if len(leaves) > limit else ""
    return "[" + ", ".join(shown) + more + "]"


def select_tensor(leaves: Mapping[str, Any], key: str | None, path: Path,
                  aliases: Mapping[str, str] | None = None) -> tuple[str, Any]:
    """Picks the prompt tensor in a container: by key, the only tensor, or the only prompt name.

    Returns (name, tensor); the name is "" for a file that holds a bare tensor.
    """
    arrays = {k: v for k, v in leaves.items() if hasattr(v, "shape")}
    if key is not None:
        name = key if key in arrays else (aliases or {}).get(key)
        if name is None:
            raise PromptFormatError(f"{path}: no tensor {key!r}; it holds {describe(arrays)}")
        return name, arrays[name]
    if len(arrays) == 1:
        return next(iter(arrays.items()))
    named = [k for k in arrays if _PROMPT_NAME.search(k)]
    if len(named) == 1:
        return named[0], arrays[named[0]]
    which = "several tensors look like a prompt" if named else "no tensor is named like a prompt"
    raise PromptFormatError(
        f"{path}: {which}: {describe({k: arrays[k] for k in named} if named else arrays)}; "
        f"pick one with {path}::KEY"
    )


def sidecar_path(path: Path) -> Path:
    """`x.npy` -> `x.json`; an extension-less `x` -> `x.json`."""
    return path.with_suffix(".json") if path.suffix == ".npy" else Path(f"{path}.json")


def read_npy(path: Path, key: str | None) -> tuple[np.ndarray, str, dict]:
    """A numpy file (never unpickling), and its JSON sidecar if there is one."""
    if key is not None:
        raise PromptFormatError(f"{path}: a numpy file holds one array; drop '::{key}'")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
        # numpy parses the header's Python literal: a corrupt one can raise any of these.
        except (ValueError, SyntaxError, TypeError, tokenize.TokenError, OverflowError,
                RecursionError, MemoryError) as e:
            raise PromptFormatError(f"{path}: corrupt numpy header: {type(e).__name__}: "
                                    f"{e}") from None
        data_start = f.tell()
    if dtype.hasobject:
        raise PromptFormatError(f"{path}: numpy object arrays are pickles; refusing to load")
    if any(n < 0 for n in shape):
        raise PromptFormatError(f"{path}: numpy header declares the shape {shape}")
    needed = data_start + math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if needed != path.stat().st_size:
        raise PromptFormatError(
            f"{path}: numpy header declares {shape} {dtype} ({needed} bytes with the header) "
            f"but the file has {path.stat().st_size} bytes"
        )
    array = np.load(path, allow_pickle=False, mmap_mode="r")
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return np.array(array), "npy", {}
    try:
        meta = json.loads(sidecar.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PromptFormatError(
            f"{sidecar}: sidecar of {path.name} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise PromptFormatError(f"{sidecar}: sidecar of {path.name} must be a JSON object")
    for field, size in (("length", shape[0] if shape else None),
                        ("d_model", shape[1] if len(shape) > 1 else None)):
        if field in meta and meta[field] != size:
            raise PromptFormatError(
                f"{sidecar}: says {field}={meta[field]} but {path.name} has shape {shape}"
            )
    return np.array(array), "prompt_jax", meta


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file (header and offsets validated by `safetensors`)."""
    return {name: read() for name, (_, read) in open_safetensors(path, PromptFormatError).items()}


def read_peft(folder: Path, key: str | None) -> tuple[np.ndarray, str, dict]:
    """A PEFT PROMPT_TUNING adapter folder, its tensor checked against its config."""
    config_path = folder / PEFT_CONFIG
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PromptFormatError(f"{config_path}: not valid JSON: {e}") from None
    if not isinstance(config, dict) or config.get("peft_type") != "PROMPT_TUNING":
        peft_type = config.get("peft_type") if isinstance(config, dict) else None
        raise PromptFormatError(
            f"{config_path}: peft_type {peft_type!r} is not a soft prompt (PROMPT_TUNING)"
        )
    weights = next((folder / n for n in PEFT_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise PromptFormatError(f"{folder}: PEFT adapter without {' or '.join(PEFT_WEIGHTS)}")
    tensors = (read_safetensors(weights) if weights.suffix == ".safetensors"
               else flatten(load_torch_file(weights)))
    if "prompt_embeddings" not in tensors:
        raise PromptFormatError(
            f"{weights}: no 'prompt_embeddings' tensor; it holds {describe(tensors)}"
        )
    embeddings = tensors["prompt_embeddings"]
    tokens, width = config.get("num_virtual_tokens"), config.get("token_dim")
    modules = config.get("num_transformer_submodules") or 1
    valid = isinstance(tokens, int) and modules in (1, 2)
    if not valid or embeddings.shape != (tokens * modules, width):
        raise PromptFormatError(
            f"{weights}: prompt_embeddings has shape {embeddings.shape} but {PEFT_CONFIG} "
            f"declares num_virtual_tokens={tokens} x num_transformer_submodules={modules}, "
            f"token_dim={width}"
        )
    parts = {"encoder": embeddings[:tokens], "decoder": embeddings[tokens:]}
    if modules == 1 and key is None:
        array = embeddings
    elif modules == 2 and key in parts:
        array = parts[key]
    else:
        raise PromptFormatError(
            f"{folder}: num_transformer_submodules={modules}: " + (
                f"the adapter holds one prompt; drop '::{key}'" if modules == 1 else
                f"it holds an encoder and a decoder prompt; pick one with {folder}::encoder "
                f"or {folder}::decoder")
        )
    meta = {k: config[k] for k in ("task_type", "base_model_name_or_path", "num_virtual_tokens",
                                   "num_transformer_submodules", "token_dim") if k in config}
    return array, "peft", {**meta, **({"key": key} if key else {})}


def orbax_item_dir(folder: Path) -> Path | None:
    """The folder holding an orbax PyTree (its `_METADATA`): `folder`, or its one item folder."""
    if (folder / "_METADATA").is_file():
        return folder
    if not (folder / "_CHECKPOINT_METADATA").is_file():
        return None
    items = sorted(p for p in folder.iterdir() if (p / "_METADATA").is_file())
    if len(items) != 1:
        raise PromptFormatError(
            f"{folder}: orbax checkpoint with {len(items)} PyTree items "
            f"{[p.name for p in items]}; give the item folder, e.g. {folder}/<item>"
        )
    return items[0]


def read_orbax(folder: Path, key: str | None) -> tuple[np.ndarray, str, dict]:
    """One variable of an orbax PyTree checkpoint, restored alone (partial restore)."""
    import orbax.checkpoint as ocp

    checkpointer = ocp.PyTreeCheckpointer()
    try:
        tree = checkpointer.metadata(folder).item_metadata.tree
    except Exception as e:  # orbax raises many types for unreadable folders
        raise PromptFormatError(f"{folder}: unreadable orbax checkpoint: {e}") from None
    leaves = flatten(tree)
    aliases = {name.replace("/", "."): name for name in leaves}
    name, _ = select_tensor(leaves, key, folder, aliases)
    parts = name.split("/")

    def nest(leaf):
        for part in reversed(parts):
            leaf = {part: leaf}
        return leaf

    args = ocp.args.PyTreeRestore(
        item=nest(leaves[name]), restore_args=nest(ocp.RestoreArgs(restore_type=np.ndarray)),
        partial_restore=True,
    )
    try:
        restored = checkpointer.restore(folder, args=args)
    except Exception as e:
        raise PromptFormatError(f"{folder}: cannot restore {name}: {e}") from None
    for part in parts:
        restored = restored[part]
    return np.asarray(restored), "orbax", {"key": name}


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_atomic(path: Path, overwrite: bool, write) -> None:
    """Writes through a temporary file, so a failed write never leaves a half file at `path`."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (overwrite=True replaces it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_npy(tmp: Path, array: np.ndarray) -> None:
    """`np.save` to exactly `tmp`."""
    with open(tmp, "wb") as f:  # a file object: numpy adds no `.npy` to the name
        np.save(f, array, allow_pickle=False)


def write_peft(array: np.ndarray, folder: Path, metadata: dict, overwrite: bool) -> list[Path]:
    """Writes `adapter_model.safetensors` + `adapter_config.json` for `PeftModel`."""
    from safetensors.numpy import save_file

    unknown = sorted(set(metadata) - set(PEFT_OPTIONS))
    if unknown:
        raise PromptFormatError(
            f"{folder}: PEFT adapter_config.json takes {', '.join(PEFT_OPTIONS)}; got {unknown}"
        )
    config = {
        "peft_type": "PROMPT_TUNING", "task_type": None, "inference_mode": True,
        "num_virtual_tokens": array.shape[0], "token_dim": array.shape[1],
        # One prompt, on the encoder (Lester et al.); PEFT's seq2seq default of 2 would also
        # prepend a decoder prompt.
        "num_transformer_submodules": 1,
        "num_attention_heads": None, "num_layers": None, "prompt_tuning_init": "RANDOM",
        "base_model_name_or_path": None, "revision": None, **metadata,
    }
    weights, config_path = folder / PEFT_WEIGHTS[0], folder / PEFT_CONFIG
    for target in (weights, config_path):
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target}: already exists (overwrite=True replaces it)")
    write_atomic(weights, True, lambda tmp: save_file({"prompt_embeddings": array}, str(tmp),
                                                metadata={"format": "pt"}))
    write_atomic(config_path, True,
           lambda tmp: tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"))
    return [weights, config_path]
