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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prompt_jax.prompts.formats import (
    PEFT_CONFIG,
    PEFT_OPTIONS,
    PEFT_WEIGHTS,
    PromptFormatError,
    PromptShapeError,
    flatten,
    is_float,
    orbax_item_dir,
    read_npy,
    read_orbax,
    read_peft,
    read_safetensors,
    select_tensor,
    sidecar_path,
    sniff,
    write_atomic,
    write_npy,
    write_peft,
)
from prompt_jax.prompts.torch_pickle import load_torch_file, save_torch_file

__all__ = [
    "PEFT_CONFIG", "PEFT_OPTIONS", "PEFT_WEIGHTS", "SIDECAR_FIELDS", "WRITABLE_FORMATS",
    "LoadedPrompt", "PromptFormatError", "PromptShapeError", "load_prompt", "load_prompt_for",
    "save_prompt", "sidecar_path", "sniff", "split_spec", "validate_prompt",
]

WRITABLE_FORMATS = ("npy", "prompt_jax", "torch", "peft")
SIDECAR_FIELDS = ("backbone", "d_model", "length", "init", "task", "template", "steps", "score")


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


def load_prompt(path_or_spec: str | os.PathLike) -> LoadedPrompt:
    """Reads a soft prompt in any supported format (see the module docstring).

    Args:
      path_or_spec: a file or folder, optionally `PATH::KEY` to pick the tensor in a container.

    Returns:
      The prompt as float32 [P, H] with its format and metadata.

    Raises:
      FileNotFoundError: nothing at the path.
      PromptFormatError: unknown or unreadable format (a truncated or corrupt safetensors
        file too), not 2-D, not floating point, non-finite values, or no single tensor that
        is clearly the prompt.
      UnsafePickleError: a PyTorch pickle names a global outside the tensor allowlist.
      TorchFileError: a corrupt PyTorch file.
    """
    path, key = split_spec(path_or_spec)
    source = f"{path}::{key}" if key is not None else str(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / PEFT_CONFIG).is_file():
            array, fmt, meta = read_peft(path, key)
        elif (item := orbax_item_dir(path)) is not None:
            array, fmt, meta = read_orbax(item, key)
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
        array, fmt, meta = read_npy(path, key)
    elif kind == "safetensors" and (path.parent / PEFT_CONFIG).exists() \
            and path.name in PEFT_WEIGHTS:
        array, fmt, meta = read_peft(path.parent, key)
    elif kind in ("zip", "safetensors"):
        leaves = flatten(load_torch_file(path)) if kind == "zip" else read_safetensors(path)
        name, array = select_tensor(leaves, key, path)
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
    if not is_float(array.dtype):
        raise PromptFormatError(f"{source}: prompt dtype {array.dtype} is not floating point")
    out = np.array(array, dtype=np.float32)
    if not np.isfinite(out).all():
        raise PromptFormatError(f"{source}: the prompt holds NaN or infinite values")
    out.flags.writeable = False
    return LoadedPrompt(out, fmt, {**meta, "dtype": str(array.dtype)}, source)


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def _as_array(prompt: LoadedPrompt | Any) -> np.ndarray:
    array = prompt.array if isinstance(prompt, LoadedPrompt) else np.asarray(prompt)
    if array.ndim != 2 or 0 in array.shape or not is_float(array.dtype):
        raise PromptShapeError(
            f"a prompt to save is a non-empty floating-point [length, d_model] array; got "
            f"shape {array.shape} {array.dtype}"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def save_prompt(prompt: LoadedPrompt | Any, path: str | os.PathLike, *, format: str,
                metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> list[Path]:
    """Writes a prompt as float32 in one of `WRITABLE_FORMATS`.

    `load_prompt` reads every one of them back bit-exactly.

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
        write = (lambda tmp: write_npy(tmp, array)) if format == "npy" else (
            lambda tmp: save_torch_file(tmp, array))
        write_atomic(path, overwrite, write)
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
        write_atomic(path, overwrite, lambda tmp: write_npy(tmp, array))
        write_atomic(sidecar, True, lambda tmp: tmp.write_text(text))
        return [path, sidecar]
    if format == "peft":
        return write_peft(array, path, metadata, overwrite)
    raise PromptFormatError(f"{path}: cannot write format {format!r}; use one of "
                            f"{', '.join(WRITABLE_FORMATS)}")


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
