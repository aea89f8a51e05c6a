"""The training step: only the soft prompt is differentiated; the frozen params are a sharded
argument of the jitted step (never closed over, so they are not baked into the executable).

Model tuning (the upper reference of Lester et al.: every weight trained, no soft prompt, the
hand-written template only) is the same step with the params in the train state instead.

Batches are dicts of fixed-shape arrays (see `prompt_jax.tasks`): "inputs" [B, T],
"input_mask" [B, T], "targets" [B, K], "target_mask" [B, K], "label" [B],
"target_position" [B] (masked LMs), "weight" [B] (0 for filler rows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from prompt_jax import partitioning, scoring
from prompt_jax.models.base import Backbone, Params

LOSSES = ("target_ce", "rank")
OPTIMIZERS = ("adafactor", "adamw", "sgd")
SCHEDULES = ("constant", "linear_warmup", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adafactor at a constant 0.3 (Lester et al.) unless told otherwise."""

    name: str = "adafactor"
    learning_rate: float = 0.3
    schedule: str = "constant"
    warmup_steps: int = 0
    total_steps: int = 0  # for "cosine"
    weight_decay: float = 0.0
    clip_norm: float | None = None
    adafactor_decay_rate: float = 0.8
    adafactor_parameter_scale: bool = True  # T5X's multiply_by_parameter_scale

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; use one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; use one of {SCHEDULES}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning rate must be positive, got {self.learning_rate}")


def make_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """The learning rate at each update (0-based count of updates already made)."""
    if cfg.schedule == "constant":
        return optax.constant_schedule(cfg.learning_rate)
    if cfg.schedule == "linear_warmup":
        return optax.linear_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1))
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, max(cfg.warmup_steps, 1), max(cfg.total_steps, 2))


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
    """The optax transformation for the prompt."""
    lr = make_schedule(cfg)
    if cfg.name == "adafactor":
        opt = optax.adafactor(
            lr, decay_rate=cfg.adafactor_decay_rate,
            multiply_by_parameter_scale=cfg.adafactor_parameter_scale,
            weight_decay_rate=cfg.weight_decay or None,
        )
    elif cfg.name == "adamw":
        opt = optax.adamw(lr, weight_decay=cfg.weight_decay)
    else:
        opt = optax.sgd(lr)
    if cfg.clip_norm:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    return opt


@flax.struct.dataclass
class TrainState:
    """Everything that is trained or advances: checkpointed, and nothing else is."""

    step: jax.Array  # int32 scalar
    prompt: jax.Array | None  # [P, H] float32; None when tuning the model
    opt_state: Any
    rng: jax.Array  # raw uint32 key (jax.random.PRNGKey), orbax-friendly
    params: Params | None = None  # the model's params when tuning the model, else None

    @property
    def tunes_model(self) -> bool:
        return self.params is not None


def init_state(prompt: jax.Array | None, optimizer: optax.GradientTransformation,
               seed: int = 0, params: Params | None = None) -> TrainState:
    """A soft-prompt state (`prompt`), or a model-tuning state (`params`, no prompt).

    Model tuning trains a copy of `params` (the step donates its state, so the caller's
    params stay usable)."""
    if (prompt is None) == (params is None):
        raise ValueError("give either a prompt (prompt tuning) or params (model tuning)")
    if params is not None:
        params = jax.tree.map(jnp.copy, params)
        opt_state = optimizer.init(params)
    else:
        prompt = jnp.asarray(prompt, jnp.float32)
        opt_state = optimizer.init(prompt)
    return TrainState(step=jnp.zeros((), jnp.int32), prompt=prompt, opt_state=opt_state,
                      rng=jax.random.PRNGKey(seed), params=params)


def place_state(state: TrainState, mesh: Mesh) -> TrainState:
    """Replicates the train state on the mesh, as the jitted step returns it (so the second
    step sees the same input shardings as the first and does not recompile)."""
    return jax.device_put(state, partitioning.replicated(mesh))


def loss_fn(prompt, params, batch, *, model, loss, placement, candidates=None,
            deterministic=True, rngs=None) -> tuple[jax.Array, dict]:
    """Weighted mean loss over the batch, and metrics.

    "target_ce": cross-entropy of the gold target tokens (per-token mean per example).
    "rank": cross-entropy of the gold label over the candidates' log-likelihoods.
    """
    weight = batch["weight"].astype(jnp.float32)
    if loss == "target_ce":
        gold = (batch["targets"][:, None], batch["target_mask"][:, None])  # [B, 1, K]
        logp = scoring.candidate_scores(model, params, prompt, batch, gold, placement,
                                deterministic=deterministic, rngs=rngs)[:, 0]
        per_example = -logp / jnp.maximum(batch["target_mask"].sum(-1), 1)
    elif loss == "rank":
        scores = scoring.candidate_scores(model, params, prompt, batch, candidates, placement,
                                  deterministic=deterministic, rngs=rngs)
        per_example = -jnp.take_along_axis(jax.nn.log_softmax(scores, -1),
                                           batch["label"][:, None], axis=-1)[:, 0]
    else:
        raise ValueError(f"unknown loss {loss!r}; use one of {LOSSES}")
    total = jnp.maximum(weight.sum(), 1.0)
    value = (per_example * weight).sum() / total
    return value, {"loss": value}


def make_train_step(model: Backbone, optimizer: optax.GradientTransformation, *,
                    loss: str = "target_ce", placement: str = "prefix",
                    candidates: tuple[jax.Array, jax.Array] | None = None,
                    dropout: bool = False, tune_model: bool = False) -> Callable:
    """`train_step(state, frozen_params, batch) -> (state, metrics)`: a pure function that
    updates only the prompt. Close over static things only (model, loss, optimizer).

    With `tune_model`, it updates `state.params` instead (no prompt) and `frozen_params` is
    ignored (pass None): model tuning, the reference that prompt tuning is measured against."""
    if loss == "rank" and candidates is None:
        raise ValueError("the rank loss needs the task's candidates")

    def train_step(state: TrainState, frozen_params: Params | None, batch: dict):
        rng, dropout_rng = jax.random.split(state.rng)
        rngs = {"dropout": dropout_rng} if dropout else None
        kwargs = dict(batch=batch, model=model, loss=loss, placement=placement,
                      candidates=candidates, deterministic=not dropout, rngs=rngs)
        if tune_model:
            (_, metrics), grad = jax.value_and_grad(
                lambda p: loss_fn(None, p, **kwargs), has_aux=True)(state.params)
            trained = state.params
        else:
            (_, metrics), grad = jax.value_and_grad(
                lambda p: loss_fn(p, frozen_params, **kwargs), has_aux=True)(state.prompt)
            trained = state.prompt
        updates, opt_state = optimizer.update(grad, state.opt_state, trained)
        trained = optax.apply_updates(trained, updates)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grad)}
        if tune_model:
            return TrainState(state.step + 1, None, opt_state, rng, trained), metrics
        return TrainState(state.step + 1, trained, opt_state, rng), metrics

    return train_step


def jit_train_step(train_step: Callable, model: Backbone, mesh: Mesh,
                   tune_model: bool = False) -> Callable:
    """Jits the step over the mesh: state replicated (and donated), frozen params sharded by the
    rules table, batch split over 'data'. Model tuning keeps the trained params replicated
    (data parallel)."""
    rep = partitioning.replicated(mesh)
    frozen = rep if tune_model else partitioning.param_shardings(model, mesh)
    return jax.jit(
        train_step,
        in_shardings=(rep, frozen, partitioning.batch_sharding(mesh)),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
    )
