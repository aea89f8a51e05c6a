"""Llama checkpoints -> `Llama`: the Hugging Face key table and config, and GGUF's.

A GGUF file is read as the Hugging Face checkpoint it was converted from: each `GgufArch`
renames its tensors to Hugging Face keys (undoing what llama.cpp changed, e.g. the q/k row
order for its interleaved RoPE) and builds the config from GGUF metadata, so one key table
serves both. Gemma 3 (`convert_gemma3`) reuses the decoder pieces here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from prompt_jax.models.assemble import Entry, Tensor, resolve_tying
from prompt_jax.models.checkpoint_files import gguf_getters, gguf_token_ids
from prompt_jax.models.llama import Llama, LlamaConfig


def llama_from_hf(hf: dict[str, Any], tensors: dict[str, Tensor], config_file: Path,
                  dtype: str, param_dtype: str
                  ) -> tuple[LlamaConfig, tuple[list[Entry], list[str]]]:
    """(config, key table) of a Hugging Face Llama checkpoint (`hf`: its config.json); the
    head is untied where the weights say so (see `resolve_tying`)."""
    del config_file  # (for the families whose config errors name it)
    config = LlamaConfig.from_hf(hf, dtype=dtype, param_dtype=param_dtype)
    config = resolve_tying(config, tensors, "lm_head.weight", "model.embed_tokens.weight")
    return config, llama_table(config)


def decoder_attention_entries(lay: str, bias: bool) -> list[Entry]:
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
    e += decoder_attention_entries(lay, cfg.attention_bias)
    for name in ("gate", "up", "down"):
        e.append(Entry(("layers", "mlp", name, "kernel"), f"{lay}mlp.{name}_proj.weight",
                       "linear1"))
        if cfg.mlp_bias:
            e.append(Entry(("layers", "mlp", name, "bias"), f"{lay}mlp.{name}_proj.bias"))
    ignored = [lay + "self_attn.rotary_emb.inv_freq"]  # a buffer in old checkpoints
    if cfg.tie_word_embeddings:
        ignored.append("lm_head.weight")  # checked equal to the embedding by `resolve_tying`
    else:
        e.append(Entry(("lm_head", "kernel"), "lm_head.weight", "linear1"))
    return e, ignored


# --------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GgufArch:
    """How one `general.architecture` of GGUF becomes one of our families."""

    config: Callable  # (meta, tensors, path, dtype, param_dtype) -> config
    names: dict[str, str]  # GGUF tensor name (per layer: after "blk.N.") -> Hugging Face key
    tensor: Callable  # (config, GGUF per-layer name, Tensor) -> Tensor in Hugging Face layout
    family: type
    table: Callable
    model_type: str  # as in Hugging Face config.json


GGUF_COMMON = {
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


def _gguf_llama_config(meta: dict, tensors: dict, path: Path, dtype: str, param_dtype: str):
    get, optional = gguf_getters(meta, path, "llama")
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
        **gguf_token_ids(meta, path),
        dtype=dtype,
        param_dtype=param_dtype,
    )


def _gguf_llama_tensor(config: LlamaConfig, name: str, t: Tensor) -> Tensor:
    heads = {"attn_q.weight": config.num_attention_heads,
             "attn_k.weight": config.num_key_value_heads}.get(name)
    if heads is None:
        return t
    return Tensor(t.file, t.shape, lambda: unpermute_rope_rows(t.read(), heads))


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undoes llama.cpp's q/k row permutation (interleaved RoPE -> Hugging Face rotate-half)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


LLAMA_GGUF = GgufArch(
    _gguf_llama_config,
    {**GGUF_COMMON, "ffn_norm.weight": "post_attention_layernorm.weight"},
    _gguf_llama_tensor, Llama, llama_table, "llama")
