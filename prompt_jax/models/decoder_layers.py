"""The layers a Llama-style decoder is built from, shared by Llama (`llama.py`) and Gemma 3
(`gemma3.py`): grouped-query attention with RoPE over the keys and values of an optional
shared prefix (a soft prompt computed once, `Llama.prefix_kv`), the gated FFN, and the causal
attention bias of rows that continue such a prefix.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from prompt_jax.models import layers
from prompt_jax.models.base import dtype_of, ffn_sown_name


class LlamaAttention(nn.Module):
    """Grouped-query attention with RoPE. Gemma 3 adds a per-head norm of queries and keys
    (`head_norm`, a module class) and passes each layer's RoPE frequencies."""

    config: Any  # LlamaConfig, or a config with the same attention fields (Gemma3Config)
    deterministic: bool
    head_norm: Any = None

    @nn.compact
    def __call__(self, x, bias, positions, prefix_kv=None, inv_freq=None):
        """Attention of x [B, T, H] over (prefix keys and values, if given) + x itself, with
        RoPE frequencies `inv_freq` [D / 2] (default: the config's).

        Returns the output [B, T, H] and this call's own (k, v), each [B, T, K, D].
        """
        cfg = self.config
        dense = partial(
            layers.Linear, use_bias=cfg.attention_bias, dtype=dtype_of(cfg.dtype),
            param_dtype=dtype_of(cfg.param_dtype),
        )
        d = cfg.kv_dim
        q = dense((cfg.num_attention_heads, d), ("embed",), ("heads", "kv"), name="q")(x)
        k = dense((cfg.num_key_value_heads, d), ("embed",), ("heads", "kv"), name="k")(x)
        v = dense((cfg.num_key_value_heads, d), ("embed",), ("heads", "kv"), name="v")(x)
        if self.head_norm is not None:
            q, k = self.head_norm(name="q_norm")(q), self.head_norm(name="k_norm")(k)
        if inv_freq is None:
            inv_freq = layers.rope_inverse_frequencies(
                d, cfg.rope_theta, cfg.rope_type, dict(cfg.rope_scaling)
            )
        q = layers.apply_rope(q, positions, inv_freq)  # [B, T, N, D]
        k = layers.apply_rope(k, positions, inv_freq)  # [B, T, K, D]
        keys, values = k, v
        if prefix_kv is not None:  # [1 or B, P, K, D] each
            b = x.shape[0]
            pk, pv = (jnp.broadcast_to(t, (b, *t.shape[1:])).astype(k.dtype) for t in prefix_kv)
            keys, values = jnp.concatenate([pk, k], 1), jnp.concatenate([pv, v], 1)
        drop = nn.Dropout(cfg.attention_dropout, deterministic=self.deterministic)
        out = layers.dot_product_attention(q, keys, values, bias, scale=cfg.attention_scale,
                                           dropout=drop)
        return dense((cfg.hidden_size,), ("heads", "kv"), ("embed",), name="o")(out), (k, v)


class LlamaMLP(nn.Module):
    config: Any  # LlamaConfig, or a config with the same FFN fields (Gemma3Config)

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dense = partial(
            layers.Linear, use_bias=cfg.mlp_bias, dtype=dtype_of(cfg.dtype),
            param_dtype=dtype_of(cfg.param_dtype),
        )
        f = (cfg.intermediate_size,)
        gate = dense(f, ("embed",), ("mlp",), name="gate")(x)  # [B, T, F]
        self.sow("intermediates", ffn_sown_name("pre_activation"), gate)
        h = layers.activation(cfg.hidden_act)(gate) * dense(f, ("embed",), ("mlp",), name="up")(x)
        self.sow("intermediates", ffn_sown_name("output_input"), h)  # [B, T, F]
        return dense((cfg.hidden_size,), ("mlp",), ("embed",), name="down")(h)


def decoder_attention_bias(mask, segment_ids=None, prefix_kv=None, prefix_mask=None):
    """Causal self-attention bias [B, 1, T, P + T] of a decoder's rows after an optional
    prefix (see `llama.LlamaModule.hidden` for the arguments): every real prefix slot is visible,
    the rows' own keys causally (within their segment, for packed rows)."""
    if segment_ids is None:
        bias = layers.attention_bias(mask, causal=True)  # [B, 1, T, T]
    else:
        bias = layers.segment_attention_bias(segment_ids)  # [B, 1, T, T]
    if prefix_kv is None:
        return bias
    p = prefix_kv[0].shape[2]
    if prefix_mask is None:
        prefix_bias = jnp.zeros((*bias.shape[:3], p), bias.dtype)
    else:  # a row's padded prefix slots are hidden from all its positions
        prefix_bias = jnp.broadcast_to(
            jnp.where(prefix_mask[:, None, None, :] > 0, 0.0, layers.MASK_VALUE),
            (*bias.shape[:3], p)).astype(bias.dtype)
    return jnp.concatenate([prefix_bias, bias], axis=-1)  # [B, 1, T, P + T]
