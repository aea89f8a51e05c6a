"""T5 encoder-decoder: v1.0 (ReLU FFN, tied head scaled by d_model^-0.5), v1.1 and LM-adapted
(gated-GELU FFN, untied head), with relative position buckets.

The soft prompt goes on the encoder input; the decoder produces the verbalizer text.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_jax.models import layers
from prompt_jax.models.base import (
    FlaxBackbone,
    Params,
    broadcast_candidates,
    candidate_totals,
    dtype_of,
    ffn_sown_name,
    token_log_probs,
)


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyperparameters of a T5 model (names follow Hugging Face's T5Config)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.0
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # "relu" (v1.0) | "gated-gelu" (v1.1, LM-adapted) | ...
    tie_word_embeddings: bool = True  # output head shares the input embedding table
    scale_decoder_outputs: bool = True  # multiply by d_model^-0.5 before the head (v1.0)
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    max_length: int = 512  # longest encoder input this library accepts (prompt included)
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def act_name(self) -> str:
        name = self.feed_forward_proj.split("-")[-1]
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else name

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> T5Config:
        """Builds the config from a Hugging Face `config.json` dict."""
        tie = hf.get("tie_word_embeddings", True)
        kwargs = dict(
            vocab_size=hf["vocab_size"],
            d_model=hf["d_model"],
            d_kv=hf["d_kv"],
            d_ff=hf["d_ff"],
            num_layers=hf["num_layers"],
            num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
            num_heads=hf["num_heads"],
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
            layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
            feed_forward_proj=hf.get("feed_forward_proj", "relu"),
            tie_word_embeddings=tie,
            # transformers >= 5 writes `scale_decoder_outputs`; older configs say it through
            # `tie_word_embeddings` (v1.0 ties and scales, v1.1 does neither).
            scale_decoder_outputs=hf.get("scale_decoder_outputs", tie),
            pad_token_id=hf.get("pad_token_id", 0),
            eos_token_id=_first(hf.get("eos_token_id", 1)),
            decoder_start_token_id=hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)),
            max_length=hf.get("n_positions", 512),
        )
        kwargs.update(overrides)
        return cls(**kwargs)


def _first(x):
    return x[0] if isinstance(x, (list, tuple)) else x


def relative_position_buckets(
    query_len: int, key_len: int, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """T5's bucketed relative positions [Tq, Tk], computed like Hugging Face (float32 log)."""
    relative = np.arange(key_len)[None, :] - np.arange(query_len)[:, None]
    buckets = np.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).astype(np.int64) * num_buckets
        relative = np.abs(relative)
    else:
        relative = -np.minimum(relative, 0)
    max_exact = num_buckets // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        large = max_exact + (
            np.log(relative.astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(num_buckets - max_exact)
        )
    large = np.where(relative < max_exact, 0, large).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(relative < max_exact, relative, large)


class T5Attention(nn.Module):
    """T5's attention (q, k, v, o; no scaling, the position bias added). `project_kv` and
    `attend` split it for cached decoding (`t5_cache`), on the same parameters."""

    config: T5Config
    deterministic: bool

    def setup(self):
        cfg = self.config
        dense = partial(
            layers.Linear, dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype)
        )
        heads = (cfg.num_heads, cfg.d_kv)
        self.q = dense(heads, ("embed",), ("heads", "kv"))
        self.k = dense(heads, ("embed",), ("heads", "kv"))
        self.v = dense(heads, ("embed",), ("heads", "kv"))
        self.o = dense((cfg.d_model,), ("heads", "kv"), ("embed",))
        self.drop = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)

    def project_kv(self, kv: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[B, Tk, H] -> keys, values [B, Tk, N, D]."""
        return self.k(kv), self.v(kv)

    def attend(self, x: jax.Array, keys: jax.Array, values: jax.Array,
               bias: jax.Array) -> jax.Array:
        """Queries of x [B, Tq, H] over keys and values [B, Tk, N, D] -> [B, Tq, H]."""
        out = layers.dot_product_attention(self.q(x), keys, values, bias, scale=1.0,
                                           dropout=self.drop)
        return self.o(out)

    def __call__(self, x: jax.Array, kv: jax.Array, bias: jax.Array) -> jax.Array:
        return self.attend(x, *self.project_kv(kv), bias)


class T5MLP(nn.Module):
    config: T5Config
    deterministic: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dense = partial(
            layers.Linear, dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype)
        )
        act = layers.activation(cfg.act_name)
        if cfg.is_gated:
            pre = dense((cfg.d_ff,), ("embed",), ("mlp",), name="wi_0")(x)  # [B, T, F]
            h = act(pre) * dense((cfg.d_ff,), ("embed",), ("mlp",), name="wi_1")(x)
        else:
            pre = dense((cfg.d_ff,), ("embed",), ("mlp",), name="wi")(x)  # [B, T, F]
            h = act(pre)
        self.sow("intermediates", ffn_sown_name("pre_activation"), pre)
        self.sow("intermediates", ffn_sown_name("output_input"), h)
        h = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)(h)
        return dense((cfg.d_model,), ("mlp",), ("embed",), name="wo")(h)


class T5Block(nn.Module):
    config: T5Config
    decoder: bool
    deterministic: bool

    @nn.compact
    def __call__(self, x, self_bias, encoded, cross_bias):
        cfg = self.config
        norm = partial(
            layers.RMSNorm, cfg.layer_norm_epsilon, dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        )
        drop = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)
        h = norm(name="self_attn_norm")(x)
        x = x + drop(T5Attention(cfg, self.deterministic, name="self_attn")(h, h, self_bias))
        if self.decoder:
            h = norm(name="cross_attn_norm")(x)
            attn = T5Attention(cfg, self.deterministic, name="cross_attn")
            x = x + drop(attn(h, encoded, cross_bias))
        h = norm(name="mlp_norm")(x)
        x = x + drop(T5MLP(cfg, self.deterministic, name="mlp")(h))
        return x, None


class T5Stack(nn.Module):
    """Encoder or decoder stack: relative-position bias, scanned blocks, final norm."""

    config: T5Config
    decoder: bool

    @nn.compact
    def __call__(self, x, mask, encoded=None, encoded_mask=None, deterministic=True):
        cfg = self.config
        t = x.shape[1]
        relpos = layers.Embed(
            cfg.relative_attention_num_buckets, cfg.num_heads, ("relpos_buckets", "heads"),
            jnp.float32, dtype_of(cfg.param_dtype), name="relpos_bias",
        )
        buckets = relative_position_buckets(
            t, t, not self.decoder, cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
        )
        position_bias = jnp.transpose(relpos(jnp.asarray(buckets)), (2, 0, 1))[None]  # [1,N,T,T]
        self_bias = position_bias + layers.attention_bias(mask, causal=self.decoder)
        cross_bias = layers.attention_bias(encoded_mask) if self.decoder else None
        drop = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)
        num_layers = cfg.num_decoder_layers if self.decoder else cfg.num_layers
        blocks = layers.scan_layers(T5Block, num_layers, cfg.remat, (nn.broadcast,) * 3)
        x, _ = blocks(cfg, self.decoder, deterministic, name="layers")(
            drop(x), self_bias, encoded, cross_bias
        )
        x = layers.RMSNorm(
            cfg.layer_norm_epsilon, dtype_of(cfg.dtype), dtype_of(cfg.param_dtype),
            name="final_norm",
        )(x)
        return drop(x)


class T5Module(nn.Module):
    config: T5Config

    def setup(self):
        cfg = self.config
        self.shared = layers.Embed(
            cfg.vocab_size, cfg.d_model, dtype=dtype_of(cfg.dtype),
            param_dtype=dtype_of(cfg.param_dtype),
        )
        self.encoder = T5Stack(cfg, decoder=False)
        self.decoder = T5Stack(cfg, decoder=True)
        if not cfg.tie_word_embeddings:
            self.lm_head = layers.Linear(
                (cfg.vocab_size,), ("embed",), ("vocab",), dtype=dtype_of(cfg.dtype),
                param_dtype=dtype_of(cfg.param_dtype),
            )

    def embed(self, ids):
        return self.shared(ids)

    def encode(self, embeds, mask, deterministic=True):
        return self.encoder(embeds, mask, deterministic=deterministic)

    def decode(self, encoded, encoded_mask, decoder_ids, decoder_mask, deterministic=True):
        """Decoder hidden states [B, Td, H] (before the output head)."""
        x = self.shared(decoder_ids)
        return self.decoder(x, decoder_mask, encoded, encoded_mask, deterministic=deterministic)

    def head(self, hidden):
        cfg = self.config
        if cfg.scale_decoder_outputs:
            hidden = hidden * (cfg.d_model**-0.5)
        if cfg.tie_word_embeddings:
            return self.shared.attend(hidden)
        return self.lm_head(hidden)

    def __call__(self, embeds, mask, decoder_ids, decoder_mask, deterministic=True):
        encoded = self.encode(embeds, mask, deterministic)
        return self.head(self.decode(encoded, mask, decoder_ids, decoder_mask, deterministic))


def shift_right(ids: jax.Array, start_id: int) -> jax.Array:
    """Decoder inputs for teacher forcing: [start, y0, ..., y_{K-2}]."""
    return jnp.concatenate([jnp.full_like(ids[..., :1], start_id), ids[..., :-1]], axis=-1)


class T5(FlaxBackbone):
    """T5 behind the `Backbone` interface."""

    family = "t5"
    prompt_style = "t5"
    default_placement = "prefix"

    def __init__(self, config: T5Config):
        self.config = config
        self.module = T5Module(config)

    @property
    def d_model(self) -> int:
        return self.config.d_model

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def _dummy(self):
        ids = jnp.zeros((1, 2), jnp.int32)
        return jnp.zeros((1, 2, self.d_model), dtype_of(self.config.dtype)), ids + 1, ids, ids + 1

    def embed(self, params: Params, ids: jax.Array) -> jax.Array:
        return self._apply(params, ids, method=T5Module.embed)  # [B, T, H]

    def encode(self, params, embeds, mask, *, deterministic=True, rngs=None) -> jax.Array:
        """Encoder output [B, T, H]."""
        return self._apply(params, embeds, mask, deterministic, method=T5Module.encode, rngs=rngs)

    def forward(
        self, params, embeds, mask, *, decoder_input_ids, decoder_mask=None, deterministic=True,
        rngs=None,
    ) -> jax.Array:
        """Decoder logits [B, Td, V] for teacher-forced `decoder_input_ids` [B, Td]."""
        if decoder_mask is None:
            decoder_mask = jnp.ones_like(decoder_input_ids)
        return self._apply(
            params, embeds, mask, decoder_input_ids, decoder_mask, deterministic,
            method=T5Module.__call__, rngs=rngs,
        ).astype(jnp.float32)

    def score(self, params, embeds, mask, candidate_ids, candidate_mask, *, target_positions=None,
              deterministic=True, rngs=None):
        """Sum of log p(candidate tokens) under the decoder, [B, C].

        The encoder runs once per example; only the candidates' own logits are computed.
        Candidates should end with EOS when the task's targets do; a padded slot (all-zero
        mask) scores -inf. `target_positions` is unused (masked LMs only).
        """
        del target_positions
        b = embeds.shape[0]
        ids, cmask = broadcast_candidates(candidate_ids, candidate_mask, b)
        c, k = ids.shape[1:]
        encoded = self.encode(params, embeds, mask, deterministic=deterministic, rngs=rngs)
        encoded = jnp.repeat(encoded, c, axis=0)  # [B*C, T, H]
        enc_mask = jnp.repeat(mask, c, axis=0)
        flat_ids, flat_mask = ids.reshape(b * c, k), cmask.reshape(b * c, k)
        hidden = self._apply(
            params, encoded, enc_mask, shift_right(flat_ids, self.config.decoder_start_token_id),
            flat_mask, deterministic, method=T5Module.decode, rngs=rngs,
        )
        logits = self._apply(params, hidden, method=T5Module.head)  # [B*C, K, V]
        logp = token_log_probs(logits, flat_ids)  # [B*C, K]
        return candidate_totals(logp.reshape(b, c, k), cmask)

    def activations(self, params, embeds, mask, *, kind: str = "output_input",
                    stack: str = "encoder") -> dict:
        """FFN activations of one stack (`kind`: see `Backbone.activations`).

        Args:
          stack: "encoder" gives {"encoder": [L, B, T, F]}, every encoder position;
            "decoder" gives {"decoder": [L_dec, B, 1, F]}, the decoder's first position: the
            decoder fed only its start token, cross-attending to the encoded input (the first
            step of greedy decoding, which predicts the label's first token). The neuron
            overlap reads the latter, as the paper's T5 code does (see
            `prompt_jax.indicators.activation_masks`).
        """
        name = ffn_sown_name(kind)
        if stack == "encoder":
            _, state = self.module.apply({"params": params}, embeds, mask,
                                         method=T5Module.encode, mutable=["intermediates"])
        elif stack == "decoder":
            start = jnp.full((embeds.shape[0], 1), self.config.decoder_start_token_id, jnp.int32)
            _, state = self.module.apply(
                {"params": params}, embeds, mask, start, jnp.ones_like(start),
                method=lambda m, e, em, d, dm: m.decode(m.encode(e, em), em, d, dm),
                mutable=["intermediates"])
        else:
            raise ValueError(f"unknown T5 stack {stack!r}; use 'encoder' or 'decoder'")
        return {stack: state["intermediates"][stack]["layers"]["mlp"][name][0]}

    def generate(self, params, embeds, mask, max_new_tokens: int, *, eos_ids=None, pad_id=None,
                 live=None, limit=None) -> jax.Array:
        """Greedy decoding [B, max_new_tokens] from encoder inputs, with the encoder, the
        cross-attention keys and values computed once and a self-attention cache; `pad_id` after
        a row's EOS (`eos_ids`, default the config's). See `t5_cache.generate`."""
        from prompt_jax.models import t5_cache  # it builds on this module's layers

        return t5_cache.generate(self, params, embeds, mask, max_new_tokens, eos_ids=eos_ids,
                                 pad_id=pad_id, live=live, limit=limit)
