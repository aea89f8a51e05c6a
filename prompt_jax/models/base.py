"""The one interface every backbone family implements.

Prompts, training, transfer, indicators and serving talk to a model only through `Backbone`, so
they never branch on the family. Parameters are plain pytrees passed as arguments (never stored
on the model object), so a jitted step can take them sharded.

Shapes: B batch, T input length, H d_model, C candidates, K candidate length, V vocab,
L layers, F FFN width.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = Any  # nested dict of arrays, as produced by flax `init` (unboxed)


@runtime_checkable
class Backbone(Protocol):
    """A frozen pretrained model seen from prompt tuning."""

    family: str  # "t5" | "roberta" | "bert" | "llama"
    config: Any

    @property
    def d_model(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_length(self) -> int: ...

    def init_params(self, rng: jax.Array) -> Params:
        """Random parameters (tests and shape inference only: real weights come from convert)."""

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
        """Log-likelihood [B, C] of each candidate continuation ([C, K] or [B, C, K]).

        Keyword arguments every family accepts: `target_positions` ([B] index of the predicted
        position, masked LMs only), `deterministic` (False turns dropout on) and `rngs`.
        """

    def activations(self, params: Params, embeds: jax.Array, mask: jax.Array) -> dict:
        """FFN activations {stack name: [L, B, T, F]} (input of each FFN output projection)."""


class FlaxBackbone:
    """Plumbing every family shares: the Linen module is static, params are passed in.

    A family sets `family`, `config`, `module` and `_dummy()` (inputs that reach every
    parameter at init), and implements the `Backbone` methods on top of `_apply`.
    """

    family: str
    config: Any
    module: nn.Module

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


def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p(target) under logits: [..., V] and [...] -> [...], in float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def dtype_of(name: str) -> jnp.dtype:
    """'float32' / 'bfloat16' / 'float16' -> jnp dtype, with a clear error otherwise."""
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unsupported dtype {name!r}; use float32, bfloat16 or float16")
    return jnp.dtype(name)
