"""Pretrained checkpoints -> (backbone, param pytree).

Sources: a Hugging Face directory (config.json + model.safetensors or pytorch_model.bin, sharded
index files too), a hub id when online, and GGUF files (llama.cpp; dequantized with `gguf`).

Each family has ONE explicit key table (our param path <- checkpoint key), in its own module
(`convert_t5`, `convert_roberta`, `convert_llama`, `convert_gemma3`, which also say what config
a checkpoint gives); `checkpoint_files` reads the files. Loading raises `CheckpointError`
naming the file and the key for anything unmapped, missing or of the wrong shape; a missing
weight is never filled with random values, and nothing is returned half-loaded.
`models.assemble` reads the tables: whole params, or (`load_pretrained(mesh=)`) each device's
shard read from the file by itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from jax.sharding import Mesh

from prompt_jax.models.assemble import CheckpointError, Entry, Tensor, assemble_params
from prompt_jax.models.base import Backbone, Params
from prompt_jax.models.checkpoint_files import gguf_field, read_gguf, read_hf_weights
from prompt_jax.models.convert_gemma3 import GEMMA3_GGUF, gemma3_from_hf
from prompt_jax.models.convert_llama import LLAMA_GGUF, llama_from_hf
from prompt_jax.models.convert_roberta import roberta_from_hf
from prompt_jax.models.convert_t5 import t5_from_hf
from prompt_jax.models.gemma3 import Gemma3
from prompt_jax.models.llama import Llama
from prompt_jax.models.roberta import Roberta
from prompt_jax.models.t5 import T5

# Hugging Face config.json model_type -> (our family, its `*_from_hf`: (config.json dict,
# tensors, config file, dtype, param_dtype) -> (config, key table)).
_HF_FAMILIES = {
    "t5": (T5, t5_from_hf),
    "roberta": (Roberta, roberta_from_hf),
    "xlm-roberta": (Roberta, roberta_from_hf),
    "bert": (Roberta, roberta_from_hf),
    "llama": (Llama, llama_from_hf),
    "gemma3_text": (Gemma3, gemma3_from_hf),
}
SUPPORTED_MODEL_TYPES = tuple(_HF_FAMILIES)

# GGUF general.architecture -> how its files become one of our families.
_GGUF_ARCHS = {"llama": LLAMA_GGUF, "gemma3": GEMMA3_GGUF}


@dataclasses.dataclass
class Pretrained:
    """A loaded model: the backbone (static), its params (arrays) and where they came from."""

    model: Backbone
    params: Params
    source: str
    hf_config: dict[str, Any]


def load_pretrained(
    source: str | os.PathLike,
    *,
    dtype: str = "float32",
    param_dtype: str = "float32",
    revision: str | None = None,
    mesh: Mesh | None = None,
) -> Pretrained:
    """Loads a pretrained backbone from a HF directory, a .gguf file, or a hub id.

    Args:
      source: a directory with config.json (+ safetensors / pytorch_model.bin, sharded or not),
        a `.gguf` file (or a directory holding exactly one), or a hub id like "t5-small"
        (downloaded when the machine is online).
      dtype: compute dtype ("float32" or "bfloat16").
      param_dtype: dtype the params are stored in.
      revision: hub revision, for hub ids only.
      mesh: read each param straight into its shards over this ('data', 'model') mesh,
        following the rules table of `prompt_jax.partitioning`: each device gets only its
        slice, read from the file by itself (safetensors; GGUF and .bin read one whole tensor
        at a time), and the host never holds the whole model (see `models.assemble`). None:
        whole params on the default device.
    """
    path = Path(source).expanduser()
    if not path.exists():
        path = _download(str(source), revision)
    if path.is_file() and path.suffix == ".gguf":
        return _load_gguf(path, dtype, param_dtype, mesh)
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _load_gguf(ggufs[0], dtype, param_dtype, mesh)
        raise CheckpointError(f"{path}: no config.json (and not exactly one .gguf file)")
    if path.is_file():
        raise CheckpointError(f"{path}: expected a model directory or a .gguf file")
    return _load_hf_dir(path, dtype, param_dtype, mesh)


def _download(repo_id: str, revision: str | None) -> Path:
    if repo_id.count("/") > 1 or repo_id.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{repo_id}: no such file or directory")
    import huggingface_hub

    try:
        return Path(huggingface_hub.snapshot_download(
            repo_id, revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "*.gguf"],
        ))
    except Exception as e:  # offline, unknown repo, gated repo, ...
        raise CheckpointError(
            f"{repo_id}: not a local path, and downloading it from the Hugging Face hub failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Offline? Pass a "
            "local directory or .gguf file instead."
        ) from None


def _read_config(path: Path) -> dict[str, Any]:
    file = path / "config.json"
    try:
        hf = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON: {e}") from None
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"{file}: unknown architecture model_type={model_type!r} "
            f"(architectures={hf.get('architectures')}); supported: {SUPPORTED_MODEL_TYPES}"
        )
    return hf


def _build(family_cls, config, table: tuple[list[Entry], list[str]],
           tensors: dict[str, Tensor], param_dtype: str, mesh: Mesh | None) -> tuple:
    model = family_cls(config)
    entries, ignored = table
    shardings = None
    if mesh is not None:
        from prompt_jax import partitioning

        shardings = partitioning.param_shardings(model, mesh)
    return model, assemble_params(model, entries, ignored, tensors, param_dtype, shardings)


def _load_hf_dir(path: Path, dtype: str, param_dtype: str, mesh: Mesh | None) -> Pretrained:
    hf = _read_config(path)
    tensors = read_hf_weights(path)
    family, from_hf = _HF_FAMILIES[hf["model_type"]]
    try:
        config, table = from_hf(hf, tensors, path / "config.json", dtype, param_dtype)
        model, params = _build(family, config, table, tensors, param_dtype, mesh)
    except KeyError as e:
        raise CheckpointError(f"{path / 'config.json'}: missing field {e}") from None
    return Pretrained(model, params, str(path), hf)


def _load_gguf(path: Path, dtype: str, param_dtype: str, mesh: Mesh | None) -> Pretrained:
    meta, raw = read_gguf(path)
    arch_name = gguf_field(meta, "general.architecture", str, path)
    if arch_name not in _GGUF_ARCHS:
        raise CheckpointError(f"{path}: unknown architecture general.architecture="
                              f"{arch_name!r} (supported in GGUF: {', '.join(_GGUF_ARCHS)})")
    arch = _GGUF_ARCHS[arch_name]
    if "token_embd.weight" not in raw:
        raise CheckpointError(f"{path}: missing weights: token_embd.weight")
    config = arch.config(meta, raw, path, dtype, param_dtype)
    tensors = {}
    for name, t in raw.items():
        parts = name.split(".", 2)
        if name in arch.names:
            tensors[arch.names[name]] = arch.tensor(config, name, t)
        elif parts[0] == "blk" and len(parts) == 3 and parts[2] in arch.names:
            tensors[f"model.layers.{parts[1]}.{arch.names[parts[2]]}"] = arch.tensor(
                config, parts[2], t)
        else:
            tensors[name] = t  # reported as unmapped by assemble_params
    model, params = _build(arch.family, config, arch.table(config), tensors, param_dtype, mesh)
    hf = {"model_type": arch.model_type, **dataclasses.asdict(config)}
    return Pretrained(model, params, str(path), hf)


def load_tokenizer(source: str | os.PathLike):
    """The model's own tokenizer (transformers), from a HF directory, a .gguf file or a hub id."""
    from transformers import AutoTokenizer

    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            path = ggufs[0]
    if path.is_file() and path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return AutoTokenizer.from_pretrained(str(path) if path.exists() else str(source))
