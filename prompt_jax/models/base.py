"""The one interface every backbone family implements.

Prompts, training, transfer, indicators and serving talk to a model only through `Backbone`, so
they never branch on the family. Parameters are plain pytrees passed as arguments (never stored
on the model object), so a jitted step can take them sharded.

Shapes: B batch, T input length, H d_model, C candidates, K candidate length, V vocab,
L layers, F FFN width.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_jax import partitioning
from prompt_jax.models import layers

Params = Any  # nested dict of arrays, as produced by flax `init` (unboxed)


@runtime_checkable
class Backbone(Protocol):
    """A frozen pretrained model seen from prompt tuning: everything callers outside
    `prompt_jax.models` may use. A family that lacks an optional capability (`shares_prefix`,
    `packs`, `generate`, ...) says so through the flag or raises NotImplementedError naming
    itself (see `FlaxBackbone`), so callers never probe with getattr."""

    family: str  # "t5" | "roberta" | "bert" | "llama" | "gemma3"
    config: Any
    prompt_style: str  # task template style: "t5" | "mlm" | "causal" (tasks.FAMILY_STYLE)
    default_placement: str  # where a soft prompt goes: "prefix" | "after_bos"
    shares_prefix: bool  # `score` / `hidden_states` accept `prefix=` (computed once per batch)
    packs: bool  # `score_packed`: several examples per row (see prompt_jax.training.packing)

    @property
    def d_model(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_length(self) -> int: ...

    def init_params(self, rng: jax.Array) -> Params:
        """Random parameters (tests and shape inference only: real weights come from convert)."""

    def abstract_params(self) -> tuple[Params, Params]:
        """(ShapeDtypeStruct tree, logical PartitionSpec tree) of the params, no FLOPs."""

    def param_axes(self) -> Params:
        """Same tree as the params, each leaf a PartitionSpec of logical axis names."""

    def embed(self, params: Params, ids: jax.Array) -> jax.Array:
        """Token embeddings [B, T] -> [B, T, H], in the compute dtype."""

    def forward(self, params: Params, embeds: jax.Array, mask: jax.Array, **kwargs) -> jax.Array:
        """Logits [B, T', V] from input embeddings [B, T, H] and mask [B, T]."""

    def score(
        self,
        params: Params,
        embeds: jax.Array,
        mask: jax.Array,
        candidate_ids: jax.Array,
        candidate_mask: jax.Array,
        **kwargs,
    ) -> jax.Array:
        """Log-likelihood [B, C] of each candidate continuation ([C, K] or [B, C, K]); a
        candidate whose mask is all zero (a padded slot) scores -inf.

        Keyword arguments every family accepts: `target_positions` ([B] index of the predicted
        position, masked LMs only), `deterministic` (False turns dropout on) and `rngs`.
        Backbones that `shares_prefix` also take `prefix` ([P, H], or [N, P, H] with
        `prefix_lengths` [N] and `prefix_index` [B]), or instead of [N, P, H] the N prefixes'
        keys and values computed beforehand (`prefix_kv`, from `prefix_kv`).
        """

    def activations(self, params: Params, embeds: jax.Array, mask: jax.Array, *,
                    kind: str = "output_input") -> dict:
        """FFN activations {stack name: [L, B, T, F]} (one stack: the decoder of decoder-only
        families, the encoder otherwise; T5 also takes `stack="decoder"`, its decoder's first
        position, which the neuron overlap reads).

        `kind` (see `FFN_ACTIVATION_KINDS`) says which point of each FFN:
          "output_input": the input of the output projection, act(x W_i), or act(x W_gate) *
            (x W_up) on gated FFNs (SwiGLU, GeGLU, T5 v1.1's gated GELU).
          "pre_activation": the input of the activation function, x W_i, or x W_gate on gated
            FFNs. A neuron is activated when it is > 0 (for ReLU, GELU and SiLU alike), which
            the neuron-overlap indicator reads (`prompt_jax.indicators`); on a gated FFN the
            sign of "output_input" also carries the sign of the up projection, so it would not.
        """

    def encode(self, params: Params, embeds: jax.Array, mask: jax.Array, **kwargs) -> jax.Array:
        """Encoder output [B, T, H] (encoder and encoder-decoder families)."""

    def hidden_states(self, params: Params, embeds: jax.Array, mask: jax.Array,
                      **kwargs) -> jax.Array:
        """Final-normed hidden states [B, T, H] (decoder-only families)."""

    def prefix_kv(self, params: Params, prefix: jax.Array, prefix_lengths: jax.Array | None = None,
                  **kwargs) -> tuple[jax.Array, jax.Array]:
        """Every layer's keys and values of a prefix [P, H] ([L, 1, P, K, D] each) or of N
        prefixes [N, P, H] ([L, N, P, K, D]), when `shares_prefix`."""

    def score_packed(self, params: Params, embeds: jax.Array, segment_ids: jax.Array,
                     positions: jax.Array, last: jax.Array, candidate_ids: jax.Array,
                     candidate_mask: jax.Array, **kwargs) -> jax.Array:
        """`score` [B, C] of B examples packed into rows (see `prompt_jax.training.packing`), when
        `packs`: single-token candidates at `last` [B], or each example's target packed after
        its input ([B, 1, K], teacher-forced) at `last` [B, K]."""

    def pack_keys_per_token(self) -> float:
        """Attention keys per query costing as much as one token's matmuls, when `packs`."""

    def generate(self, params: Params, embeds: jax.Array, mask: jax.Array,
                 max_new_tokens: int, **kwargs) -> jax.Array:
        """Greedy continuation [B, max_new_tokens] int32 (generative families), decoded with a
        key/value cache: `pad_id` after a row's EOS.

        Keyword arguments every generative family accepts: `eos_ids` (int or [E]; default the
        config's EOS), `pad_id` (default the config's pad), `live` ([B] bool, rows to decode;
        the others come back all pad) and `limit` (traced cap <= max_new_tokens). Backbones
        that `shares_prefix` also take the prompt as `score` does (`prefix`, `prefix_lengths`,
        `prefix_index`, `prefix_kv`): its keys and values computed once. `decoding.greedy` is
        the batched, bucketed entry point on top.
        """


# `activations(kind=...)` -> the name each family's FFN sows into the 'intermediates' collection.
FFN_ACTIVATION_KINDS = {"output_input": "ffn", "pre_activation": "ffn_pre_activation"}


def ffn_sown_name(kind: str) -> str:
    """The sown name of an FFN activation `kind`, with a clear error for an unknown one."""
    if kind not in FFN_ACTIVATION_KINDS:
        raise ValueError(f"unknown FFN activation kind {kind!r}; use one of "
                         f"{sorted(FFN_ACTIVATION_KINDS)}")
    return FFN_ACTIVATION_KINDS[kind]


class FlaxBackbone:
    """Plumbing every family shares: the Linen module is static, params are passed in.

    A family sets `family`, `config`, `module`, `prompt_style` and `_dummy()` (inputs that
    reach every parameter at init), and implements the `Backbone` methods on top of `_apply`.
    Optional capabilities default to off: flags False, methods raising NotImplementedError.
    """

    family: str
    config: Any
    module: nn.Module
    prompt_style: str
    default_placement: str = "prefix"
    shares_prefix: bool = False
    packs: bool = False

    def _dummy(self) -> tuple:
        raise NotImplementedError

    def init_params(self, rng: jax.Array) -> Params:
        """Random parameters (tests and shape inference only: real weights come from convert)."""
        return init_variables(self.module, rng, *self._dummy())

    def abstract_params(self) -> tuple[Params, Params]:
        """(shape tree, logical axes tree) without allocating."""
        return abstract_params(self.module, *self._dummy())

    def param_axes(self) -> Params:
        return self.abstract_params()[1]

    def _apply(self, params, *args, method, rngs=None, **kwargs):
        return self.module.apply({"params": params}, *args, method=method, rngs=rngs, **kwargs)

    def _lacks(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"the {self.family} backbone has no {what}")

    def encode(self, params, embeds, mask, **kwargs) -> jax.Array:
        raise self._lacks("encoder (encode)")

    def hidden_states(self, params, embeds, mask, **kwargs) -> jax.Array:
        raise self._lacks("decoder-only hidden_states")

    def prefix_kv(self, params, prefix, prefix_lengths=None, **kwargs):
        raise self._lacks("shared-prefix keys and values (prefix_kv; shares_prefix is False)")

    def score_packed(self, params, embeds, segment_ids, positions, last, candidate_ids,
                     candidate_mask, **kwargs) -> jax.Array:
        raise self._lacks("packed scoring (score_packed; packs is False)")

    def pack_keys_per_token(self) -> float:
        raise self._lacks("packed scoring (pack_keys_per_token; packs is False)")

    def generate(self, params, embeds, mask, max_new_tokens: int, **kwargs) -> jax.Array:
        raise self._lacks("generation (generate)")


def init_variables(module: nn.Module, rng: jax.Array, *args, **kwargs) -> Params:
    """Runs `module.init` and strips the logical-axis boxes: plain array params."""
    variables = module.init({"params": rng, "dropout": rng}, *args, **kwargs)
    return nn.unbox(variables["params"])


def abstract_params(module: nn.Module, *args, **kwargs) -> tuple[Params, Params]:
    """(ShapeDtypeStruct tree, logical PartitionSpec tree) of a module's params, no FLOPs."""
    boxed = jax.eval_shape(
        lambda: module.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, *args,
                            **kwargs)["params"]
    )
    return nn.unbox(boxed), nn.get_partition_spec(boxed)


def broadcast_candidates(
    candidate_ids: jax.Array, candidate_mask: jax.Array, batch: int
) -> tuple[jax.Array, jax.Array]:
    """[C, K] or [B, C, K] candidates -> [B, C, K] ids and mask."""
    if candidate_ids.ndim == 2:
        candidate_ids = jnp.broadcast_to(candidate_ids[None], (batch, *candidate_ids.shape))
        candidate_mask = jnp.broadcast_to(candidate_mask[None], (batch, *candidate_mask.shape))
    if candidate_ids.ndim != 3 or candidate_ids.shape != candidate_mask.shape:
        raise ValueError(
            f"candidates must be [C, K] or [B, C, K] with a mask of the same shape; got ids "
            f"{candidate_ids.shape} and mask {candidate_mask.shape}"
        )
    return candidate_ids, candidate_mask


def candidate_totals(logp: jax.Array, candidate_mask: jax.Array, *,
                     mean: bool = False) -> jax.Array:
    """Per-token log-probs [B, C, K] of candidates -> their scores [B, C]: the sum over the
    candidate's real tokens (or their mean, `mean=True`). A candidate whose mask is all zero is
    a padded slot (a row's task has fewer candidates than the batch's widest) and scores -inf,
    so it never wins and drops out of a softmax over the candidates.

    Every family's `score` ends here, so a padded slot scores -inf on every backbone.
    """
    cmask = candidate_mask.astype(jnp.float32)  # [B, C, K]
    real = cmask.sum(-1)  # [B, C] real tokens per candidate
    total = (logp.astype(jnp.float32) * cmask).sum(-1)  # [B, C]
    if mean:
        total = total / jnp.maximum(real, 1.0)
    return jnp.where(real > 0, total, -jnp.inf)


def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p(target) under logits: [..., V] and [...] -> [...], in float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def dtype_of(name: str) -> jnp.dtype:
    """'float32' / 'bfloat16' / 'float16' -> jnp dtype, with a clear error otherwise."""
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unsupported dtype {name!r}; use float32, bfloat16 or float16")
    return jnp.dtype(name)


def with_options(model: Backbone, params: Params, mesh, *, remat: bool = False,
                 unroll_layers: bool = False, scan_layers: bool = True
                 ) -> tuple[Backbone, Params]:
    """A loaded backbone with its compile options (see `engine.load_model`): the same
    weights; only the compiled programs change, and with `scan_layers=False` the layout of the
    layers' params (each layer's apart, placed by the per-layer model's shardings).

    Raises:
      ValueError: an option the family does not have.
    """
    changes = {}
    if remat:  # only the backward pass changes
        changes["remat"] = True
    for option, value, default in (("unroll_layers", unroll_layers, False),
                                   ("scan_layers", scan_layers, True)):
        if value != default:
            if not hasattr(model.config, option):
                raise ValueError(f"{option}={value} is an option of the decoder-only backbones "
                                 f"(llama, gemma3), not of {model.family}")
            changes[option] = value
    if not changes:
        return model, params
    model = type(model)(dataclasses.replace(model.config, **changes))
    if not scan_layers:
        split = jax.jit(lambda p: {**p, "layers": layers.split_layers(p["layers"])},
                        out_shardings=partitioning.param_shardings(model, mesh))
        params = split(params)
    return model, params
