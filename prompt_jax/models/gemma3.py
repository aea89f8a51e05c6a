"""Gemma 3 text decoder (transformers' `Gemma3ForCausalLM`). Gemma 3 270M is its real instance.

What differs from Llama: RMSNorm scales by (1 + weight); norms after attention and after the
FFN as well as before them; query and key RMSNorm per head; attention scaled by
`query_pre_attn_scalar ** -0.5`; sliding-window layers (a query sees the last `sliding_window`
positions) interleaved with global layers as `layer_types` says, each kind with its own RoPE
base; a GeGLU FFN (tanh GELU); token embeddings multiplied by sqrt(hidden_size); optional
tanh soft-capping of the final logits. Like transformers' Gemma 3, we ignore Gemma 2's
`attn_logit_softcapping` (no Gemma 3 checkpoint sets it).

Everything prompt tuning needs above the module (shared-prefix keys and values, mixed prompts,
packed rows, rank scoring, greedy decoding, FFN activations) is Llama's code: `Gemma3` is a
`Llama` backbone with another module behind it. Sliding windows count positions, not array
slots, so padding anywhere in a row and prompts of any length see what the row sees alone.

A soft prompt lives where token embeddings are AFTER the sqrt(hidden_size) scaling: `embed`
returns scaled embeddings, the prompt is concatenated with them unscaled, and text
initialization takes scaled embeddings. This is what Hugging Face PEFT does on this model (its
prompt is concatenated with `inputs_embeds`, which Gemma 3 does not rescale, and its text init
calls the scaled embedding module), so a prompt saved as a PEFT adapter means the same thing
there.
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
from prompt_jax.models.base import dtype_of
from prompt_jax.models.decoder_layers import LlamaAttention, LlamaMLP, decoder_attention_bias
from prompt_jax.models.llama import Llama, first_token_id

LAYER_TYPES = ("sliding_attention", "full_attention")


@dataclasses.dataclass(frozen=True)
class Gemma3Config:
    """Hyperparameters of a Gemma 3 text model (names follow transformers' Gemma3TextConfig;
    defaults are Gemma 3 270M's)."""

    vocab_size: int = 262144
    hidden_size: int = 640
    intermediate_size: int = 2048
    num_hidden_layers: int = 18
    num_attention_heads: int = 4
    num_key_value_heads: int = 1
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0  # global (full-attention) layers
    rope_type: str = "default"  # global layers: "default" | "linear" (larger Gemma 3 models)
    rope_scaling: tuple[tuple[str, Any], ...] = ()  # extra RoPE parameters of global layers
    rope_local_theta: float = 10_000.0  # sliding-window layers
    query_pre_attn_scalar: float = 256.0
    sliding_window: int = 512
    layer_types: tuple[str, ...] = ()  # per layer; () = every 6th layer global, as transformers
    final_logit_softcapping: float | None = None
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "gelu_pytorch_tanh"
    attention_dropout: float = 0.0
    bos_token_id: int | None = 2
    eos_token_id: int | None = 1
    pad_token_id: int | None = 0
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    # The layer loop unrolled in the compiled program (the params stay stacked): XLA sees
    # every layer, as without scanned layers, at the cost of a longer compile.
    unroll_layers: bool = False
    # False: each layer's params apart (`layers.PerLayer`; `layers.split_layers` converts
    # stacked ones), a Python loop in the program: no weight sliced out of a stacked array.
    scan_layers: bool = True

    def __post_init__(self):
        if not self.layer_types:
            pattern = tuple("full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                            for i in range(self.num_hidden_layers))
            object.__setattr__(self, "layer_types", pattern)
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if len(self.layer_types) != self.num_hidden_layers or not set(self.layer_types) <= set(
                LAYER_TYPES):
            raise ValueError(f"layer_types must list one of {LAYER_TYPES} for each of the "
                             f"{self.num_hidden_layers} layers; got {self.layer_types}")

    @property
    def kv_dim(self) -> int:
        return self.head_dim

    @property
    def attention_scale(self) -> float:
        return self.query_pre_attn_scalar**-0.5

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> Gemma3Config:
        """Builds the config from a `gemma3_text` `config.json` dict (transformers 4 or 5).

        Raises:
          ValueError: for bidirectional attention (the embedding-model variant), which
            prompt tuning of a causal decoder does not cover.
        """
        if hf.get("use_bidirectional_attention"):
            raise ValueError("Gemma 3 with use_bidirectional_attention=True (an embedding "
                             "model) is not supported; prompt_jax runs the causal decoder")
        rope = hf.get("rope_parameters") or {}
        if "full_attention" in rope:  # transformers 5: one entry per layer type
            full = dict(rope["full_attention"] or {})
            local = dict(rope.get("sliding_attention") or {})
            theta = full.pop("rope_theta", 1_000_000.0)
            local_theta = local.get("rope_theta", 10_000.0)
        else:  # transformers 4: rope_theta, rope_local_base_freq, rope_scaling
            full = dict(hf.get("rope_scaling") or {})
            theta = hf.get("rope_theta", 1_000_000.0)
            local_theta = hf.get("rope_local_base_freq", 10_000.0)
        rope_type = full.pop("rope_type", full.pop("type", "default"))
        layer_types = hf.get("layer_types")
        if not layer_types:
            every = hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or 6
            layer_types = ["full_attention" if (i + 1) % every == 0 else "sliding_attention"
                           for i in range(hf["num_hidden_layers"])]
        kwargs = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=hf["num_attention_heads"],
            num_key_value_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
            head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_type=rope_type,
            rope_scaling=tuple(sorted(full.items())),
            rope_local_theta=float(local_theta),
            query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
            sliding_window=hf.get("sliding_window") or 4096,
            layer_types=tuple(layer_types),
            final_logit_softcapping=hf.get("final_logit_softcapping"),
            max_position_embeddings=hf.get("max_position_embeddings", 131072),
            tie_word_embeddings=hf.get("tie_word_embeddings", True),
            attention_bias=hf.get("attention_bias", False),
            hidden_act=hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh",
            bos_token_id=first_token_id(hf.get("bos_token_id")),
            eos_token_id=first_token_id(hf.get("eos_token_id")),
            pad_token_id=first_token_id(hf.get("pad_token_id")),
        )
        kwargs.update(overrides)
        return cls(**kwargs)


class GemmaRMSNorm(nn.Module):
    """RMSNorm scaling by (1 + weight) (the weight starts at 0), computed in float32."""

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    axis: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", layers.with_axes(nn.initializers.zeros, (self.axis,)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
        return (x32 * (1.0 + scale.astype(jnp.float32))).astype(self.dtype)


class Gemma3Block(nn.Module):
    config: Gemma3Config
    deterministic: bool

    @nn.compact
    def __call__(self, x, biases, positions, prefix_kv, layer):
        """One layer. `biases` = (causal bias, extra bias outside the sliding window), shared
        by all layers; `layer` = (this layer slides: bool, its RoPE frequencies [D / 2]),
        sliced from per-layer stacks by the scan. Returns the new x and this layer's (k, v)."""
        cfg = self.config
        causal, outside_window = biases
        slides, inv_freq = layer
        bias = causal + jnp.where(slides, outside_window, 0.0)
        norm = partial(GemmaRMSNorm, cfg.rms_norm_eps, dtype_of(cfg.dtype),
                       dtype_of(cfg.param_dtype))
        attn, kv = LlamaAttention(cfg, self.deterministic, partial(norm, axis="kv"), name="attn")(
            norm(name="attn_norm")(x), bias, positions, prefix_kv, inv_freq)
        x = x + norm(name="post_attn_norm")(attn)
        x = x + norm(name="post_mlp_norm")(LlamaMLP(cfg, name="mlp")(norm(name="mlp_norm")(x)))
        return x, kv


class Gemma3Module(nn.Module):
    config: Gemma3Config

    def setup(self):
        cfg = self.config
        self.embed_tokens = layers.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=dtype_of(cfg.dtype),
            param_dtype=dtype_of(cfg.param_dtype),
        )
        self.final_norm = GemmaRMSNorm(
            cfg.rms_norm_eps, dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        )
        if not cfg.tie_word_embeddings:
            self.lm_head = layers.Linear(
                (cfg.vocab_size,), ("embed",), ("vocab",), dtype=dtype_of(cfg.dtype),
                param_dtype=dtype_of(cfg.param_dtype),
            )

    def embed(self, ids):
        """Token embeddings times sqrt(hidden_size), the space soft prompts live in."""
        scale = jnp.asarray(math.sqrt(self.config.hidden_size), dtype_of(self.config.dtype))
        return self.embed_tokens(ids) * scale

    def _layer_stacks(self) -> tuple[jax.Array, jax.Array]:
        """(slides [L] bool, RoPE inverse frequencies [L, D / 2]) per layer."""
        cfg = self.config
        local = layers.rope_inverse_frequencies(cfg.head_dim, cfg.rope_local_theta)
        full = layers.rope_inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_type,
                                               dict(cfg.rope_scaling))
        slides = np.array([t == "sliding_attention" for t in cfg.layer_types])
        return jnp.asarray(slides), jnp.asarray(np.where(slides[:, None], local, full))

    @nn.compact
    def hidden(self, embeds, mask, positions, deterministic=True, prefix_kv=None,
               segment_ids=None, prefix_mask=None):
        """Final-normed hidden states [B, T, H] and every layer's (k, v) [L, B, T, K, D];
        the arguments are `LlamaModule.hidden`'s. A prefix's slot j is at position j."""
        cfg = self.config
        causal = decoder_attention_bias(mask, segment_ids, prefix_kv, prefix_mask)
        key_positions = positions
        if prefix_kv is not None:
            b, p = positions.shape[0], prefix_kv[0].shape[2]
            key_positions = jnp.concatenate(
                [jnp.broadcast_to(jnp.arange(p)[None], (b, p)), positions], axis=1)
        distance = positions[:, :, None] - key_positions[:, None, :]  # [B, T, P + T]
        outside_window = jnp.where(distance >= cfg.sliding_window, layers.MASK_VALUE,
                                   0.0)[:, None].astype(causal.dtype)  # [B, 1, T, P + T]
        blocks = layers.scan_layers(Gemma3Block, cfg.num_hidden_layers, cfg.remat,
                                    (nn.broadcast, nn.broadcast, 0, 0),
                                    unroll=cfg.unroll_layers, per_layer=not cfg.scan_layers)
        x, kv = blocks(cfg, deterministic, name="layers")(
            embeds, (causal, outside_window), positions, prefix_kv, self._layer_stacks())
        return self.final_norm(x), kv

    def head(self, hidden):
        cfg = self.config
        if cfg.tie_word_embeddings:
            logits = self.embed_tokens.attend(hidden)
        else:
            logits = self.lm_head(hidden)
        if cfg.final_logit_softcapping is not None:
            cap = cfg.final_logit_softcapping
            logits = cap * jnp.tanh(logits / cap)
        return logits

    def __call__(self, ids, mask, positions, deterministic=True):
        """Logits from token ids (used to create every parameter at init)."""
        return self.head(self.hidden(self.embed(ids), mask, positions, deterministic)[0])


class Gemma3(Llama):
    """A Gemma 3 text decoder behind the `Backbone` interface (Llama's methods, Gemma's
    module)."""

    family = "gemma3"

    def __init__(self, config: Gemma3Config):
        self.config = config
        self.module = Gemma3Module(config)
