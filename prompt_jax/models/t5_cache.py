"""T5's cached greedy decoding: the encoder once, every decoder layer's cross-attention keys
and values once, then one decoder token per step over a fixed-size self-attention cache.

The modules here read T5's own parameters (`params["decoder"]`, laid out by `t5.T5Stack`):
same names, other call structure. A soft prompt reaches T5 through the encoder input (see
`decoding.greedy`), so there is no prompt prefix to cache on the decoder side.

Shapes: L decoder layers, B batch, T encoder length, M decoder cache slots (= new tokens),
N heads, D head dim, H d_model, V vocab.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from prompt_jax.models import layers
from prompt_jax.models.base import Params, dtype_of
from prompt_jax.models.kv_cache import eos_array, greedy_loop
from prompt_jax.models.t5 import (
    T5MLP,
    T5Attention,
    T5Config,
    T5Module,
    relative_position_buckets,
)


@flax.struct.dataclass
class T5Cache:
    """The decoder's state between steps (a pytree, carried by the loop)."""

    keys: jax.Array  # [L, B, M, N, D] self-attention keys; slot i: decoder position i
    values: jax.Array  # [L, B, M, N, D]
    step: jax.Array  # int32 the position of the next decoder token


class _CrossKVBlock(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, carry, encoded):
        return carry, T5Attention(self.config, True, name="cross_attn").project_kv(encoded)


class CrossKV(nn.Module):
    """Every decoder layer's cross-attention keys and values of the encoder output (apply
    with `params["decoder"]`): [B, T, H] -> ([L, B, T, N, D]) * 2."""

    config: T5Config

    @nn.compact
    def __call__(self, encoded):
        cfg = self.config
        blocks = layers.scan_layers(_CrossKVBlock, cfg.num_decoder_layers, False,
                                    (nn.broadcast,))
        return blocks(cfg, name="layers")(jnp.zeros(()), encoded)[1]


class _CachedBlock(nn.Module):
    """`t5.T5Block` (decoder) for one new token, its self-attention over the cache."""

    config: T5Config

    @nn.compact
    def __call__(self, x, self_bias, cross_bias, step, cache):
        cfg = self.config
        self_k, self_v, cross_k, cross_v = cache  # [B, M, N, D] and [B, T, N, D]
        norm = partial(layers.RMSNorm, cfg.layer_norm_epsilon, dtype_of(cfg.dtype),
                       dtype_of(cfg.param_dtype))
        h = norm(name="self_attn_norm")(x)  # [B, 1, H]
        attn = T5Attention(cfg, True, name="self_attn")
        k, v = attn.project_kv(h)  # [B, 1, N, D]
        self_k = jax.lax.dynamic_update_slice_in_dim(self_k, k.astype(self_k.dtype), step, 1)
        self_v = jax.lax.dynamic_update_slice_in_dim(self_v, v.astype(self_v.dtype), step, 1)
        x = x + attn.attend(h, self_k, self_v, self_bias)
        h = norm(name="cross_attn_norm")(x)
        x = x + T5Attention(cfg, True, name="cross_attn").attend(h, cross_k, cross_v, cross_bias)
        x = x + T5MLP(cfg, True, name="mlp")(norm(name="mlp_norm")(x))
        return x, (self_k, self_v)


class DecoderStep(nn.Module):
    """`t5.T5Stack` (decoder) for one new token at position `step` (apply with
    `params["decoder"]`)."""

    config: T5Config

    @nn.compact
    def __call__(self, x, step, cache: T5Cache, cross, cross_bias):
        """x [B, 1, H] the new token's embedding; cross: ([L, B, T, N, D]) * 2; cross_bias
        [B, 1, 1, T]. Returns the final-normed hidden state [B, 1, H] and the self-attention
        keys and values ([L, B, M, N, D]) * 2 with the token's written at `step`."""
        cfg = self.config
        m = cache.keys.shape[2]
        relpos = layers.Embed(
            cfg.relative_attention_num_buckets, cfg.num_heads, ("relpos_buckets", "heads"),
            jnp.float32, dtype_of(cfg.param_dtype), name="relpos_bias",
        )
        buckets = relative_position_buckets(m, m, False, cfg.relative_attention_num_buckets,
                                            cfg.relative_attention_max_distance)  # [M, M]
        row = jnp.asarray(buckets)[step]  # [M] the query at `step` against every key slot
        position_bias = jnp.transpose(relpos(row))[None, :, None, :]  # [1, N, 1, M]
        causal = jnp.where(jnp.arange(m) <= step, 0.0, layers.MASK_VALUE)  # [M]
        self_bias = position_bias + causal.astype(jnp.float32)
        blocks = layers.scan_layers(_CachedBlock, cfg.num_decoder_layers, False,
                                    (nn.broadcast, nn.broadcast, nn.broadcast, 0))
        x, kv = blocks(cfg, name="layers")(x, self_bias, cross_bias, step,
                                           (cache.keys, cache.values, *cross))
        x = layers.RMSNorm(cfg.layer_norm_epsilon, dtype_of(cfg.dtype),
                           dtype_of(cfg.param_dtype), name="final_norm")(x)
        return x, kv


def generate(model, params: Params, embeds: jax.Array, mask: jax.Array, max_new_tokens: int, *,
             eos_ids=None, pad_id=None, live=None, limit=None) -> jax.Array:
    """`Backbone.generate` of T5: greedy decoding [B, max_new_tokens] int32 from encoder
    inputs [B, T, H] (mask [B, T]), starting from `decoder_start_token_id` (see
    `kv_cache.greedy_loop` for the other arguments)."""
    cfg = model.config
    b = embeds.shape[0]
    pad_id = cfg.pad_token_id if pad_id is None else pad_id
    encoded = model.encode(params, embeds, mask)  # [B, T, H]
    decoder = {"params": params["decoder"]}
    cross = CrossKV(cfg).apply(decoder, encoded)  # ([L, B, T, N, D]) * 2
    cross_bias = layers.attention_bias(mask)  # [B, 1, 1, T]
    shape = (cfg.num_decoder_layers, b, max_new_tokens, cfg.num_heads, cfg.d_kv)
    dtype = dtype_of(cfg.dtype)
    cache = T5Cache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.asarray(0, jnp.int32))

    def step(cache: T5Cache, ids: jax.Array) -> tuple[jax.Array, T5Cache]:
        x = model.embed(params, ids[:, None])  # [B, 1, H]
        hidden, (k, v) = DecoderStep(cfg).apply(decoder, x, cache.step, cache, cross,
                                                cross_bias)
        logits = model._apply(params, hidden[:, 0], method=T5Module.head)  # [B, V]
        return logits.astype(jnp.float32), T5Cache(k, v, cache.step + 1)

    logits, cache = step(cache, jnp.full((b,), cfg.decoder_start_token_id, jnp.int32))
    return greedy_loop(step, logits, cache, max_new_tokens,
                       eos_array(eos_ids, cfg.eos_token_id), pad_id, live, limit)
