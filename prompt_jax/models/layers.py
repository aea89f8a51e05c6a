"""Building blocks shared by the backbone families.

Every parameter is created through `with_axes`, so it carries logical axis names (see
`partitioning.LOGICAL_AXES`), which `partitioning.py` maps onto a device mesh. Computation runs
in `dtype`, parameters are stored in `param_dtype`; norms and softmax always run in float32.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_jax.partitioning import LOGICAL_AXES

# Added to attention logits of masked positions. Finite so that fully masked rows stay finite.
MASK_VALUE = -1e9

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns the activation function called `name` in Hugging Face configs."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def with_axes(init: Callable, axes: Sequence[str]) -> Callable:
    """Wraps an initializer so the parameter carries logical axis names."""
    unknown = [a for a in axes if a not in LOGICAL_AXES]
    if unknown:
        raise ValueError(f"unknown logical axis names {unknown}; known: {LOGICAL_AXES}")
    return nn.with_logical_partitioning(init, tuple(axes))


class Linear(nn.Module):
    """`y = x @ kernel (+ bias)` contracting the trailing `len(in_axes)` dims of x.

    The kernel is shaped `x.shape[-len(in_axes):] + features`, e.g. [embed, heads, kv] for a
    query projection and [heads, kv, embed] for the attention output.
    """

    features: tuple[int, ...]
    in_axes: tuple[str, ...]
    out_axes: tuple[str, ...]
    use_bias: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    init_std: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = len(self.in_axes)
        kernel = self.param(
            "kernel",
            with_axes(nn.initializers.normal(self.init_std), self.in_axes + self.out_axes),
            tuple(x.shape[-n_in:]) + tuple(self.features),
            self.param_dtype,
        )
        y = jax.lax.dot_general(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ())),
        )
        if self.use_bias:
            bias = self.param(
                "bias", with_axes(nn.initializers.zeros, self.out_axes), self.features,
                self.param_dtype,
            )
            y = y + bias.astype(self.dtype)
        return y


class Embed(nn.Module):
    """A lookup table [num, features] with logical axes."""

    num: int
    features: int
    axes: tuple[str, str] = ("vocab", "embed")
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding",
            with_axes(nn.initializers.normal(0.02), self.axes),
            (self.num, self.features),
            self.param_dtype,
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits against the table (a tied output head): [..., features] -> [..., num]."""
        return jnp.einsum("...h,vh->...v", x.astype(self.dtype), self.embedding.astype(self.dtype))


class RMSNorm(nn.Module):
    """T5 / Llama layer norm: scale only, no mean subtraction, computed in float32."""

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale", with_axes(nn.initializers.ones, ("embed",)), (x.shape[-1],), self.param_dtype
        )
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
        return (x32 * scale.astype(jnp.float32)).astype(self.dtype)


class LayerNorm(nn.Module):
    """BERT layer norm (mean and variance, scale and bias), computed in float32."""

    epsilon: float = 1e-12
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param(
            "scale", with_axes(nn.initializers.ones, ("embed",)), (features,), self.param_dtype
        )
        bias = self.param(
            "bias", with_axes(nn.initializers.zeros, ("embed",)), (features,), self.param_dtype
        )
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


def attention_bias(key_mask: jax.Array, causal: bool = False) -> jax.Array:
    """Additive attention bias from a key padding mask.

    Args:
      key_mask: [B, Tk] 1 for real tokens, 0 for padding.
      causal: also hide keys after each query (queries and keys are the same positions).

    Returns:
      [B, 1, Tq, Tk] float32 bias (Tq = 1 unless causal).
    """
    visible = key_mask[:, None, None, :].astype(bool)  # [B, 1, 1, Tk]
    if causal:
        t = key_mask.shape[1]
        visible = visible & jnp.tril(jnp.ones((t, t), bool))[None, None]
    return jnp.where(visible, 0.0, MASK_VALUE).astype(jnp.float32)


def segment_attention_bias(segment_ids: jax.Array) -> jax.Array:
    """Causal attention bias for packed rows: a token sees the earlier tokens of its own segment.

    Args:
      segment_ids: [B, T] the example (1, 2, ...) each token belongs to; 0 for padding.

    Returns:
      [B, 1, T, T] float32 bias.
    """
    t = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, Tq, Tk]
    visible = same & (segment_ids[:, None, :] > 0) & jnp.tril(jnp.ones((t, t), bool))[None]
    return jnp.where(visible[:, None], 0.0, MASK_VALUE).astype(jnp.float32)


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array,
    *,
    scale: float,
    dropout: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """Multi-head (or grouped-query) attention.

    Args:
      q: [B, Tq, N, D] queries.
      k: [B, Tk, K, D] keys, with N a multiple of K (grouped-query attention when K < N).
      v: [B, Tk, K, D] values.
      bias: additive bias broadcastable to [B, N, Tq, Tk] (head dim N or 1).
      scale: multiplies q.k (1/sqrt(D) for BERT/Llama, 1.0 for T5).
      dropout: optional dropout applied to the attention probabilities.

    Returns:
      [B, Tq, N, D]
    """
    b, tq, n, d = q.shape
    kv_heads = k.shape[2]
    groups = n // kv_heads
    q = q.reshape(b, tq, kv_heads, groups, d)
    logits = jnp.einsum("bqkgd,btkd->bkgqt", q, k).astype(jnp.float32) * scale  # [B,K,G,Tq,Tk]
    if bias.shape[1] == n and n > 1:
        bias = bias.reshape(bias.shape[0], kv_heads, groups, *bias.shape[2:])
    else:
        bias = bias[:, :, None]  # head dim of 1 broadcasts over (K, G)
    probs = jax.nn.softmax(logits + bias, axis=-1)
    if dropout is not None:
        probs = dropout(probs)
    out = jnp.einsum("bkgqt,btkd->bqkgd", probs.astype(v.dtype), v)
    return out.reshape(b, tq, n, d)


def rope_inverse_frequencies(
    head_dim: int, theta: float, rope_type: str = "default", scaling: dict | None = None
) -> np.ndarray:
    """RoPE inverse frequencies [head_dim // 2] ('default' and Llama 3 'llama3' scaling)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if rope_type == "default":
        return inv_freq.astype(np.float32)
    if rope_type == "linear":
        return (inv_freq / scaling["factor"]).astype(np.float32)
    if rope_type == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise NotImplementedError(f"RoPE type {rope_type!r} is not supported (default, linear, llama3)")


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotary embedding in Hugging Face's rotate-half layout.

    Args:
      x: [B, T, N, D]
      positions: [B, T] integer positions.
      inv_freq: [D // 2]
    """
    freqs = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)  # [B, T, D/2]
    angles = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B, T, 1, D]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """Positions that skip padding: the i-th real token gets position i. [B, T] -> [B, T]."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)


_UNROLL_SCANS = False  # set by `unrolled_scans` while a step is traced


@contextlib.contextmanager
def unrolled_scans() -> Iterator[None]:
    """Layer stacks traced inside this context are unrolled (no XLA while loop).

    For counting FLOPs: XLA's cost analysis counts a loop body once, whatever its trip count,
    so a scanned model's step reports about one layer's FLOPs. Trace a fresh `jax.jit` inside
    the context (a cached trace from outside it would still hold the loop); the results are
    the same, only the program's shape differs.
    """
    global _UNROLL_SCANS
    previous, _UNROLL_SCANS = _UNROLL_SCANS, True
    try:
        yield
    finally:
        _UNROLL_SCANS = previous


class PerLayer(nn.Module):
    """`num_layers` copies of `block`, each with its own params (`params['0']`,
    `params['1']`, ...), called in a Python loop: `scan_layers(per_layer=True)`.

    Called as the scanned stack is (`block(x, *args) -> (x, y)`, args sliced per `in_axes`, the
    y's stacked). No weight is sliced out of a stacked array in the program, so no layer's
    weights are copied before their matmuls; the program holds every layer (a longer compile).
    Sown intermediates stay per layer: read them through `stacked_layers`.
    """

    block: Any  # a Module class
    num_layers: int
    in_axes: tuple
    fields: tuple  # the block's own constructor arguments

    @nn.compact
    def __call__(self, x, *args):
        ys = []
        for i in range(self.num_layers):
            layer_args = [a if axis is nn.broadcast else jax.tree.map(lambda t, i=i: t[i], a)
                          for a, axis in zip(args, self.in_axes, strict=True)]
            x, y = self.block(*self.fields, name=str(i))(x, *layer_args)
            ys.append(y)
        return x, jax.tree.map(lambda *t: jnp.stack(t), *ys)


def scan_layers(block: type[nn.Module], num_layers: int, remat: bool,
                in_axes: tuple = (nn.broadcast,), unroll: bool = False,
                per_layer: bool = False):
    """Stacks `block` `num_layers` times with `nn.scan` (params gain a leading 'layers' axis).

    The block is called as `block(x, *args) -> (x, y)`; each arg is broadcast to every layer
    or sliced along its leading axis, per `in_axes`, and the y's are stacked. FFN activations
    sown into the 'intermediates' collection are stacked along the layer axis too. `unroll`
    (or `unrolled_scans`) traces every layer into the program instead of an XLA loop: the
    same params and results, another program. `per_layer`: a `PerLayer` stack instead (each
    layer's params apart; `split_layers` turns stacked params into them).
    """
    if remat:
        block = nn.remat(block, prevent_cse=False)
    if per_layer:
        return lambda *fields, name: PerLayer(block, num_layers, in_axes, fields, name=name)
    return nn.scan(
        block,
        variable_axes={"params": 0, "intermediates": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=in_axes,
        length=num_layers,
        unroll=num_layers if (unroll or _UNROLL_SCANS) else 1,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )


def split_layers(stacked: Any) -> dict[str, Any]:
    """The params of a scanned stack ([L, ...] leaves) as `PerLayer`'s: {'0': ..., '1': ...}."""
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    return {str(i): jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(num_layers)}


def stacked_layers(tree: Any) -> Any:
    """A scanned stack's params or intermediates as they are, a `PerLayer` stack's ({'0': ...,
    '1': ...}) stacked along a new leading layer axis: the scanned stack's layout either way."""
    if not (isinstance(tree, Mapping) and "0" in tree):
        return tree
    return jax.tree.map(lambda *t: jnp.stack(t), *(tree[str(i)] for i in range(len(tree))))
