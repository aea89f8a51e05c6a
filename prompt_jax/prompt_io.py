"""Soft prompts in and out of the formats they are released in, read safely.

`load_prompt` detects the format from the file's content (not its name):

  npy          numpy `.npy`, or an extension-less numpy file (google-research/prompt-tuning
               writes `encoder.prompt.prompt.prompt`)
  prompt_jax   this project's `<name>.npy` plus a JSON sidecar `<name>.json`
  torch        a `torch.save` zip holding one tensor (Prompt-Transferability `task_prompt`,
               ATTEMPT `*_prompt.pt`) or a training checkpoint holding it under a key; read by
               `torch_pickle`'s restricted unpickler, never by `pickle.load`
  peft         a PEFT prompt-tuning adapter: `adapter_config.json` + `adapter_model.safetensors`
               (or `adapter_model.bin`), tensor `prompt_embeddings`
  safetensors  a bare `.safetensors` file
  orbax        an orbax (or T5X-on-orbax) checkpoint folder; the prompt variable is extracted
               by its tree path without reading the rest

A spec `PATH::KEY` picks the tensor inside a container: a `/`-separated path into a torch dict or
an orbax tree (`target/encoder/prompt/prompt/prompt`; orbax also takes the dotted form), a
safetensors tensor name, or `encoder` / `decoder` for a PEFT seq2seq adapter that holds both.
Without a key, a container must hold exactly one tensor whose name looks like a prompt
(`soft_embeds`, `prompt_embeddings`, `prompt`, ...); anything else is an error that lists the
candidates. Every prompt comes back as float32 [P, H]; the stored dtype is in `metadata`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from prompt_jax.torch_pickle import load_torch_file, save_torch_file

WRITABLE_FORMATS = ("npy", "prompt_jax", "torch", "peft")
SIDECAR_FIELDS = ("backbone", "d_model", "length", "init", "task", "template", "steps", "score")
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_OPTIONS = ("task_type", "base_model_name_or_path", "revision", "tokenizer_name_or_path",
                "num_attention_heads", "num_layers")

_FLOAT_DTYPES = {np.dtype(d) for d in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)}


def _is_float(dtype: np.dtype) -> bool:
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


@dataclasses.dataclass(frozen=True)
class LoadedPrompt:
    """A soft prompt read from disk.

    Attributes:
      array: float32 [P, H], read-only.
      format: one of npy, prompt_jax, torch, peft, safetensors, orbax.
      metadata: what the file carries (sidecar fields, PEFT config, the key it was found
        under, its stored dtype).
      source: the path it was read from (with `::KEY` when a key was given).
    """

    array: np.ndarray
    format: str
    metadata: dict[str, Any]
    source: str

    @property
    def length(self) -> int:
        return self.array.shape[0]

    @property
    def width(self) -> int:
        return self.array.shape[1]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def split_spec(path_or_spec: str | os.PathLike) -> tuple[Path, str | None]:
    """`PATH::KEY` -> (PATH, KEY); a path that exists as written is never split."""
    text = os.fspath(path_or_spec)
    if "::" in text and not Path(text).exists():
        path, key = text.rsplit("::", 1)
        return Path(path), key
    return Path(text), None


def sniff(path: Path) -> str | None:
    """The format a file's first bytes announce: npy, zip, safetensors, json, or None."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 2**27:
        return "safetensors"
    if head.lstrip()[:1] in (b"{", b"[", b'"'):
        return "json"
    return None


def load_prompt(path_or_spec: str | os.PathLike) -> LoadedPrompt:
    """Reads a soft prompt in any supported format (see the module docstring).

    Args:
      path_or_spec: a file or folder, optionally `PATH::KEY` to pick the tensor in a container.

    Returns:
      The prompt as float32 [P, H] with its format and metadata.

    Raises:
      FileNotFoundError: nothing at the path.
      PromptFormatError: unknown or unreadable format, not 2-D, not floating point,
        non-finite values, or no single tensor that is clearly the prompt.
      UnsafePickleError: a PyTorch pickle names a global outside the tensor allowlist.
      TorchFileError, CheckpointError: a corrupt PyTorch or safetensors file.
    """
    path, key = split_spec(path_or_spec)
    source = f"{path}::{key}" if key is not None else str(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / PEFT_CONFIG).is_file():
            array, fmt, meta = _load_peft(path, key)
        elif (item := _orbax_item_dir(path)) is not None:
            array, fmt, meta = _load_orbax(item, key)
        elif (path / "checkpoint").is_file():
            raise PromptFormatError(
                f"{path}: a legacy T5X checkpoint (msgpack `checkpoint` + tensorstore) is not "
                "read here; restore it with t5x and np.save the prompt, or re-save it with orbax"
            )
        else:
            raise PromptFormatError(
                f"{path}: a folder that is neither a PEFT adapter ({PEFT_CONFIG}) nor an orbax "
                "checkpoint (_METADATA); give the prompt file itself"
            )
        return _finish(array, fmt, meta, source)

    kind = sniff(path)
    if kind == "npy":
        array, fmt, meta = _load_npy(path, key)
    elif kind == "safetensors" and (path.parent / PEFT_CONFIG).exists() \
            and path.name in PEFT_WEIGHTS:
        array, fmt, meta = _load_peft(path.parent, key)
    elif kind in ("zip", "safetensors"):
        leaves = _flatten(load_torch_file(path)) if kind == "zip" else _read_safetensors(path)
        name, array = _select(leaves, key, path)
        fmt, meta = ("torch" if kind == "zip" else "safetensors"), ({"key": name} if name else {})
    elif kind == "json":
        raise PromptFormatError(
            f"{path}: a JSON file, not a soft prompt (a prompt is .npy, a PyTorch zip, "
            "safetensors, a PEFT adapter or an orbax checkpoint; a .json next to a .npy is its "
            "sidecar)"
        )
    else:
        raise PromptFormatError(
            f"{path}: unknown format (not numpy, a PyTorch zip checkpoint, safetensors, a PEFT "
            "adapter or an orbax checkpoint)"
        )
    return _finish(array, fmt, meta, source)


def _finish(array: np.ndarray, fmt: str, meta: dict, source: str) -> LoadedPrompt:
    array = np.asarray(array)
    if array.ndim != 2 or 0 in array.shape:
        raise PromptFormatError(
            f"{source}: a prompt is a 2-D [length, d_model] array; this one has shape "
            f"{array.shape}"
        )
    if not _is_float(array.dtype):
        raise PromptFormatError(f"{source}: prompt dtype {array.dtype} is not floating point")
    out = np.array(array, dtype=np.float32)
    if not np.isfinite(out).all():
        raise PromptFormatError(f"{source}: the prompt holds NaN or infinite values")
    out.flags.writeable = False
    return LoadedPrompt(out, fmt, {**meta, "dtype": str(array.dtype)}, source)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts / lists -> {"a/b/0": leaf}; a bare leaf -> {"": leaf}."""
    if isinstance(tree, Mapping):
        items = ((str(k), v) for k, v in tree.items())
    elif isinstance(tree, list | tuple):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out = {}
    for name, value in items:
        out.update(_flatten(value, f"{prefix}/{name}" if prefix else name))
    return out


def _describe(leaves: Mapping[str, Any], limit: int = 20) -> str:
    shown = [f"{name or '<root>'} {tuple(getattr(v, 'shape', ()))}"
             for name, v in list(leaves.items())[:limit]]
    more = f", ... ({len(leaves) - limit} more)" if len(leaves) > limit else ""
    return "[" + ", ".join(shown) + more + "]"


def _select(leaves: Mapping[str, Any], key: str | None, path: Path,
            aliases: Mapping[str, str] | None = None) -> tuple[str, Any]:
    """Picks the prompt tensor in a container: by key, the only tensor, or the only prompt name.

    Returns (name, tensor); the name is "" for a file that holds a bare tensor.
    """
    arrays = {k: v for k, v in leaves.items() if hasattr(v, "shape")}
    if key is not None:
        name = key if key in arrays else (aliases or {}).get(key)
        if name is None:
            raise PromptFormatError(f"{path}: no tensor {key!r}; it holds {_describe(arrays)}")
        return name, arrays[name]
    if len(arrays) == 1:
        return next(iter(arrays.items()))
    named = [k for k in arrays if _PROMPT_NAME.search(k)]
    if len(named) == 1:
        return named[0], arrays[named[0]]
    which = "several tensors look like a prompt" if named else "no tensor is named like a prompt"
    raise PromptFormatError(
        f"{path}: {which}: {_describe({k: arrays[k] for k in named} if named else arrays)}; "
        f"pick one with {path}::KEY"
    )


def sidecar_path(path: Path) -> Path:
    """`x.npy` -> `x.json`; an extension-less `x` -> `x.json`."""
    return path.with_suffix(".json") if path.suffix == ".npy" else Path(f"{path}.json")


def _load_npy(path: Path, key: str | None) -> tuple[np.ndarray, str, dict]:
    if key is not None:
        raise PromptFormatError(f"{path}: a numpy file holds one array; drop '::{key}'")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
        except ValueError as e:
            raise PromptFormatError(f"{path}: corrupt numpy header: {e}") from None
        data_start = f.tell()
    if dtype.hasobject:
        raise PromptFormatError(f"{path}: numpy object arrays are pickles; refusing to load")
    needed = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
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
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
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


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from prompt_jax.models.convert import read_safetensors

    return {name: tensor.read() for name, tensor in read_safetensors(path).items()}


def _load_peft(folder: Path, key: str | None) -> tuple[np.ndarray, str, dict]:
    config_path = folder / PEFT_CONFIG
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PromptFormatError(f"{config_path}: not valid JSON: {e}") from None
    if not isinstance(config, dict) or config.get("peft_type") != "PROMPT_TUNING":
        peft_type = config.get("peft_type") if isinstance(config, dict) else None
        raise PromptFormatError(
            f"{config_path}: peft_type {peft_type!r} is not a soft prompt (PROMPT_TUNING)"
        )
    weights = next((folder / n for n in PEFT_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise PromptFormatError(f"{folder}: PEFT adapter without {' or '.join(PEFT_WEIGHTS)}")
    tensors = (_read_safetensors(weights) if weights.suffix == ".safetensors"
               else _flatten(load_torch_file(weights)))
    if "prompt_embeddings" not in tensors:
        raise PromptFormatError(
            f"{weights}: no 'prompt_embeddings' tensor; it holds {_describe(tensors)}"
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


def _orbax_item_dir(folder: Path) -> Path | None:
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


def _load_orbax(folder: Path, key: str | None) -> tuple[np.ndarray, str, dict]:
    import orbax.checkpoint as ocp

    checkpointer = ocp.PyTreeCheckpointer()
    try:
        tree = checkpointer.metadata(folder).item_metadata.tree
    except Exception as e:  # orbax raises many types for unreadable folders
        raise PromptFormatError(f"{folder}: unreadable orbax checkpoint: {e}") from None
    leaves = _flatten(tree)
    aliases = {name.replace("/", "."): name for name in leaves}
    name, _ = _select(leaves, key, folder, aliases)
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
# Saving
# --------------------------------------------------------------------------------------------


def _as_array(prompt: LoadedPrompt | Any) -> np.ndarray:
    array = prompt.array if isinstance(prompt, LoadedPrompt) else np.asarray(prompt)
    if array.ndim != 2 or 0 in array.shape or not _is_float(array.dtype):
        raise PromptShapeError(
            f"a prompt to save is a non-empty floating-point [length, d_model] array; got "
            f"shape {array.shape} {array.dtype}"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _write(path: Path, overwrite: bool, write) -> None:
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


def _save_npy(tmp: Path, array: np.ndarray) -> None:
    with open(tmp, "wb") as f:  # a file object: numpy adds no `.npy` to the name
        np.save(f, array, allow_pickle=False)


def save_prompt(prompt: LoadedPrompt | Any, path: str | os.PathLike, *, format: str,
                metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> list[Path]:
    """Writes a prompt as float32 in one of `WRITABLE_FORMATS`; `load_prompt` reads it back
    bit-exactly.

    Args:
      prompt: a [P, H] floating-point array (numpy or jax) or a `LoadedPrompt`.
      path: the file to write; for `peft`, the adapter folder.
      format: `npy` (any file name; no metadata), `prompt_jax` (`<name>.npy` and its sidecar
        `<name>.json`: `SIDECAR_FIELDS` and any other JSON values), `torch` (a `torch.save`
        zip of one tensor, as Prompt-Transferability and ATTEMPT release), or `peft`
        (`adapter_config.json` + `adapter_model.safetensors`; metadata keys `PEFT_OPTIONS`).
      metadata: what the format carries (see `format`).
      overwrite: replace existing files.

    Returns:
      The files written.

    Raises:
      PromptShapeError: not a 2-D floating-point array.
      PromptFormatError: unknown format, or metadata the format cannot carry or that
        contradicts the array's shape.
      FileExistsError: a target exists and `overwrite` is False.
    """
    array, path, metadata = _as_array(prompt), Path(path), dict(metadata or {})
    length, width = array.shape
    if format in ("npy", "torch"):
        if metadata:
            raise PromptFormatError(
                f"{path}: the {format} format carries no metadata ({sorted(metadata)}); use "
                "format='prompt_jax' or 'peft'"
            )
        write = (lambda tmp: _save_npy(tmp, array)) if format == "npy" else (
            lambda tmp: save_torch_file(tmp, array))
        _write(path, overwrite, write)
        return [path]
    if format == "prompt_jax":
        if path.suffix != ".npy":
            raise PromptFormatError(f"{path}: a prompt_jax prompt is saved as <name>.npy")
        for field, size in (("length", length), ("d_model", width)):
            if metadata.setdefault(field, size) != size:
                raise PromptFormatError(
                    f"{path}: metadata says {field}={metadata[field]} but the prompt has shape "
                    f"{array.shape}"
                )
        try:
            text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
        except (TypeError, ValueError) as e:
            raise PromptFormatError(f"{path}: sidecar metadata is not JSON: {e}") from None
        sidecar = sidecar_path(path)
        if sidecar.exists() and not overwrite:
            raise FileExistsError(f"{sidecar}: already exists (overwrite=True replaces it)")
        _write(path, overwrite, lambda tmp: _save_npy(tmp, array))
        _write(sidecar, True, lambda tmp: tmp.write_text(text))
        return [path, sidecar]
    if format == "peft":
        return _save_peft(array, path, metadata, overwrite)
    raise PromptFormatError(f"{path}: cannot write format {format!r}; use one of "
                            f"{', '.join(WRITABLE_FORMATS)}")


def _save_peft(array: np.ndarray, folder: Path, metadata: dict, overwrite: bool) -> list[Path]:
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
    _write(weights, True, lambda tmp: save_file({"prompt_embeddings": array}, str(tmp),
                                                metadata={"format": "pt"}))
    _write(config_path, True,
           lambda tmp: tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"))
    return [weights, config_path]


# --------------------------------------------------------------------------------------------
# Validation against a backbone
# --------------------------------------------------------------------------------------------


def validate_prompt(prompt: LoadedPrompt | Any, model: Any, *, source: str | None = None) -> None:
    """Checks that a prompt fits a backbone: width == d_model, 1 <= length <= max_length.

    Args:
      prompt: a `LoadedPrompt` or a [P, H] array.
      model: a backbone (`prompt_jax.models.Backbone`: `family`, `d_model`, `max_length`).
      source: names the prompt in errors (default: the `LoadedPrompt`'s source).

    Raises:
      PromptShapeError: naming the file, its shape, the expected shape and the backbone family.
    """
    shape = tuple(np.shape(prompt.array if isinstance(prompt, LoadedPrompt) else prompt))
    if source is None:
        source = prompt.source if isinstance(prompt, LoadedPrompt) else "prompt"
    expected = f"expected (P, {model.d_model}) with 1 <= P <= {model.max_length}"
    problem = None
    if len(shape) != 2:
        problem = "is not 2-D"
    elif shape[1] != model.d_model:
        problem = f"has width {shape[1]}, not d_model {model.d_model}"
    elif not 1 <= shape[0] <= model.max_length:
        problem = f"has length {shape[0]}"
    if problem:
        raise PromptShapeError(
            f"{source}: prompt of shape {shape} {problem}: the {model.family} backbone "
            f"{expected}"
        )


def load_prompt_for(model: Any, path_or_spec: str | os.PathLike) -> LoadedPrompt:
    """Loads a prompt and checks it fits `model` (see `load_prompt`, `validate_prompt`)."""
    prompt = load_prompt(path_or_spec)
    validate_prompt(prompt, model)
    return prompt
