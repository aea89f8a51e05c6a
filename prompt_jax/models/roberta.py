"""RoBERTa and BERT encoders with the masked-LM head.

The two differ only in position ids (RoBERTa: padding-aware, offset by `pad_token_id + 1`;
BERT: 0..T-1), the head activation (RoBERTa always exact GELU) and key names on disk. The soft
prompt replaces word embeddings at the front; position and token-type embeddings are added
inside `forward`, as Hugging Face does for `inputs_embeds`. The verbalizer is predicted at the
`<mask>` position.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_jax.models import layers
from prompt_jax.models.base import (
    FlaxBackbone,
    Params,
    broadcast_candidates,
    candidate_totals,
    dtype_of,
    ffn_sown_name,
)


@dataclasses.dataclass(frozen=True)
class RobertaConfig:
    """Hyperparameters of a BERT-style encoder (names follow Hugging Face's BertConfig)."""

    variant: str = "roberta"  # "roberta" | "bert"
    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    mlm_head: bool = True  # False for encoder-only checkpoints (e.g. sentence embedders)
    # The MLM decoder matrix is the word embeddings; False: the head has its own matrix.
    tie_word_embeddings: bool = True
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False

    def __post_init__(self):
        if self.variant not in ("roberta", "bert"):
            raise ValueError(f"variant must be 'roberta' or 'bert', got {self.variant!r}")

    @property
    def head_act(self) -> str:
        return "gelu" if self.variant == "roberta" else self.hidden_act

    @property
    def max_length(self) -> int:
        offset = self.pad_token_id + 1 if self.variant == "roberta" else 0
        return self.max_position_embeddings - offset

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> RobertaConfig:
        """Builds the config from a Hugging Face `config.json` dict (model_type bert/roberta)."""
        variant = "roberta" if hf["model_type"] in ("roberta", "xlm-roberta") else "bert"
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise NotImplementedError(
                f"position_embedding_type={hf['position_embedding_type']!r} is not supported "
                "(absolute only)"
            )
        kwargs = dict(
            variant=variant,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            hidden_act=hf.get("hidden_act", "gelu"),
            max_position_embeddings=hf["max_position_embeddings"],
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            pad_token_id=hf.get("pad_token_id", 1 if variant == "roberta" else 0),
            # transformers 5: BertConfig / RobertaConfig default to True (absent means tied).
            tie_word_embeddings=hf.get("tie_word_embeddings", True),
        )
        kwargs.update(overrides)
        return cls(**kwargs)


class EncoderLayer(nn.Module):
    """Post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    config: RobertaConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x, bias):
        cfg = self.config
        dense = partial(
            layers.Linear, use_bias=True, dtype=dtype_of(cfg.dtype),
            param_dtype=dtype_of(cfg.param_dtype),
        )
        norm = partial(layers.LayerNorm, cfg.layer_norm_eps, dtype_of(cfg.dtype),
                       dtype_of(cfg.param_dtype))
        drop = nn.Dropout(cfg.hidden_dropout_prob, deterministic=self.deterministic)
        heads = (cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads)
        q = dense(heads, ("embed",), ("heads", "kv"), name="q")(x)  # [B, T, N, D]
        k = dense(heads, ("embed",), ("heads", "kv"), name="k")(x)
        v = dense(heads, ("embed",), ("heads", "kv"), name="v")(x)
        attn_drop = nn.Dropout(cfg.attention_probs_dropout_prob, deterministic=self.deterministic)
        h = layers.dot_product_attention(q, k, v, bias, scale=heads[1] ** -0.5, dropout=attn_drop)
        h = dense((cfg.hidden_size,), ("heads", "kv"), ("embed",), name="o")(h)
        x = norm(name="attn_norm")(x + drop(h))
        pre = dense((cfg.intermediate_size,), ("embed",), ("mlp",), name="wi")(x)  # [B, T, F]
        self.sow("intermediates", ffn_sown_name("pre_activation"), pre)
        h = layers.activation(cfg.hidden_act)(pre)
        self.sow("intermediates", ffn_sown_name("output_input"), h)  # [B, T, F]
        h = dense((cfg.hidden_size,), ("mlp",), ("embed",), name="wo")(h)
        return norm(name="mlp_norm")(x + drop(h)), None


class RobertaModule(nn.Module):
    config: RobertaConfig

    def setup(self):
        cfg = self.config
        embed = partial(layers.Embed, dtype=dtype_of(cfg.dtype),
                        param_dtype=dtype_of(cfg.param_dtype))
        self.word_embeddings = embed(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = embed(
            cfg.max_position_embeddings, cfg.hidden_size, ("abspos", "embed")
        )
        self.token_type_embeddings = embed(
            cfg.type_vocab_size, cfg.hidden_size, ("token_types", "embed")
        )
        norm = partial(layers.LayerNorm, cfg.layer_norm_eps, dtype_of(cfg.dtype),
                       dtype_of(cfg.param_dtype))
        self.embed_norm = norm()
        if cfg.mlm_head:
            self.mlm_dense = layers.Linear(
                (cfg.hidden_size,), ("embed",), ("embed",), use_bias=True,
                dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype),
            )
            self.mlm_norm = norm()
            self.mlm_bias = self.param(
                "mlm_bias", layers.with_axes(nn.initializers.zeros, ("vocab",)),
                (cfg.vocab_size,), dtype_of(cfg.param_dtype),
            )
            if not cfg.tie_word_embeddings:
                self.mlm_decoder = layers.Linear(
                    (cfg.vocab_size,), ("embed",), ("vocab",), dtype=dtype_of(cfg.dtype),
                    param_dtype=dtype_of(cfg.param_dtype),
                )

    def embed(self, ids):
        return self.word_embeddings(ids)

    @nn.compact
    def encode(self, embeds, mask, token_type_ids, position_ids, deterministic=True):
        """Last hidden states [B, T, H]."""
        cfg = self.config
        x = embeds + self.position_embeddings(position_ids)
        x = x + self.token_type_embeddings(token_type_ids)
        x = nn.Dropout(cfg.hidden_dropout_prob, deterministic=deterministic)(self.embed_norm(x))
        blocks = layers.scan_layers(EncoderLayer, cfg.num_hidden_layers, cfg.remat)
        x, _ = blocks(cfg, deterministic, name="layers")(x, layers.attention_bias(mask))
        return x

    def mlm_logits(self, hidden):
        """Masked-LM logits [..., V] from hidden states [..., H]."""
        h = self.mlm_norm(layers.activation(self.config.head_act)(self.mlm_dense(hidden)))
        if self.config.tie_word_embeddings:
            logits = self.word_embeddings.attend(h)
        else:
            logits = self.mlm_decoder(h)
        return logits + self.mlm_bias.astype(logits.dtype)

    def __call__(self, ids, mask, token_type_ids, position_ids, deterministic=True):
        """Logits (or hidden states without a head) from token ids; creates every parameter."""
        hidden = self.encode(self.embed(ids), mask, token_type_ids, position_ids, deterministic)
        return self.mlm_logits(hidden) if self.config.mlm_head else hidden


class Roberta(FlaxBackbone):
    """RoBERTa or BERT behind the `Backbone` interface."""

    prompt_style = "mlm"
    default_placement = "after_bos"  # [CLS] stays first: `<cls> <prompt> <mask> text`

    def __init__(self, config: RobertaConfig):
        self.config = config
        self.family = config.variant
        self.module = RobertaModule(config)

    @property
    def d_model(self) -> int:
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def _dummy(self):
        ids = jnp.zeros((1, 2), jnp.int32)
        return ids, ids + 1, ids, ids + 2

    def position_ids(self, mask: jax.Array) -> jax.Array:
        """RoBERTa: padding-aware positions from pad_token_id + 1; BERT: 0..T-1 for real
        tokens and 0 for padding. Padding's position never reaches a real token, but it must
        stay inside the position table: a mixed-task batch is as wide as its longest prompt
        plus its longest input, wider than any one row needs."""
        m = mask.astype(jnp.int32)
        if self.config.variant == "roberta":
            return jnp.cumsum(m, axis=1) * m + self.config.pad_token_id
        return jnp.arange(mask.shape[1])[None] * m

    def embed(self, params: Params, ids: jax.Array) -> jax.Array:
        return self._apply(params, ids, method=RobertaModule.embed)  # [B, T, H]

    def encode(self, params, embeds, mask, *, token_type_ids=None, position_ids=None,
               deterministic=True, rngs=None) -> jax.Array:
        """Last hidden states [B, T, H] (what Hugging Face's BertModel returns first)."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros(mask.shape, jnp.int32)
        if position_ids is None:
            position_ids = self.position_ids(mask)
        return self._apply(params, embeds, mask, token_type_ids, position_ids, deterministic,
                           method=RobertaModule.encode, rngs=rngs)

    def _require_head(self):
        if not self.config.mlm_head:
            raise ValueError(
                "this checkpoint has no masked-LM head (encoder only); load one with the "
                "cls.predictions / lm_head weights to score or compute logits"
            )

    def forward(self, params, embeds, mask, *, token_type_ids=None, position_ids=None,
                deterministic=True, rngs=None) -> jax.Array:
        """Masked-LM logits [B, T, V] (float32)."""
        self._require_head()
        hidden = self.encode(params, embeds, mask, token_type_ids=token_type_ids,
                             position_ids=position_ids, deterministic=deterministic, rngs=rngs)
        return self._apply(params, hidden, method=RobertaModule.mlm_logits).astype(jnp.float32)

    def score(self, params, embeds, mask, candidate_ids, candidate_mask, *, target_positions,
              token_type_ids=None, deterministic=True, rngs=None):
        """Log-likelihood [B, C] of each candidate at the `<mask>` position.

        Args:
          target_positions: [B] index of the `<mask>` token in each row.
          candidate_ids / candidate_mask: [C, K] or [B, C, K]; a candidate of several word
            pieces scores the mean of its pieces' log-probabilities at that one position.

        Only the logits at the `<mask>` position are computed.
        """
        self._require_head()
        b = embeds.shape[0]
        ids, cmask = broadcast_candidates(candidate_ids, candidate_mask, b)
        hidden = self.encode(params, embeds, mask, token_type_ids=token_type_ids,
                             deterministic=deterministic, rngs=rngs)
        at_mask = jnp.take_along_axis(hidden, target_positions[:, None, None], axis=1)[:, 0]
        logits = self._apply(params, at_mask, method=RobertaModule.mlm_logits)  # [B, V]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        picked = jnp.take_along_axis(logp[:, None, :], ids.reshape(b, -1)[:, None, :], axis=2)
        return candidate_totals(picked.reshape(ids.shape), cmask, mean=True)  # [B, C]

    def activations(self, params, embeds, mask, *, kind: str = "output_input") -> dict:
        """FFN activations {"encoder": [L, B, T, F]} (`kind`: see `Backbone.activations`)."""
        name = ffn_sown_name(kind)
        tt = jnp.zeros(mask.shape, jnp.int32)
        _, state = self.module.apply(
            {"params": params}, embeds, mask, tt, self.position_ids(mask),
            method=RobertaModule.encode, mutable=["intermediates"],
        )
        return {"encoder": state["intermediates"]["layers"][name][0]}
