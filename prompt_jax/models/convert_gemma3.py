"""Gemma 3 text checkpoints (`Gemma3ForCausalLM`; Hugging Face or GGUF) -> `Gemma3`: the key
table and config of each. Llama's attention keys and GGUF names (`convert_llama`) serve for
what the two share; Gemma 3 adds its extra norms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prompt_jax.models.assemble import CheckpointError, Entry, Tensor, resolve_tying
from prompt_jax.models.checkpoint_files import gguf_getters, gguf_token_ids
from prompt_jax.models.convert_llama import GGUF_COMMON, GgufArch, decoder_attention_entries
from prompt_jax.models.gemma3 import Gemma3, Gemma3Config


def gemma3_from_hf(hf: dict[str, Any], tensors: dict[str, Tensor], config_file: Path,
                   dtype: str, param_dtype: str
                   ) -> tuple[Gemma3Config, tuple[list[Entry], list[str]]]:
    """(config, key table) of a Hugging Face Gemma 3 text checkpoint (`hf`: its config.json);
    the head is untied where the weights say so (see `resolve_tying`).

    Raises:
      CheckpointError: naming `config_file`, for a config Gemma3Config rejects.
    """
    try:
        config = Gemma3Config.from_hf(hf, dtype=dtype, param_dtype=param_dtype)
    except ValueError as e:
        raise CheckpointError(f"{config_file}: {e}") from None
    config = resolve_tying(config, tensors, "lm_head.weight", "model.embed_tokens.weight")
    return config, gemma3_table(config)


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
    e += decoder_attention_entries(lay, cfg.attention_bias)
    for name in ("gate", "up", "down"):
        e.append(Entry(("layers", "mlp", name, "kernel"), f"{lay}mlp.{name}_proj.weight",
                       "linear1"))
    ignored = []
    if cfg.tie_word_embeddings:
        ignored.append("lm_head.weight")  # checked equal to the embedding by `resolve_tying`
    else:
        e.append(Entry(("lm_head", "kernel"), "lm_head.weight", "linear1"))
    return e, ignored


# --------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------


def _gguf_gemma3_config(meta: dict, tensors: dict, path: Path, dtype: str, param_dtype: str):
    get, optional = gguf_getters(meta, path, "gemma3")
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
        **gguf_token_ids(meta, path),
        dtype=dtype,
        param_dtype=param_dtype,
    )


def _gguf_gemma3_tensor(config: Gemma3Config, name: str, t: Tensor) -> Tensor:
    if not name.endswith("norm.weight"):
        return t
    # llama.cpp stores Gemma's (1 + weight) norm scales with the 1 added.
    return Tensor(t.file, t.shape, lambda: t.read() - 1.0)


GEMMA3_GGUF = GgufArch(
    _gguf_gemma3_config,
    {**GGUF_COMMON, "post_attention_norm.weight": "post_attention_layernorm.weight",
     "ffn_norm.weight": "pre_feedforward_layernorm.weight",
     "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
     "attn_q_norm.weight": "self_attn.q_norm.weight",
     "attn_k_norm.weight": "self_attn.k_norm.weight"},
    _gguf_gemma3_tensor, Gemma3, gemma3_table, "gemma3_text")
