"""Pretrained checkpoints -> (backbone, param pytree).

Sources: a Hugging Face directory (config.json + model.safetensors or pytorch_model.bin, sharded
index files too), a hub id when online, and GGUF files (llama.cpp; dequantized with `gguf`).

Each family has ONE explicit key table (our param path <- checkpoint key). Loading raises
`CheckpointError` naming the file and the key for anything unmapped, missing or of the wrong
shape; a missing weight is never filled with random values, and nothing is returned
half-loaded. `models.assemble` reads the tables: whole params, or (`load_pretrained(mesh=)`)
each device's shard read from the file by itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from jax.sharding import Mesh

from prompt_jax.models.assemble import (
    CheckpointError,
    Entry,
    Tensor,
    assemble_params,
    same_values,
)
from prompt_jax.models.base import Backbone, Params
from prompt_jax.models.gemma3 import Gemma3, Gemma3Config
from prompt_jax.models.llama import Llama, LlamaConfig
from prompt_jax.models.roberta import Roberta, RobertaConfig
from prompt_jax.models.t5 import T5, T5Config
from prompt_jax.prompts.safetensors_file import open_safetensors
from prompt_jax.prompts.torch_pickle import TorchFileError, UnsafePickleError, load_torch_file

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("t5", "roberta", "xlm-roberta", "bert", "llama", "gemma3_text")


# --------------------------------------------------------------------------------------------
# Reading tensors
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Key tables
# --------------------------------------------------------------------------------------------


def _decoder_attention_entries(lay: str, bias: bool) -> list[Entry]:
    """Llama-style `self_attn.{q,k,v,o}_proj` (and biases) of layer prefix `lay`."""
    e = []
    for ours, theirs in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj")):
        e.append(Entry(("layers", "attn", ours, "kernel"), f"{lay}self_attn.{theirs}.weight",
                       "linear1"))
        if bias:
            e.append(Entry(("layers", "attn", ours, "bias"), f"{lay}self_attn.{theirs}.bias",
                           "reshape"))
    e.append(Entry(("layers", "attn", "o", "kernel"), lay + "self_attn.o_proj.weight", "linear2"))
    if bias:
        e.append(Entry(("layers", "attn", "o", "bias"), lay + "self_attn.o_proj.bias"))
    return e


def llama_table(cfg: LlamaConfig) -> tuple[list[Entry], list[str]]:
    """(entries, ignored key patterns) for Hugging Face Llama checkpoints."""
    lay = "model.layers.{i}."
    e = [
        Entry(("embed_tokens", "embedding"), "model.embed_tokens.weight"),
        Entry(("final_norm", "scale"), "model.norm.weight"),
        Entry(("layers", "attn_norm", "scale"), lay + "input_layernorm.weight"),
        Entry(("layers", "mlp_norm", "scale"), lay + "post_attention_layernorm.weight"),
    ]
    e += _decoder_attention_entries(lay, cfg.attention_bias)
    for name in ("gate", "up", "down"):
        e.append(Entry(("layers", "mlp", name, "kernel"), f"{lay}mlp.{name}_proj.weight",
                       "linear1"))
        if cfg.mlp_bias:
            e.append(Entry(("layers", "mlp", name, "bias"), f"{lay}mlp.{name}_proj.bias"))
    ignored = [lay + "self_attn.rotary_emb.inv_freq"]  # a buffer in old checkpoints
    if cfg.tie_word_embeddings:
        ignored.append("lm_head.weight")  # checked equal to the embedding by `_resolve_tying`
    else:
        e.append(Entry(("lm_head", "kernel"), "lm_head.weight", "linear1"))
    return e, ignored


def gemma3_table(cfg: Gemma3Config) -> tuple[list[Entry], list[str]]:
    """(entries, ignored key patterns) for Hugging Face Gemma 3 text checkpoints
    (`Gemma3ForCausalLM`)."""
    lay = "model.layers.{i}."
    e = [
        Entry(("embed_tokens", "embedding"), "model.embed_tokens.weight"),
        Entry(("final_norm", "scale"), "model.norm.weight"),
    ]
    for ours, theirs in ((("attn_norm",), "input_layernorm"),
                         (("post_attn_norm",), "post_attention_layernorm"),
                         (("mlp_norm",), "pre_feedforward_layernorm"),
                         (("post_mlp_norm",), "post_feedforward_layernorm"),
                         (("attn", "q_norm"), "self_attn.q_norm"),
                         (("attn", "k_norm"), "self_attn.k_norm")):
        e.append(Entry(("layers", *ours, "scale"), f"{lay}{theirs}.weight"))
    e += _decoder_attention_entries(lay, cfg.attention_bias)
    for name in ("gate", "up", "down"):
        e.append(Entry(("layers", "mlp", name, "kernel"), f"{lay}mlp.{name}_proj.weight",
                       "linear1"))
    ignored = []
    if cfg.tie_word_embeddings:
        ignored.append("lm_head.weight")  # checked equal to the embedding by `_resolve_tying`
    else:
        e.append(Entry(("lm_head", "kernel"), "lm_head.weight", "linear1"))
    return e, ignored


def t5_table(cfg: T5Config) -> tuple[list[Entry], list[str]]:
    """(entries, ignored key patterns) for Hugging Face T5 checkpoints."""
    e = [Entry(("shared", "embedding"), "shared.weight",
               aliases=("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"))]
    for stack in ("encoder", "decoder"):
        blk = f"{stack}.block.{{i}}.layer."
        e += [
            Entry((stack, "relpos_bias", "embedding"),
                  f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
            Entry((stack, "final_norm", "scale"), f"{stack}.final_layer_norm.weight"),
            Entry((stack, "layers", "self_attn_norm", "scale"), blk + "0.layer_norm.weight"),
        ]
        attns = [("self_attn", blk + "0.SelfAttention")]
        ff = blk + "1"
        if stack == "decoder":
            attns.append(("cross_attn", blk + "1.EncDecAttention"))
            e.append(Entry((stack, "layers", "cross_attn_norm", "scale"),
                           blk + "1.layer_norm.weight"))
            ff = blk + "2"
        for ours, theirs in attns:
            for p in ("q", "k", "v"):
                e.append(Entry((stack, "layers", ours, p, "kernel"), f"{theirs}.{p}.weight",
                               "linear1"))
            e.append(Entry((stack, "layers", ours, "o", "kernel"), f"{theirs}.o.weight",
                           "linear2"))
        e.append(Entry((stack, "layers", "mlp_norm", "scale"), ff + ".layer_norm.weight"))
        wis = ("wi_0", "wi_1") if cfg.is_gated else ("wi",)
        for w in (*wis, "wo"):
            e.append(Entry((stack, "layers", "mlp", w, "kernel"),
                           f"{ff}.DenseReluDense.{w}.weight", "linear1"))
    # Hugging Face ignores this one too: cross-attention has no position bias.
    ignored = ["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"]
    if cfg.tie_word_embeddings:
        ignored.append("lm_head.weight")  # checked equal to the embedding by `_resolve_tying`
    else:
        e.append(Entry(("lm_head", "kernel"), "lm_head.weight", "linear1"))
    return e, ignored


def roberta_table(cfg: RobertaConfig, prefix: str) -> tuple[list[Entry], list[str]]:
    """(entries, ignored key patterns) for Hugging Face BERT / RoBERTa checkpoints."""
    p, lay = prefix, prefix + "encoder.layer.{i}."

    def linear(path, key, kind="linear1"):
        return [Entry(path + ("kernel",), key + ".weight", kind),
                Entry(path + ("bias",), key + ".bias", "reshape" if kind == "linear1" else "copy")]

    def norm(path, key):
        return [Entry(path + ("scale",), key + ".weight"), Entry(path + ("bias",), key + ".bias")]

    e = [
        Entry(("word_embeddings", "embedding"), p + "embeddings.word_embeddings.weight"),
        Entry(("position_embeddings", "embedding"), p + "embeddings.position_embeddings.weight"),
        Entry(("token_type_embeddings", "embedding"),
              p + "embeddings.token_type_embeddings.weight"),
        *norm(("embed_norm",), p + "embeddings.LayerNorm"),
        *linear(("layers", "q"), lay + "attention.self.query"),
        *linear(("layers", "k"), lay + "attention.self.key"),
        *linear(("layers", "v"), lay + "attention.self.value"),
        Entry(("layers", "o", "kernel"), lay + "attention.output.dense.weight", "linear2"),
        Entry(("layers", "o", "bias"), lay + "attention.output.dense.bias"),
        *norm(("layers", "attn_norm"), lay + "attention.output.LayerNorm"),
        Entry(("layers", "wi", "kernel"), lay + "intermediate.dense.weight", "linear1"),
        Entry(("layers", "wi", "bias"), lay + "intermediate.dense.bias"),
        Entry(("layers", "wo", "kernel"), lay + "output.dense.weight", "linear1"),
        Entry(("layers", "wo", "bias"), lay + "output.dense.bias"),
        *norm(("layers", "mlp_norm"), lay + "output.LayerNorm"),
    ]
    # Buffers and heads prompt tuning never uses: the pooler and BERT's next-sentence head.
    ignored = [p + "embeddings.position_ids", p + "embeddings.token_type_ids",
               p + "pooler.dense.weight", p + "pooler.dense.bias",
               "cls.seq_relationship.weight", "cls.seq_relationship.bias"]
    if cfg.mlm_head:
        head = _mlm_head_keys(cfg.variant)
        e += [
            Entry(("mlm_dense", "kernel"), head["dense"] + ".weight", "linear1"),
            Entry(("mlm_dense", "bias"), head["dense"] + ".bias"),
            *norm(("mlm_norm",), head["norm"]),
        ]
        if cfg.tie_word_embeddings:
            e.append(Entry(("mlm_bias",), head["bias"], aliases=(head["decoder"] + ".bias",)))
            # Checked equal to the word embeddings by `_resolve_tying`.
            ignored.append(head["decoder"] + ".weight")
        else:
            # transformers 5 ties the decoder bias to the head's `bias` only when the head is
            # tied; an untied head computes `decoder(x)` with its own bias and never reads
            # `bias` (transformers 4 checkpoints hold the two equal).
            e += [Entry(("mlm_decoder", "kernel"), head["decoder"] + ".weight", "linear1"),
                  Entry(("mlm_bias",), head["decoder"] + ".bias")]
            ignored.append(head["bias"])
    return e, ignored


def _mlm_head_keys(variant: str) -> dict[str, str]:
    if variant == "roberta":
        return {"dense": "lm_head.dense", "norm": "lm_head.layer_norm", "bias": "lm_head.bias",
                "decoder": "lm_head.decoder"}
    return {"dense": "cls.predictions.transform.dense",
            "norm": "cls.predictions.transform.LayerNorm", "bias": "cls.predictions.bias",
            "decoder": "cls.predictions.decoder"}


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


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


def _build(family_cls, config, table_fn, tensors, param_dtype, *table_args,
           mesh: Mesh | None = None) -> tuple:
    model = family_cls(config)
    entries, ignored = table_fn(config, *table_args)
    shardings = None
    if mesh is not None:
        from prompt_jax import partitioning

        shardings = partitioning.param_shardings(model, mesh)
    return model, assemble_params(model, entries, ignored, tensors, param_dtype, shardings)


def _resolve_tying(config, tensors: dict[str, Tensor], head_key: str, embed_key: str):
    """Follows transformers: a config that ties the head but a checkpoint holding a different
    head matrix means the head is untied; a config that unties it needs the matrix."""
    if config.tie_word_embeddings and head_key in tensors and embed_key in tensors:
        head, embed = tensors[head_key], tensors[embed_key]
        if not same_values(head, embed):
            log.info("%s differs from %s: loading an untied output head", head_key, embed_key)
            return dataclasses.replace(config, tie_word_embeddings=False)
    return config


def _load_hf_dir(path: Path, dtype: str, param_dtype: str, mesh: Mesh | None) -> Pretrained:
    hf = _read_config(path)
    tensors = read_hf_weights(path)
    kinds = dict(dtype=dtype, param_dtype=param_dtype)
    try:
        if hf["model_type"] == "t5":
            config = _resolve_tying(T5Config.from_hf(hf, **kinds), tensors, "lm_head.weight",
                                    "shared.weight")
            model, params = _build(T5, config, t5_table, tensors, param_dtype, mesh=mesh)
        elif hf["model_type"] == "llama":
            config = _resolve_tying(LlamaConfig.from_hf(hf, **kinds), tensors, "lm_head.weight",
                                    "model.embed_tokens.weight")
            model, params = _build(Llama, config, llama_table, tensors, param_dtype, mesh=mesh)
        elif hf["model_type"] == "gemma3_text":
            try:
                config = Gemma3Config.from_hf(hf, **kinds)
            except ValueError as e:
                raise CheckpointError(f"{path / 'config.json'}: {e}") from None
            config = _resolve_tying(config, tensors, "lm_head.weight",
                                    "model.embed_tokens.weight")
            model, params = _build(Gemma3, config, gemma3_table, tensors, param_dtype,
                                   mesh=mesh)
        else:
            model, params = _load_encoder(hf, tensors, kinds, param_dtype, mesh)
    except KeyError as e:
        raise CheckpointError(f"{path / 'config.json'}: missing field {e}") from None
    return Pretrained(model, params, str(path), hf)


def _load_encoder(hf, tensors, kinds, param_dtype, mesh):
    prefixes = [p for p in ("", "bert.", "roberta.") if p + "embeddings.word_embeddings.weight"
                in tensors]
    if not prefixes:
        files = sorted({str(t.file) for t in tensors.values()})
        raise CheckpointError(f"{', '.join(files)}: missing weights: no "
                              "embeddings.word_embeddings.weight under any known prefix")
    config = RobertaConfig.from_hf(hf, **kinds)
    head = _mlm_head_keys(config.variant)
    has_head = any(k.startswith((head["dense"], head["norm"], head["bias"])) for k in tensors)
    if not has_head:
        log.info("no masked-LM head in the checkpoint: loading the encoder only")
    config = dataclasses.replace(config, mlm_head=has_head)
    if has_head:
        config = _resolve_tying(config, tensors, head["decoder"] + ".weight",
                                prefixes[0] + "embeddings.word_embeddings.weight")
    return _build(Roberta, config, roberta_table, tensors, param_dtype, prefixes[0], mesh=mesh)


def _gguf_getters(meta: dict, path: Path, arch: str):
    """(required, optional) readers of `{arch}.*` GGUF fields (see `gguf_field`)."""
    def get(key, kind):
        return gguf_field(meta, f"{arch}.{key}", kind, path)

    def optional(key, kind, default):
        value = gguf_field(meta, f"{arch}.{key}", kind, path, required=False)
        return default if value is None else value

    return get, optional


def _gguf_token_ids(meta: dict, path: Path) -> dict[str, int | None]:
    return {f"{name}_token_id": gguf_field(meta, f"tokenizer.ggml.{gguf_name}_token_id", int,
                                           path, required=False)
            for name, gguf_name in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"))}


def _gguf_llama_config(meta: dict, tensors: dict, path: Path, dtype: str, param_dtype: str):
    get, optional = _gguf_getters(meta, path, "llama")
    heads = get("attention.head_count", int)
    hidden = get("embedding_length", int)
    return LlamaConfig(
        # Required by the GGUF spec for llama: block_count, context_length, embedding_length,
        # feed_forward_length, attention.head_count, attention.layer_norm_rms_epsilon.
        # Optional, and defaulted only when absent (a present but undecodable or mistyped
        # value raises): vocab_size (the rows of token_embd), attention.head_count_kv (spec:
        # absent means no grouped-query attention), attention.key_length and rope.freq_base
        # (not in the spec's llama list; llama.cpp defaults them to embedding_length /
        # head_count and 10000), and the tokenizer's special-token ids.
        vocab_size=optional("vocab_size", int, tensors["token_embd.weight"].shape[0]),
        hidden_size=hidden,
        intermediate_size=get("feed_forward_length", int),
        num_hidden_layers=get("block_count", int),
        num_attention_heads=heads,
        num_key_value_heads=optional("attention.head_count_kv", int, heads),
        head_dim=optional("attention.key_length", int, hidden // heads),
        rms_norm_eps=get("attention.layer_norm_rms_epsilon", float),
        rope_theta=optional("rope.freq_base", float, 10000.0),
        max_position_embeddings=get("context_length", int),
        tie_word_embeddings="output.weight" not in tensors,
        **_gguf_token_ids(meta, path),
        dtype=dtype,
        param_dtype=param_dtype,
    )


def _gguf_gemma3_config(meta: dict, tensors: dict, path: Path, dtype: str, param_dtype: str):
    get, optional = _gguf_getters(meta, path, "gemma3")
    heads = get("attention.head_count", int)
    hidden = get("embedding_length", int)
    layers = get("block_count", int)
    head_dim = optional("attention.key_length", int, hidden // heads)
    scaling = optional("rope.scaling.type", str, "none")
    if scaling not in ("none", "linear"):
        raise CheckpointError(f"{path}: gemma3.rope.scaling.type={scaling!r} is not supported "
                              "(none or linear)")
    return Gemma3Config(
        # GGUF does not store what llama.cpp hard-codes for Gemma 3, and we follow llama.cpp:
        # every 6th layer global, local RoPE base 10000, attention scaled by 1/sqrt(head_dim)
        # (by 1/sqrt(embedding_length / head_count) for the 62-layer 27B model).
        vocab_size=optional("vocab_size", int, tensors["token_embd.weight"].shape[0]),
        hidden_size=hidden,
        intermediate_size=get("feed_forward_length", int),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=optional("attention.head_count_kv", int, heads),
        head_dim=head_dim,
        rms_norm_eps=get("attention.layer_norm_rms_epsilon", float),
        rope_theta=optional("rope.freq_base", float, 1_000_000.0),
        rope_type="default" if scaling == "none" else "linear",
        rope_scaling=() if scaling == "none" else (
            ("factor", get("rope.scaling.factor", float)),),
        rope_local_theta=10_000.0,
        query_pre_attn_scalar=float(hidden // heads if layers == 62 else head_dim),
        sliding_window=get("attention.sliding_window", int),
        final_logit_softcapping=optional("final_logit_softcapping", float, None),
        max_position_embeddings=get("context_length", int),
        tie_word_embeddings="output.weight" not in tensors,
        **_gguf_token_ids(meta, path),
        dtype=dtype,
        param_dtype=param_dtype,
    )


def _gguf_llama_tensor(config: LlamaConfig, name: str, t: Tensor) -> Tensor:
    heads = {"attn_q.weight": config.num_attention_heads,
             "attn_k.weight": config.num_key_value_heads}.get(name)
    if heads is None:
        return t
    return Tensor(t.file, t.shape, lambda: unpermute_rope_rows(t.read(), heads))


def _gguf_gemma3_tensor(config: Gemma3Config, name: str, t: Tensor) -> Tensor:
    if not name.endswith("norm.weight"):
        return t
    # llama.cpp stores Gemma's (1 + weight) norm scales with the 1 added.
    return Tensor(t.file, t.shape, lambda: t.read() - 1.0)


@dataclasses.dataclass(frozen=True)
class _GgufArch:
    """How one `general.architecture` of GGUF becomes one of our families."""

    config: Callable  # (meta, tensors, path, dtype, param_dtype) -> config
    names: dict[str, str]  # GGUF tensor name (per layer: after "blk.N.") -> Hugging Face key
    tensor: Callable  # (config, GGUF per-layer name, Tensor) -> Tensor in Hugging Face layout
    family: type
    table: Callable
    model_type: str  # as in Hugging Face config.json


_GGUF_COMMON = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
}

_GGUF_ARCHS = {
    "llama": _GgufArch(
        _gguf_llama_config,
        {**_GGUF_COMMON, "ffn_norm.weight": "post_attention_layernorm.weight"},
        _gguf_llama_tensor, Llama, llama_table, "llama"),
    "gemma3": _GgufArch(
        _gguf_gemma3_config,
        {**_GGUF_COMMON, "post_attention_norm.weight": "post_attention_layernorm.weight",
         "ffn_norm.weight": "pre_feedforward_layernorm.weight",
         "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
         "attn_q_norm.weight": "self_attn.q_norm.weight",
         "attn_k_norm.weight": "self_attn.k_norm.weight"},
        _gguf_gemma3_tensor, Gemma3, gemma3_table, "gemma3_text"),
}


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undoes llama.cpp's q/k row permutation (interleaved RoPE -> Hugging Face rotate-half)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


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
    model, params = _build(arch.family, config, arch.table, tensors, param_dtype, mesh=mesh)
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
