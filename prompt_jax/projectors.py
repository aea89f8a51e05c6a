"""Prompt projectors: carry a soft prompt from one model to another of a different width.

Su et al. (2022), "On Transferability of Prompt Tuning for Natural Language Processing", map a
source prompt [P_s, d_s] to a target model's prompt [P_t, d_t] with a two-layer perceptron over
the flattened prompt (their `AE_1_layer_mutiple_100_paper`: Linear -> tanh -> Linear, then a
LayerNorm over each target token; the later `prompt_hub` `CrossModelProjector` uses LeakyReLU
and a hidden width of 768). The projector is trained either by distance minimization (source
prompts of some tasks onto the target model's prompts of the same tasks, `distance_loss`) or
by task tuning (project, feed the frozen target model, back-propagate the task loss into the
projector only). Both are trainables of the engine's one loop, with orbax checkpoints and
exact resume: the jobs are `prompt_jax.commands.projector_commands`.

Three kinds, each a static `ProjectorConfig` and a plain dict of arrays:

  flat    the paper's projector over the flattened prompt; P_t may differ from P_s
  token   one MLP d_s -> d_t applied to every prompt vector (any prompt length)
  linear  one affine map d_s -> d_t per vector, fitted in closed form (`fit_linear`)

Everything here is a pure function over arrays (jittable, differentiable in the params).
Projectors are saved as `<name>.safetensors` plus a JSON sidecar `<name>.json`
(`save_projector`, `load_projector`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

KINDS = ("flat", "token", "linear")
ACTIVATIONS = ("tanh", "leaky_relu")
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's, as in the paper's projector
FILE_FORMAT = "prompt_jax.projector"
Params = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class ProjectorConfig:
    """The architecture of a projector (static, hashable: jitted functions close over it).

    Attributes:
      kind: one of KINDS.
      source_width: d_s, the source model's width.
      target_width: d_t, the target model's width.
      source_length: P_s (the flat kind only; the others take prompts of any length).
      target_length: P_t (the flat kind only; the others keep the source's length).
      hidden: the hidden width of the two-layer kinds.
      activation: one of ACTIVATIONS, between the two layers.
      layer_norm: a LayerNorm (learned scale and bias) over each output vector.
    """

    kind: str
    source_width: int
    target_width: int
    source_length: int | None = None
    target_length: int | None = None
    hidden: int = 768
    activation: str = "tanh"
    layer_norm: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown projector kind {self.kind!r}; use one of {KINDS}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; use one of {ACTIVATIONS}")
        lengths = (self.source_length, self.target_length)
        if self.kind == "flat" and not all(n and n > 0 for n in lengths):
            raise ValueError(f"a flat projector needs positive source and target lengths, got "
                             f"{lengths}")
        if self.kind != "flat" and any(n is not None for n in lengths):
            raise ValueError(f"a {self.kind} projector maps each vector and keeps the prompt's "
                             f"length; give no lengths (got {lengths})")
        if min(self.source_width, self.target_width, self.hidden) < 1:
            raise ValueError(f"widths must be positive: source {self.source_width}, target "
                             f"{self.target_width}, hidden {self.hidden}")

    def output_length(self, source_length: int) -> int:
        """P_t for a source prompt of `source_length` vectors."""
        return self.target_length if self.kind == "flat" else source_length


def _dense(rng: jax.Array, fan_in: int, fan_out: int) -> tuple[jax.Array, jax.Array]:
    """torch.nn.Linear's default init: weight and bias uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    w_rng, b_rng = jax.random.split(rng)
    return (jax.random.uniform(w_rng, (fan_in, fan_out), jnp.float32, -bound, bound),
            jax.random.uniform(b_rng, (fan_out,), jnp.float32, -bound, bound))


def init(config: ProjectorConfig, rng: jax.Array) -> Params:
    """Fresh params of a projector: {"w1", "b1", "w2", "b2"} (+ {"ln_scale", "ln_bias"}) for
    the two-layer kinds, {"w", "b"} for the linear kind (the identity where widths match, else
    zeros: fit it with `fit_linear`)."""
    if config.kind == "linear":
        d_s, d_t = config.source_width, config.target_width
        w = jnp.eye(d_s, dtype=jnp.float32) if d_s == d_t else jnp.zeros((d_s, d_t), jnp.float32)
        return {"w": w, "b": jnp.zeros((d_t,), jnp.float32)}
    d_in, d_out = config.source_width, config.target_width
    if config.kind == "flat":
        d_in, d_out = config.source_length * d_in, config.target_length * d_out
    rng1, rng2 = jax.random.split(rng)
    params = {}
    params["w1"], params["b1"] = _dense(rng1, d_in, config.hidden)
    params["w2"], params["b2"] = _dense(rng2, config.hidden, d_out)
    if config.layer_norm:
        params["ln_scale"] = jnp.ones((config.target_width,), jnp.float32)
        params["ln_bias"] = jnp.zeros((config.target_width,), jnp.float32)
    return params


def init_flat(rng: jax.Array, source_length: int, source_width: int, target_length: int,
              target_width: int, *, hidden: int = 768, activation: str = "tanh",
              layer_norm: bool = True) -> tuple[ProjectorConfig, Params]:
    """The paper's projector over the flattened prompt: [P_s * d_s] -> Linear -> activation ->
    Linear -> [P_t * d_t], then a LayerNorm per target vector (optional).

    Returns:
      (config, params).
    """
    config = ProjectorConfig("flat", source_width, target_width, source_length, target_length,
                             hidden, activation, layer_norm)
    return config, init(config, rng)


def init_token(rng: jax.Array, source_width: int, target_width: int, *, hidden: int = 768,
               activation: str = "tanh", layer_norm: bool = False
               ) -> tuple[ProjectorConfig, Params]:
    """One MLP d_s -> hidden -> d_t applied to every prompt vector (any prompt length).

    Returns:
      (config, params).
    """
    config = ProjectorConfig("token", source_width, target_width, hidden=hidden,
                             activation=activation, layer_norm=layer_norm)
    return config, init(config, rng)


def fit_linear(source_prompts, target_prompts) -> tuple[ProjectorConfig, Params]:
    """The least-squares affine map of paired prompt vectors, in closed form.

    Each source prompt's i-th vector is paired with its target prompt's i-th vector; W, b
    minimize ||X W + b - Y||^2 over all pairs (`jnp.linalg.lstsq`, the minimum-norm solution
    when underdetermined).

    Args:
      source_prompts: [N, P, d_s] (or [P, d_s]).
      target_prompts: [N, P, d_t], the same N and P.

    Returns:
      (config, params) of a linear projector.
    """
    x, y = jnp.asarray(source_prompts, jnp.float32), jnp.asarray(target_prompts, jnp.float32)
    if x.ndim == 2:
        x, y = x[None], y[None]
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"paired prompts need the same number and length: source "
                         f"{tuple(x.shape)}, target {tuple(y.shape)}")
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])  # [N * P, d]
    design = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)  # [N * P, d_s + 1]
    solution = jnp.linalg.lstsq(design, y)[0]  # [d_s + 1, d_t]
    config = ProjectorConfig("linear", x.shape[1], y.shape[1], layer_norm=False)
    return config, {"w": solution[:-1], "b": solution[-1]}


def _activate(config: ProjectorConfig, h: jax.Array) -> jax.Array:
    return jnp.tanh(h) if config.activation == "tanh" else jax.nn.leaky_relu(h, 0.01)


def _layer_norm(params: Params, x: jax.Array) -> jax.Array:
    """LayerNorm over the last axis (each target vector), as torch.nn.LayerNorm(d_t)."""
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * params["ln_scale"] \
        + params["ln_bias"]


def check_prompt(config: ProjectorConfig, shape: tuple[int, ...]) -> None:
    """Raises a ValueError naming both widths (or lengths) if a prompt does not fit."""
    if len(shape) != 2:
        raise ValueError(f"a prompt is a 2-D [length, width] array; got shape {tuple(shape)}")
    if shape[1] != config.source_width:
        raise ValueError(f"the projector maps prompts of width {config.source_width}, but this "
                         f"prompt has width {shape[1]} (shape {tuple(shape)})")
    if config.kind == "flat" and shape[0] != config.source_length:
        raise ValueError(f"the flat projector maps prompts of length {config.source_length}, "
                         f"but this prompt has length {shape[0]} (shape {tuple(shape)})")


def apply(config: ProjectorConfig, params: Params, prompt: jax.Array) -> jax.Array:
    """Projects one source prompt [P_s, d_s] to the target model's prompt [P_t, d_t].

    Raises:
      ValueError: the prompt's width (or, for the flat kind, length) is not the projector's.
    """
    check_prompt(config, prompt.shape)
    prompt = prompt.astype(jnp.float32)
    if config.kind == "linear":
        return prompt @ params["w"] + params["b"]  # [P, d_t]
    x = prompt.reshape(1, -1) if config.kind == "flat" else prompt  # [1, P_s*d_s] or [P, d_s]
    h = _activate(config, x @ params["w1"] + params["b1"])  # [., hidden]
    out = (h @ params["w2"] + params["b2"]).reshape(-1, config.target_width)  # [P_t, d_t]
    return _layer_norm(params, out) if config.layer_norm else out


def apply_batch(config: ProjectorConfig, params: Params, prompts: jax.Array) -> jax.Array:
    """`apply` over a batch of source prompts [N, P_s, d_s] -> [N, P_t, d_t]."""
    return jax.vmap(lambda p: apply(config, params, p))(prompts)


def distance_loss(config: ProjectorConfig, params: Params, source_prompts: jax.Array,
                  target_prompts: jax.Array) -> jax.Array:
    """Distance minimization: the squared euclidean distance between each projected source
    prompt and its target prompt (flattened), averaged over the batch of pairs.

    Args:
      source_prompts: [N, P_s, d_s].
      target_prompts: [N, P_t, d_t], the target model's prompts of the same N tasks.
    """
    projected = apply_batch(config, params, source_prompts)  # [N, P_t, d_t]
    return jnp.square(projected - target_prompts).sum(axis=(1, 2)).mean()


def distance_step(projector: ProjectorConfig, optimizer: optax.GradientTransformation
                  ) -> Callable:
    """The engine's step `(state, frozen_params, batch) -> (state, metrics)` for distance
    minimization: `state.trainable` is the projector's params, the batch a set of pairs
    {"source" [B, P_s, d_s], "target" [B, P_t, d_t]}; no model, so no frozen params."""
    from prompt_jax.training.train import TrainState

    def step(state, frozen_params, batch):
        del frozen_params
        loss, grad = jax.value_and_grad(distance_loss, argnums=1)(
            projector, state.trainable, batch["source"], batch["target"])
        updates, opt_state = optimizer.update(grad, state.opt_state, state.trainable)
        trained = optax.apply_updates(state.trainable, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grad)}
        return TrainState(state.step + 1, trained, opt_state, state.rng), metrics

    return jax.jit(step, donate_argnums=(0,))


def pair_batches(sources: np.ndarray, targets: np.ndarray, batch_size: int, seed: int
                 ) -> Callable[[int], Any]:
    """`start_step -> iterator` of batches of pairs: all pairs (batch_size 0), or
    `batch_size` drawn without replacement by a generator seeded by (seed, step), so that a
    resumed run sees the very batches an uninterrupted one does."""
    import itertools

    def batches_from(start: int):
        for step in itertools.count(start):
            rows = slice(None) if not batch_size else np.random.default_rng(
                [seed, step]).choice(len(sources), batch_size, replace=False)
            yield {"source": sources[rows], "target": targets[rows]}

    return batches_from


# --------------------------------------------------------------------------------------------
# Files: <name>.safetensors (the params) + <name>.json (the config and where it came from)
# --------------------------------------------------------------------------------------------


def projector_path(path: str | os.PathLike) -> Path:
    """`name` -> `name.safetensors`; a `.safetensors` path as given; any other suffix raises."""
    path = Path(path)
    if path.suffix == "":
        return path.with_name(path.name + ".safetensors")
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: a projector is saved as <name>.safetensors (+ <name>.json)")
    return path


@dataclasses.dataclass(frozen=True)
class SavedProjector:
    """A projector read from disk: its config, params (numpy float32) and sidecar metadata
    (source and target backbones, how it was trained, ...)."""

    config: ProjectorConfig
    params: dict[str, np.ndarray]
    metadata: dict[str, Any]
    path: Path

    def apply(self, prompt) -> np.ndarray:
        """The projected prompt [P_t, d_t] of a source prompt [P_s, d_s] (numpy)."""
        return np.asarray(apply(self.config, self.params, jnp.asarray(prompt)))


def save_projector(path: str | os.PathLike, config: ProjectorConfig, params: Params, *,
                   metadata: Mapping[str, Any] | None = None, overwrite: bool = False
                   ) -> list[Path]:
    """Writes `<name>.safetensors` (float32 params) and `<name>.json` (the config, the format,
    and `metadata`: e.g. source_backbone, target_backbone, mode, steps, loss).

    Returns:
      The two files written.

    Raises:
      FileExistsError: a file exists and `overwrite` is False.
      ValueError: the params do not fit the config, or the metadata is not JSON.
    """
    from safetensors.numpy import save_file

    from prompt_jax.prompts.formats import write_atomic

    path = projector_path(path)
    sidecar = path.with_suffix(".json")
    arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in params.items()}
    _check_params(config, arrays, str(path))
    text = json.dumps({"format": FILE_FORMAT, **dataclasses.asdict(config),
                       **dict(metadata or {})}, indent=2, sort_keys=True) + "\n"
    if sidecar.exists() and not overwrite:
        raise FileExistsError(f"{sidecar}: already exists (overwrite=True replaces it)")
    write_atomic(path, overwrite, lambda tmp: save_file(arrays, str(tmp)))
    write_atomic(sidecar, True, lambda tmp: tmp.write_text(text))
    return [path, sidecar]


def load_projector(path: str | os.PathLike) -> SavedProjector:
    """Reads a projector written by `save_projector` (bit-exact).

    Raises:
      FileNotFoundError: the params or the sidecar is missing.
      ValueError: the sidecar is not a projector's, or a tensor is missing, extra or of the
        wrong shape (naming the file, the key and both shapes).
    """
    from prompt_jax.prompts.safetensors_file import open_safetensors

    path = projector_path(path)
    sidecar = path.with_suffix(".json")
    for file in (path, sidecar):
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such file (a projector is <name>.safetensors "
                                    f"+ <name>.json)")
    meta = json.loads(sidecar.read_text())
    if meta.get("format") != FILE_FORMAT:
        raise ValueError(f"{sidecar}: not a projector's sidecar (format {meta.get('format')!r})")
    fields = {f.name for f in dataclasses.fields(ProjectorConfig)}
    config = ProjectorConfig(**{k: v for k, v in meta.items() if k in fields})
    params = {name: read() for name, (_, read) in open_safetensors(path, ValueError).items()}
    _check_params(config, params, str(path))
    metadata = {k: v for k, v in meta.items() if k not in fields and k != "format"}
    return SavedProjector(config, params, metadata, path)


def _check_params(config: ProjectorConfig, params: Mapping[str, Any], source: str) -> None:
    expected = jax.eval_shape(lambda: init(config, jax.random.PRNGKey(0)))
    missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(f"{source}: a {config.kind} projector has tensors {sorted(expected)}; "
                         f"missing {missing}, unexpected {extra}")
    for name, like in expected.items():
        if tuple(np.shape(params[name])) != like.shape:
            raise ValueError(f"{source}: tensor {name!r} has shape "
                             f"{tuple(np.shape(params[name]))}, the config needs {like.shape}")
