"""Will a big frozen model fit? The train step compiled ahead of time, without the weights.

Prompt tuning's point is a frozen model too big to fine-tune (Lester et al.'s results are on
T5-XXL, 11B parameters). `memory_report` builds a named model shape's params as abstract arrays
(shapes, dtypes and the rules table's shardings: nothing allocated, nothing read), lowers and
compiles the real train step (`train.make_train_step`, Adafactor, the prompt replicated, the
batch over 'data', the frozen params over 'model') for a mesh, and reads each device's memory
from the compiled executable: its arguments (the param shards, the train state, the batch
shard), its temporaries, and every large param the rules table leaves whole on each device.

Fake CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=64`) stand in for a pod
slice: the parameter figures are exact for any backend, the temporaries are what the CPU
compiler plans (see `benchmarks/aot_memory.py` and the README for how TPU's differ).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding

from prompt_jax import partitioning
from prompt_jax.models import T5, Llama, LlamaConfig, T5Config
from prompt_jax.models.base import Backbone
from prompt_jax.training import train

# A param at least this large that is whole on every device is reported as replicated.
LARGE_BYTES = 1 << 20


def _t5(d_model, d_ff, layers, heads, **kw) -> Callable[..., Backbone]:
    """T5 v1.1 / LM-adapted (gated GELU, untied head), the models of Lester et al."""
    return lambda **over: T5(T5Config(
        vocab_size=32128, d_model=d_model, d_kv=64, d_ff=d_ff, num_layers=layers,
        num_decoder_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, scale_decoder_outputs=False, **kw, **over))


# Named shapes, from the models' published configs (no weights needed).
SHAPES: dict[str, Callable[..., Backbone]] = {
    "t5-xxl": _t5(4096, 10240, 24, 64),  # google/t5-v1_1-xxl, t5-xxl-lm-adapt: 11.1B
    "t5-base": _t5(768, 2048, 12, 12),  # google/t5-base-lm-adapt: 248M
    "llama-8b": lambda **over: Llama(LlamaConfig(  # meta-llama/Llama-3.1-8B: 8.0B
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0,
        max_position_embeddings=8192, tie_word_embeddings=False, **over)),
}


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    """Per-device memory of the compiled train step of one model shape on one mesh.

    Attributes:
      shape: the SHAPES name.
      dtype: the params' (and compute) dtype.
      mesh: (data, model) devices.
      batch_size, input_length, target_length, prompt_length: the step's global batch.
      remat: whether each layer is rematerialized in the backward pass.
      num_params: the frozen model's parameter count.
      param_bytes: the whole frozen model.
      param_bytes_per_device: the largest per-device share of it under the rules table.
      argument_bytes: the compiled step's arguments on one device (params, state, batch).
      output_bytes: its outputs on one device (the new state, metrics).
      temp_bytes: its temporaries on one device (activations kept for the backward pass,
        gradients, collectives' buffers), as the compiler planned them.
      replicated: (param path, bytes) of every param of at least LARGE_BYTES whole on each
        device.
      compile_seconds: lowering plus compiling.
    """

    shape: str
    dtype: str
    mesh: tuple[int, int]
    batch_size: int
    input_length: int
    target_length: int
    prompt_length: int
    remat: bool
    num_params: int
    param_bytes: int
    param_bytes_per_device: int
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    replicated: tuple[tuple[str, int], ...]
    compile_seconds: float


def _per_device_bytes(leaf: jax.ShapeDtypeStruct) -> int:
    return math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize


def abstract_params(model: Backbone, mesh: Mesh):
    """The params as ShapeDtypeStructs carrying the rules table's shardings."""
    shapes, _ = model.abstract_params()
    return jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                                 sharding=sharding),
                        shapes, partitioning.param_shardings(model, mesh))


def abstract_batch(mesh: Mesh, batch_size: int, input_length: int,
                   target_length: int) -> dict[str, jax.ShapeDtypeStruct]:
    """A training batch (`train.py`'s keys, unpacked) split over 'data'."""
    shapes = {"inputs": (batch_size, input_length), "input_mask": (batch_size, input_length),
              "targets": (batch_size, target_length),
              "target_mask": (batch_size, target_length), "label": (batch_size,),
              "target_position": (batch_size,), "weight": (batch_size,)}
    sharding = partitioning.batch_sharding(mesh)
    return {k: jax.ShapeDtypeStruct(v, jnp.float32 if k == "weight" else jnp.int32,
                                    sharding=sharding) for k, v in shapes.items()}


def memory_report(shape: str, mesh: Mesh, *, batch_size: int = 32, input_length: int = 412,
                  target_length: int = 4, prompt_length: int = 100, dtype: str = "bfloat16",
                  remat: bool = True) -> MemoryReport:
    """Compiles the prompt-tuning train step of a named model shape for `mesh`, ahead of time.

    Args:
      shape: a SHAPES name.
      mesh: a ('data', 'model') mesh (`partitioning.make_mesh`), fake CPU devices will do.
      batch_size: the global batch (a multiple of the data axis).
      input_length: input tokens per example (the prompt not included).
      target_length: target tokens per example (the verbalizer).
      prompt_length: soft-prompt vectors.
      dtype: the params' and compute dtype.
      remat: rematerialize each layer in the backward pass (saves activation memory).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; known: {sorted(SHAPES)}")
    partitioning.check_batch_size(batch_size, mesh)
    model = SHAPES[shape](dtype=dtype, param_dtype=dtype, remat=remat)
    params = abstract_params(model, mesh)
    optimizer = train.make_optimizer(train.OptimizerConfig())
    replicated = partitioning.replicated(mesh)
    state = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
        jax.eval_shape(lambda: train.init_state(
            jnp.zeros((prompt_length, model.d_model), jnp.float32), optimizer)))
    step = train.jit_train_step(train.make_train_step(model, optimizer), model, mesh)
    started = time.perf_counter()
    compiled = step.lower(state, params, abstract_batch(mesh, batch_size, input_length,
                                                        target_length)).compile()
    seconds = time.perf_counter() - started
    memory = compiled.memory_analysis()
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return MemoryReport(
        shape=shape, dtype=dtype, mesh=(mesh.shape["data"], mesh.shape["model"]),
        batch_size=batch_size, input_length=input_length, target_length=target_length,
        prompt_length=prompt_length, remat=remat,
        num_params=sum(math.prod(leaf.shape) for _, leaf in leaves),
        param_bytes=sum(math.prod(leaf.shape) * leaf.dtype.itemsize for _, leaf in leaves),
        param_bytes_per_device=sum(_per_device_bytes(leaf) for _, leaf in leaves),
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        replicated=tuple(
            (jax.tree_util.keystr(path, simple=True, separator="/"), _per_device_bytes(leaf))
            for path, leaf in leaves
            if _per_device_bytes(leaf) >= LARGE_BYTES and isinstance(leaf.sharding, NamedSharding)
            and leaf.sharding.is_fully_replicated),
        compile_seconds=seconds,
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def format_table(reports: list[MemoryReport]) -> str:
    """A markdown table, one row per report."""
    lines = ["| model | params | dtype | mesh (data x model) | whole model | params / device "
             "| arguments / device | temporaries / device | large params replicated |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        replicated = ", ".join(f"{p} ({_gb(b)})" for p, b in r.replicated) or "none"
        lines.append(f"| {r.shape} | {r.num_params / 1e9:.2f}B | {r.dtype} | "
                     f"{r.mesh[0]} x {r.mesh[1]} | {_gb(r.param_bytes)} | "
                     f"{_gb(r.param_bytes_per_device)} | {_gb(r.argument_bytes)} | "
                     f"{_gb(r.temp_bytes)} | {replicated} |")
    return "\n".join(lines)
