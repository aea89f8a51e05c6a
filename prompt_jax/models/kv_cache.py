"""Greedy decoding with a key/value cache: the cache-aware pieces under `Backbone.generate`.

Decoder-only families (Llama, Gemma 3) prefill once, then feed one token per step. The cache
is indexed by position, not by array slot: slot j of row b holds the keys and values of that
row's position j, whatever the padding of its input (rows are compacted to real tokens first)
and whatever the length of its prompt. So a row continues [its prompt's first p_b vectors,
its n_b real tokens] at position p_b + n_b, and Gemma 3's sliding windows, which count
positions, read slot distances. The cache is fixed-size [L, B, S, K, D] with
S = P + T + max_new_tokens - 1, so the step compiles once per input shape.

A prompt (a shared prefix) enters as its keys and values, computed once per batch from
[P, H] (or N prompts [N, P, H]) or given precomputed, e.g. once per prompt in a serving bank
(`Backbone.prefix_kv`, `serving.bank`). The loop itself (`greedy_loop`) is family-agnostic;
T5's cached decoder step is in `t5_cache`.

Shapes: L layers, B batch, T input length, P prompt length, S cache slots, K kv heads,
D head dim, V vocab, N new tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from prompt_jax.models.base import Params, dtype_of


@flax.struct.dataclass
class DecoderCache:
    """A decoder-only model's keys and values by position (a pytree, carried by the loop)."""

    keys: jax.Array  # [L, B, S, K, D]; slot j of row b: the key of its position j
    values: jax.Array  # [L, B, S, K, D]
    length: jax.Array  # [B] int32 filled slots = the position of the row's next token


def eos_array(eos_ids: int | Sequence[int] | jax.Array | None, config_eos: int | None
              ) -> jax.Array:
    """EOS ids as an int32 array [E] (the config's when None; [-1], never matched, when the
    config has none either)."""
    if eos_ids is None:
        eos_ids = -1 if config_eos is None else config_eos
    return jnp.atleast_1d(jnp.asarray(eos_ids, jnp.int32))


def greedy_loop(step: Callable[[Any, jax.Array], tuple[jax.Array, Any]], logits: jax.Array,
                cache: Any, max_new_tokens: int, eos_ids: jax.Array, pad_id: int | jax.Array,
                live: jax.Array | None = None, limit: int | jax.Array | None = None
                ) -> jax.Array:
    """Greedy continuation [B, N] from the first token's logits, one `step` per further token.

    Args:
      step: (cache, token ids [B]) -> (next logits [B, V], cache).
      logits: [B, V] logits of the first new token.
      cache: the state `step` carries.
      max_new_tokens: N, the buffer's (static) width.
      eos_ids: [E] int32; a row ends after emitting any of them (the EOS is kept).
      pad_id: what fills a row after its end.
      live: [B] bool, rows to decode (default all); the others (a bucket's padding rows) come
        back all `pad_id` and never keep the loop running.
      limit: at most this many tokens (traced; default N), so tasks whose maxima share a
        bucket N share one compiled loop.

    Returns:
      [B, N] int32 token ids; after a row's EOS (and from `limit` on), `pad_id`.
    """
    b = logits.shape[0]
    live = jnp.ones((b,), bool) if live is None else live.astype(bool)
    limit = max_new_tokens if limit is None else limit
    pad = jnp.asarray(pad_id, jnp.int32)
    first = jnp.where(live, jnp.argmax(logits, -1).astype(jnp.int32), pad)  # [B]
    tokens = jnp.full((b, max_new_tokens), pad, jnp.int32).at[:, 0].set(first)
    done = ~live | jnp.isin(first, eos_ids) | (limit <= 1)

    def more(state):
        i, _, done, _, _ = state
        return (i < jnp.minimum(limit, max_new_tokens)) & ~jnp.all(done)

    def body(state):
        i, tokens, done, last, cache = state
        logits, cache = step(cache, last)
        nxt = jnp.where(done, pad, jnp.argmax(logits, -1).astype(jnp.int32))  # [B]
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, nxt[:, None], i, axis=1)
        return i + 1, tokens, done | jnp.isin(nxt, eos_ids), nxt, cache

    state = (jnp.asarray(1, jnp.int32), tokens, done, first, cache)
    return jax.lax.while_loop(more, body, state)[1]


def compact_rows(embeds: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Moves each row's real tokens to its front, in order ([B, T, H], [B, T] -> same)."""
    order = jnp.argsort(mask <= 0, axis=1, stable=True)  # [B, T] real slots first
    return (jnp.take_along_axis(embeds, order[..., None], axis=1),
            jnp.take_along_axis(mask, order, axis=1))


def row_prefixes(model, params: Params, batch: int, prefix=None, prefix_lengths=None,
                 prefix_index=None, prefix_kv=None):
    """Each row's prompt keys and values ([L, B, P, K, D] each, or None without a prompt) and
    its prompt's length [B]. The prompts' keys and values are computed once here (one per
    prompt, not per row) unless `prefix_kv` brings them precomputed."""
    if prefix is not None and prefix_kv is not None:
        raise ValueError("give either prefix or prefix_kv, not both")
    if prefix is None and prefix_kv is None:
        return None, jnp.zeros((batch,), jnp.int32)
    if prefix_kv is None:
        prefix_kv = model.prefix_kv(params, prefix.astype(dtype_of(model.config.dtype)),
                                    prefix_lengths)  # [L, N, P, K, D] each
    n, p = prefix_kv[0].shape[1:3]
    if prefix_lengths is None:
        prefix_lengths = jnp.full((n,), p, jnp.int32)
    if prefix_index is None:
        if n != 1:
            raise ValueError(f"{n} prompts need prefix_index [B], the prompt of each row")
        prefix_index = jnp.zeros((batch,), jnp.int32)
    kv = tuple(jnp.take(t, prefix_index, axis=1) for t in prefix_kv)  # [L, B, P, K, D]
    return kv, jnp.take(prefix_lengths, prefix_index).astype(jnp.int32)


def decoder_prefill(model, params: Params, embeds: jax.Array, mask: jax.Array, extra: int,
                    **prefix_kwargs) -> tuple[jax.Array, DecoderCache]:
    """Runs a decoder-only model over its rows after their prompts, once.

    Args:
      model: a `Llama` or `Gemma3` backbone.
      embeds: [B, T, H] embedded input tokens, padded anywhere (mask [B, T]); every row needs
        a real token.
      extra: cache slots kept free for the tokens to come.
      prefix_kwargs: the prompt, as `row_prefixes` takes it (`prefix`, `prefix_lengths`,
        `prefix_index`, `prefix_kv`); none for no prompt.

    Returns:
      (logits [B, V] float32 of each row's first new token, the cache: P + T + extra slots).
    """
    b, t, _ = embeds.shape
    embeds, mask = compact_rows(embeds, mask)
    n = jnp.sum(mask > 0, axis=1).astype(jnp.int32)  # [B] real tokens
    kv, p_len = row_prefixes(model, params, b, **prefix_kwargs)
    positions = p_len[:, None] + jnp.arange(t)[None]  # [B, T]
    if kv is None:
        p, prefix_mask = 0, None
    else:
        p = kv[0].shape[2]
        prefix_mask = jnp.arange(p)[None] < p_len[:, None]  # [B, P]
    hidden, own = model._apply(params, embeds, mask, positions, True, kv,
                               prefix_mask=prefix_mask, method="hidden")  # [B, T, H]
    sources = own if kv is None else tuple(
        jnp.concatenate([a.astype(o.dtype), o], axis=2) for a, o in zip(kv, own, strict=True))
    # Slot j holds position j: the prompt's slot j below p_b, text token j - p_b above it.
    j = jnp.arange(p + t + extra)[None]  # [1, S]
    src = jnp.clip(jnp.where(j < p_len[:, None], j, j - p_len[:, None] + p), 0, p + t - 1)
    keys, values = (jnp.take_along_axis(x, src[None, :, :, None, None], axis=2)
                    for x in sources)  # [L, B, S, K, D]
    last = jnp.maximum(n - 1, 0)
    h_last = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]  # [B, H]
    logits = model._apply(params, h_last, method="head").astype(jnp.float32)  # [B, V]
    return logits, DecoderCache(keys, values, p_len + n)


def decoder_step(model, params: Params, cache: DecoderCache, ids: jax.Array
                 ) -> tuple[jax.Array, DecoderCache]:
    """Feeds one token per row ([B]) at its next position: (logits [B, V] float32, the cache
    with the token's keys and values written at that position)."""
    b, s = cache.length.shape[0], cache.keys.shape[2]
    x = model.embed(params, ids[:, None])  # [B, 1, H]
    visible = jnp.arange(s)[None] < cache.length[:, None]  # [B, S]
    hidden, own = model._apply(params, x, jnp.ones((b, 1), jnp.int32), cache.length[:, None],
                               True, (cache.keys, cache.values), prefix_mask=visible,
                               method="hidden")  # [B, 1, H], ([L, B, 1, K, D]) * 2
    rows = jnp.arange(b)
    keys = cache.keys.at[:, rows, cache.length].set(own[0][:, :, 0].astype(cache.keys.dtype))
    values = cache.values.at[:, rows, cache.length].set(
        own[1][:, :, 0].astype(cache.values.dtype))
    logits = model._apply(params, hidden[:, 0], method="head").astype(jnp.float32)  # [B, V]
    return logits, DecoderCache(keys, values, cache.length + 1)


def decoder_generate(model, params: Params, embeds: jax.Array, mask: jax.Array,
                     max_new_tokens: int, *, eos_ids=None, pad_id=None, live=None, limit=None,
                     **prefix_kwargs) -> jax.Array:
    """`Backbone.generate` of decoder-only families: prefill, then `greedy_loop` over
    `decoder_step`. Returns [B, max_new_tokens] int32 (see `greedy_loop`)."""
    cfg = model.config
    if pad_id is None:
        pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    logits, cache = decoder_prefill(model, params, embeds, mask, max(max_new_tokens - 1, 0),
                                    **prefix_kwargs)
    step = lambda cache, ids: decoder_step(model, params, cache, ids)  # noqa: E731
    return greedy_loop(step, logits, cache, max_new_tokens, eos_array(eos_ids, cfg.eos_token_id),
                       pad_id, live, limit)
