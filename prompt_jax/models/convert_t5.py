"""T5 checkpoints (Hugging Face) -> `T5`: the key table, and the config a checkpoint gives.

The shared input/output embedding is `shared.weight` (the encoder's and decoder's
`embed_tokens` are tied copies of it); an untied head is `lm_head.weight`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prompt_jax.models.assemble import Entry, Tensor, resolve_tying
from prompt_jax.models.t5 import T5Config


def t5_from_hf(hf: dict[str, Any], tensors: dict[str, Tensor], config_file: Path, dtype: str,
               param_dtype: str) -> tuple[T5Config, tuple[list[Entry], list[str]]]:
    """(config, key table) of a Hugging Face T5 checkpoint (`hf`: its config.json); the head
    is untied where the weights say so (see `resolve_tying`)."""
    del config_file  # (for the families whose config errors name it)
    config = T5Config.from_hf(hf, dtype=dtype, param_dtype=param_dtype)
    config = resolve_tying(config, tensors, "lm_head.weight", "shared.weight")
    return config, t5_table(config)


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
        ignored.append("lm_head.weight")  # checked equal to the embedding by `resolve_tying`
    else:
        e.append(Entry(("lm_head", "kernel"), "lm_head.weight", "linear1"))
    return e, ignored
