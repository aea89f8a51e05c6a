"""Decoder-only Llama family: RMSNorm, RoPE, grouped-query attention, SwiGLU, tied or untied
head. SmolLM2-135M is its real instance here. Its attention and FFN layers, which Gemma 3
shares, are in `decoder_layers`.

The soft prompt goes before the text; the verbalizer is the next token(s). Positions skip
padding (the i-th real token is at position i), so padding may sit anywhere in a row.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_jax.models import kv_cache, layers
from prompt_jax.models.base import (
    FlaxBackbone,
    Params,
    broadcast_candidates,
    candidate_totals,
    dtype_of,
    ffn_sown_name,
    token_log_probs,
)
from prompt_jax.models.decoder_layers import LlamaAttention, LlamaMLP, decoder_attention_bias


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Hyperparameters of a Llama-family model (names follow Hugging Face's LlamaConfig)."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int | None = None  # defaults to hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"  # "default" | "linear" | "llama3"
    rope_scaling: tuple[tuple[str, Any], ...] = ()  # extra RoPE parameters, as sorted items
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    attention_dropout: float = 0.0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    # The layer loop unrolled in the compiled program (the params stay stacked): XLA sees
    # every layer, as without scanned layers, at the cost of a longer compile.
    unroll_layers: bool = False
    # False: each layer's params apart (`layers.PerLayer`; `layers.split_layers` converts
    # stacked ones), a Python loop in the program: no weight sliced out of a stacked array.
    scan_layers: bool = True

    @property
    def kv_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def attention_scale(self) -> float:
        return self.kv_dim**-0.5

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> LlamaConfig:
        """Builds the config from a Hugging Face `config.json` dict (transformers 4 or 5)."""
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        heads = hf["num_attention_heads"]
        kwargs = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim"),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_type=rope_type,
            rope_scaling=tuple(sorted(rope.items())),
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            tie_word_embeddings=hf.get("tie_word_embeddings", False),
            attention_bias=hf.get("attention_bias", False),
            mlp_bias=hf.get("mlp_bias", False),
            hidden_act=hf.get("hidden_act", "silu"),
            bos_token_id=first_token_id(hf.get("bos_token_id")),
            eos_token_id=first_token_id(hf.get("eos_token_id")),
            pad_token_id=first_token_id(hf.get("pad_token_id")),
        )
        kwargs.update(overrides)
        return cls(**kwargs)


def first_token_id(x):
    """A config's token id, or the first of a list of them (e.g. several EOS ids)."""
    return x[0] if isinstance(x, (list, tuple)) else x


class LlamaBlock(nn.Module):
    config: LlamaConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x, bias, positions, prefix_kv):
        """One layer; `prefix_kv` is this layer's shared prefix (k, v) or None. Returns the new
        x and this layer's own (k, v) (stacked over layers by the scan)."""
        cfg = self.config
        norm = partial(
            layers.RMSNorm, cfg.rms_norm_eps, dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        )
        h = norm(name="attn_norm")(x)
        attn, kv = LlamaAttention(cfg, self.deterministic, name="attn")(h, bias, positions,
                                                                         prefix_kv)
        x = x + attn
        x = x + LlamaMLP(cfg, name="mlp")(norm(name="mlp_norm")(x))
        return x, kv


class LlamaModule(nn.Module):
    config: LlamaConfig

    def setup(self):
        cfg = self.config
        self.embed_tokens = layers.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=dtype_of(cfg.dtype),
            param_dtype=dtype_of(cfg.param_dtype),
        )
        self.final_norm = layers.RMSNorm(
            cfg.rms_norm_eps, dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        )
        if not cfg.tie_word_embeddings:
            self.lm_head = layers.Linear(
                (cfg.vocab_size,), ("embed",), ("vocab",), dtype=dtype_of(cfg.dtype),
                param_dtype=dtype_of(cfg.param_dtype),
            )

    def embed(self, ids):
        return self.embed_tokens(ids)

    @nn.compact
    def hidden(self, embeds, mask, positions, deterministic=True, prefix_kv=None,
               segment_ids=None, prefix_mask=None):
        """Final-normed hidden states [B, T, H] and every layer's (k, v) [L, B, T, K, D].

        `prefix_kv` ([L, 1, P, K, D] each, shared by all rows, or [L, B, P, K, D], one prefix
        per row): keys and values of a prefix (see `Llama.prefix_kv`), visible to every
        position except where `prefix_mask` ([B, P], default all 1) is 0. `segment_ids`
        [B, T]: packed rows (see `training.packing`), each token attending only within its own
        segment; `mask` is then ignored.
        """
        cfg = self.config
        bias = decoder_attention_bias(mask, segment_ids, prefix_kv, prefix_mask)
        blocks = layers.scan_layers(LlamaBlock, cfg.num_hidden_layers, cfg.remat,
                                    (nn.broadcast, nn.broadcast, 0), unroll=cfg.unroll_layers,
                                    per_layer=not cfg.scan_layers)
        x, kv = blocks(cfg, deterministic, name="layers")(embeds, bias, positions, prefix_kv)
        return self.final_norm(x), kv

    def head(self, hidden):
        if self.config.tie_word_embeddings:
            return self.embed_tokens.attend(hidden)
        return self.lm_head(hidden)

    def __call__(self, ids, mask, positions, deterministic=True):
        """Logits from token ids (used to create every parameter at init)."""
        return self.head(self.hidden(self.embed(ids), mask, positions, deterministic)[0])



class Llama(FlaxBackbone):
    """A Llama-family decoder behind the `Backbone` interface."""

    family = "llama"
    prompt_style = "causal"
    default_placement = "prefix"
    shares_prefix = True  # `score` / `hidden_states` accept `prefix=`: a prompt computed once
    packs = True  # `score_packed`: several examples per row (see prompt_jax.training.packing)

    def __init__(self, config: LlamaConfig):
        self.config = config
        self.module = LlamaModule(config)

    @property
    def d_model(self) -> int:
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_length(self) -> int:
        return self.config.max_position_embeddings

    def _dummy(self):
        ids = jnp.ones((1, 2), jnp.int32)
        return ids, ids, ids

    def embed(self, params: Params, ids: jax.Array) -> jax.Array:
        return self._apply(params, ids, method="embed")  # [B, T, H]

    def prefix_kv(self, params, prefix: jax.Array, prefix_lengths: jax.Array | None = None, *,
                  deterministic=True, rngs=None):
        """Every layer's keys and values of a prefix (e.g. a soft prompt) at positions
        0..P-1, computed once and shared by all rows that continue it.

        Args:
          prefix: [P, H] one prefix, or [N, P, H] N prefixes padded at the end to P.
          prefix_lengths: [N] real vectors of each of N prefixes (default: all P). The padded
            slots' keys and values are meaningless; `hidden_states` masks them out.

        Returns:
          (keys, values), each [L, 1, P, K, D] for one prefix, [L, N, P, K, D] for N.
        """
        if prefix.ndim == 2:
            prefix = prefix[None]  # [1, P, H]
        n, p = prefix.shape[:2]
        if prefix_lengths is None:
            mask = jnp.ones((n, p), jnp.int32)
        else:
            mask = (jnp.arange(p)[None] < prefix_lengths[:, None]).astype(jnp.int32)  # [N, P]
        positions = jnp.broadcast_to(jnp.arange(p)[None], (n, p))  # padding sits at the end
        _, kv = self._apply(params, prefix, mask, positions, deterministic,
                            method="hidden", rngs=rngs)
        return kv

    def hidden_states(self, params, embeds, mask, *, positions=None, prefix=None,
                      prefix_lengths=None, prefix_index=None, segment_ids=None,
                      prefix_kv=None, deterministic=True, rngs=None) -> jax.Array:
        """Final-normed hidden states [B, T, H].

        With `prefix` [P, H], the rows continue a prefix shared by all of them: its keys and
        values are computed once (not once per row) and the rows' positions start at P. The
        result equals running `concat(prefix, row)` for each row, for the row's positions.
        With `prefix` [N, P, H], `prefix_lengths` [N] and `prefix_index` [B], row b continues
        prefix `prefix_index[b]` (its first `prefix_lengths[prefix_index[b]]` vectors): each
        prefix's keys and values are computed once, gathered per row, and row b's positions
        start at its own prefix's length. With `segment_ids` (packed rows), each segment is such
        a row of its own (one shared [P, H] prefix only). `prefix_kv` (keys, values), each
        [L, N, P, K, D] as `prefix_kv` returns them, stands for N prefixes computed earlier
        (e.g. once when a prompt joins a serving bank), with `prefix_lengths` and
        `prefix_index` as for [N, P, H]; `prefix` is then left out.
        """
        if positions is None:
            positions = layers.positions_from_mask(mask)
        kv, prefix_mask = None, None
        if prefix is not None and prefix.ndim == 2:
            kv = self.prefix_kv(params, prefix, deterministic=deterministic, rngs=rngs)
            positions = positions + prefix.shape[0]
        elif prefix is not None or prefix_kv is not None:
            if prefix is not None and prefix_kv is not None:
                raise ValueError("give either prefix or prefix_kv, not both")
            if prefix_lengths is None or prefix_index is None or segment_ids is not None:
                raise ValueError("N prefixes ([N, P, H] or their keys and values) need "
                                 "prefix_lengths [N] and prefix_index [B], and cannot continue "
                                 "packed rows")
            if prefix_kv is None:
                prefix_kv = self.prefix_kv(params, prefix, prefix_lengths,
                                           deterministic=deterministic,
                                           rngs=rngs)  # [L, N, P, K, D] each
            kv = tuple(jnp.take(t, prefix_index, axis=1) for t in prefix_kv)  # [L, B, P, K, D]
            row_lengths = jnp.take(prefix_lengths, prefix_index)  # [B]
            p = kv[0].shape[2]
            prefix_mask = jnp.arange(p)[None] < row_lengths[:, None]  # [B, P]
            positions = positions + row_lengths[:, None]
        hidden, _ = self._apply(params, embeds, mask, positions, deterministic, kv,
                                segment_ids=segment_ids, prefix_mask=prefix_mask,
                                method="hidden", rngs=rngs)
        return hidden

    def forward(self, params, embeds, mask, *, positions=None, prefix=None, deterministic=True,
                rngs=None):
        """Next-token logits [B, T, V] (float32) of the rows (after `prefix`, if given)."""
        hidden = self.hidden_states(
            params, embeds, mask, positions=positions, prefix=prefix,
            deterministic=deterministic, rngs=rngs,
        )
        return self._apply(params, hidden, method="head").astype(jnp.float32)

    def score(self, params, embeds, mask, candidate_ids, candidate_mask, *, target_positions=None,
              prefix=None, prefix_lengths=None, prefix_index=None, prefix_kv=None,
              deterministic=True, rngs=None):
        """Sum of log p(candidate tokens | context) [B, C]; a padded slot (all-zero mask)
        scores -inf.

        Single-token candidates (K = 1) need one pass over the context; longer ones are each
        appended after the last real context token. Either way only the logits that predict
        candidate tokens are computed. `prefix` (a soft prompt; [P, H], or [N, P, H] with
        `prefix_lengths` and `prefix_index`, see `hidden_states`) precedes every row and is
        computed once per batch; `prefix_kv` instead of `prefix` takes N prefixes' keys and
        values computed beforehand. `target_positions` is unused (masked LMs only).
        """
        del target_positions
        b, t, h = embeds.shape
        ids, cmask = broadcast_candidates(candidate_ids, candidate_mask, b)
        c, k = ids.shape[1:]
        last = jnp.max(jnp.where(mask > 0, jnp.arange(t)[None], 0), axis=1)  # [B]
        prefix_kwargs = dict(prefix=prefix, prefix_lengths=prefix_lengths, prefix_kv=prefix_kv,
                             deterministic=deterministic, rngs=rngs)
        if k == 1:
            hidden = self.hidden_states(params, embeds, mask, prefix_index=prefix_index,
                                        **prefix_kwargs)  # [B, T, H]
            at_last = jnp.take_along_axis(hidden, last[:, None, None], axis=1)  # [B, 1, H]
            return self._next_token_scores(params, at_last, ids, cmask)
        cand_embeds = self.embed(params, ids)  # [B, C, K, H]
        seq = jnp.concatenate(
            [jnp.broadcast_to(embeds[:, None], (b, c, t, h)), cand_embeds], axis=2
        ).reshape(b * c, t + k, h)
        seq_mask = jnp.concatenate(
            [jnp.broadcast_to(mask[:, None], (b, c, t)), cmask.astype(mask.dtype)], axis=2
        ).reshape(b * c, t + k)
        row_index = None if prefix_index is None else jnp.repeat(prefix_index, c)  # [B*C]
        hidden = self.hidden_states(params, seq, seq_mask, prefix_index=row_index,
                                    **prefix_kwargs)  # [B*C, T+K, H]
        # Hidden state that predicts candidate token j: the last real context token for j = 0,
        # candidate token j - 1 otherwise.
        idx = jnp.concatenate(
            [jnp.broadcast_to(last[:, None], (b, 1)), t + jnp.arange(k - 1)[None].repeat(b, 0)],
            axis=1,
        )  # [B, K]
        idx = jnp.repeat(idx, c, axis=0)  # [B*C, K]
        picked = jnp.take_along_axis(hidden, idx[..., None], axis=1)  # [B*C, K, H]
        logits = self._apply(params, picked, method="head")  # [B*C, K, V]
        logp = token_log_probs(logits, ids.reshape(b * c, k))  # [B*C, K]
        return candidate_totals(logp.reshape(b, c, k), cmask)

    def _next_token_scores(self, params, at_last, ids, cmask):
        """log p(single-token candidate) [B, C] from the hidden state before it [B, 1, H]
        (cmask [B, C, 1]; padded slots -inf)."""
        b, c = ids.shape[:2]
        logits = self._apply(params, at_last, method="head")  # [B, 1, V]
        logp = token_log_probs(jnp.broadcast_to(logits, (b, c, self.vocab_size)), ids[..., 0])
        return candidate_totals(logp[..., None], cmask)  # [B, C]

    def score_packed(self, params, embeds, segment_ids, positions, last, candidate_ids,
                     candidate_mask, *, prefix=None, deterministic=True, rngs=None):
        """`score` [B, C] of B examples packed into R rows (see `prompt_jax.training.packing`).

        Args:
          embeds: [R, S, H] the packed rows' token embeddings.
          segment_ids: [R, S] example number within the row (1, 2, ...), 0 for padding.
          positions: [R, S] each token's position within its example.
          last: [B] flat index (row * S + column) of each example's last input token, or
            [B, K] of the token that predicts each of its target's K tokens (a target packed
            after its input: `pack_batch(targets=True)`).
          candidate_ids, candidate_mask: [C, 1] or [B, C, 1] single-token candidates, or
            [B, 1, K] / [1, K]: the targets packed after the inputs (only they can be
            scored token by token: their tokens are the rows' own).
          prefix: [P, H] a prompt that every example continues (computed once). One prompt
            per example (N prompts, as in a mixed-task batch) is not supported here.
        """
        b = last.shape[0]
        ids, cmask = broadcast_candidates(candidate_ids, candidate_mask, b)
        c, k = ids.shape[1:]
        index = last[:, None] if last.ndim == 1 else last  # [B, K']
        if k == 1:
            index = index[:, :1]  # the last input token predicts a single-token candidate
        elif index.shape[1] != k or c != 1:
            packed = (f"with its {index.shape[1]}-token targets" if last.ndim == 2
                      else "without its targets")
            raise ValueError(f"packed batches score single-token candidates, or one target "
                             f"of K tokens per example packed after its input (pack_batch("
                             f"targets=True)); got {c} candidates of {k} tokens for a batch "
                             f"packed {packed}")
        hidden = self.hidden_states(params, embeds, segment_ids > 0, positions=positions,
                                    prefix=prefix, segment_ids=segment_ids,
                                    deterministic=deterministic, rngs=rngs)  # [R, S, H]
        r, s, h = hidden.shape
        picked = hidden.reshape(r * s, h)[index]  # [B, K, H]
        logits = self._apply(params, picked, method="head")  # [B, K, V]
        logp = token_log_probs(jnp.broadcast_to(logits[:, None], (b, c, k, self.vocab_size)),
                               ids)  # [B, C, K]
        return candidate_totals(logp, cmask)

    def pack_keys_per_token(self) -> float:
        """Attention keys per query that cost as much as one token's matmuls (a layer's FLOPs
        per token over its attention FLOPs per key), for deciding when packing pays."""
        cfg = self.config
        q_width = cfg.num_attention_heads * cfg.kv_dim
        kv_width = cfg.num_key_value_heads * cfg.kv_dim
        matmuls = 2 * (2 * cfg.hidden_size * q_width + 2 * cfg.hidden_size * kv_width
                       + 3 * cfg.hidden_size * cfg.intermediate_size)
        return matmuls / (4 * q_width)

    def activations(self, params, embeds, mask, *, kind: str = "output_input") -> dict:
        """FFN activations {"decoder": [L, B, T, F]} (`kind`: see `Backbone.activations`)."""
        name = ffn_sown_name(kind)
        _, state = self.module.apply(
            {"params": params}, embeds, mask, layers.positions_from_mask(mask),
            method="hidden", mutable=["intermediates"],
        )
        stack = layers.stacked_layers(state["intermediates"]["layers"])
        return {"decoder": stack["mlp"][name][0]}

    def generate(self, params, embeds, mask, max_new_tokens: int, *, eos_ids=None, pad_id=None,
                 live=None, limit=None, prefix=None, prefix_lengths=None, prefix_index=None,
                 prefix_kv=None) -> jax.Array:
        """Greedy continuation [B, max_new_tokens] of each row (after its prompt, given as for
        `hidden_states`: computed once, not per row), with a key/value cache; `pad_id` after a
        row's EOS (`eos_ids`, default the config's). See `kv_cache.decoder_generate`."""
        return kv_cache.decoder_generate(
            self, params, embeds, mask, max_new_tokens, eos_ids=eos_ids, pad_id=pad_id,
            live=live, limit=limit, prefix=prefix, prefix_lengths=prefix_lengths,
            prefix_index=prefix_index, prefix_kv=prefix_kv)
