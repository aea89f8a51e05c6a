"""The training step over one trainable pytree: only it is differentiated; the frozen params
are a sharded argument of the jitted step (never closed over, so they are not baked into the
executable).

A `Trainable` says how the trained pytree becomes what the model sees: a soft prompt is its
own trainable; model tuning (the upper reference of Lester et al.: every weight trained, no
soft prompt, the hand-written template only) trains the params themselves; a projector's
parameters map to a prompt. One step, one loop, one checkpoint format for all of them.

Batches are dicts of fixed-shape arrays (see `prompt_jax.tasks`): "inputs" [B, T],
"input_mask" [B, T], "targets" [B, K], "target_mask" [B, K], "label" [B],
"target_position" [B] (masked LMs), "weight" [B] (0 for filler rows).
"""

from __future__ import annotations

import dataclasses
import functools
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


@dataclasses.dataclass(frozen=True)
class Trainable:
    """What a run trains, and the one pure function that turns it into what the backbone sees.

    `apply(trainable, frozen_params) -> (prompt, params)`: the soft prompt the backbone sees
    ([P, H], or None for the hand-written template alone) and the params it runs with. A soft
    prompt is its own trainable (`PROMPT`); model tuning trains the params themselves
    (`MODEL`); a projector's parameters map to a prompt (`mapped_prompt`). Small fixed arrays a
    mapping needs (e.g. a source prompt) may be closed over; the frozen model never is.

    Attributes:
      name: what is trained, for summaries and sidecars ("prompt", "model", ...).
      apply: the pure function above (static: the step closes over it).
      tunes_model: the trainable is the model's params, so no frozen params are passed and the
        trained params stay replicated (data parallel).
    """

    name: str
    apply: Callable[[Any, Params | None], tuple[jax.Array | None, Params]]
    tunes_model: bool = False

    def prompt(self, trainable) -> jax.Array | None:
        """The prompt a trainable produces (needs no frozen params: those only pass through)."""
        return None if self.tunes_model else self.apply(trainable, None)[0]


PROMPT = Trainable("prompt", lambda trainable, frozen: (trainable, frozen))
MODEL = Trainable("model", lambda trainable, frozen: (None, trainable), tunes_model=True)


def mapped_prompt(name: str, to_prompt: Callable[[Any], jax.Array]) -> Trainable:
    """A trainable whose prompt is `to_prompt(trainable)` (a projector, a reparameterization),
    fed to the frozen model like any prompt."""
    return Trainable(name, lambda trainable, frozen: (to_prompt(trainable), frozen))


@flax.struct.dataclass
class TrainState:
    """Everything that is trained or advances: checkpointed, and nothing else is."""

    step: jax.Array  # int32 scalar
    trainable: Any  # the pytree the optimizer updates (a [P, H] prompt, params, ...)
    opt_state: Any
    rng: jax.Array  # raw uint32 key (jax.random.PRNGKey), orbax-friendly


def init_state(trainable, optimizer: optax.GradientTransformation, seed: int = 0
               ) -> TrainState:
    """The state at step 0 for a trainable pytree (a prompt, model params, ...).

    The state holds a copy (the step donates its state, so the caller's arrays, e.g. the
    frozen params that model tuning starts from, stay usable)."""
    if trainable is None or not jax.tree.leaves(trainable):
        raise ValueError("nothing to train: the trainable pytree has no arrays")
    trainable = jax.tree.map(lambda x: jnp.array(x, copy=True), trainable)
    return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                      opt_state=optimizer.init(trainable), rng=jax.random.PRNGKey(seed))


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
    # Filler rows (weight 0) count for nothing, even when their target is empty (-inf score).
    per_example = jnp.where(weight > 0, per_example, 0.0)
    total = jnp.maximum(weight.sum(), 1.0)
    value = (per_example * weight).sum() / total
    return value, {"loss": value}


def make_train_step(model: Backbone, optimizer: optax.GradientTransformation, *,
                    trainable: Trainable = PROMPT, loss: str = "target_ce",
                    placement: str = "prefix", dropout: bool = False) -> Callable:
    """`train_step(state, frozen_params, batch, candidates=None) -> (state, metrics)`: a pure
    function that updates only `state.trainable`, through `trainable.apply` into the prompt and
    params the model sees. It closes over static things only (model, loss, optimizer,
    trainable, placement).

    The rank loss scores the task's candidates (ids, mask) [C, K]: pass them to the step, so
    that one jitted step serves every task of the same shapes (`LoadedModel.train_step` does).
    For model tuning (`trainable.tunes_model`) pass `frozen_params=None`: the params are
    the trainable."""

    def train_step(state: TrainState, frozen_params: Params | None, batch: dict,
                   candidates: tuple[jax.Array, jax.Array] | None = None):
        if loss == "rank" and candidates is None:
            raise ValueError("the rank loss needs the task's candidates")
        rng, dropout_rng = jax.random.split(state.rng)
        rngs = {"dropout": dropout_rng} if dropout else None

        def objective(trained):
            prompt, params = trainable.apply(trained, frozen_params)
            return loss_fn(prompt, params, batch, model=model, loss=loss, placement=placement,
                           candidates=candidates, deterministic=not dropout, rngs=rngs)

        (_, metrics), grad = jax.value_and_grad(objective, has_aux=True)(state.trainable)
        updates, opt_state = optimizer.update(grad, state.opt_state, state.trainable)
        trained = optax.apply_updates(state.trainable, updates)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grad)}
        return TrainState(state.step + 1, trained, opt_state, rng), metrics

    return train_step


@dataclasses.dataclass(frozen=True)
class JittedTrainStep:
    """A jitted train step: `step(state, frozen_params, batch, candidates=None)`.

    Attributes:
      jitted: the `jax.jit` of `(state, frozen_params, batch, candidates)`; its
        `_cache_size()` counts the executables compiled so far.
    """

    jitted: Callable

    def __call__(self, state, frozen_params, batch, candidates=None):
        return self.jitted(state, frozen_params, batch, candidates)

    def lower(self, state, frozen_params, batch, candidates=None):
        return self.jitted.lower(state, frozen_params, batch, candidates)

    def _cache_size(self) -> int:
        return self.jitted._cache_size()

    def bind(self, candidates) -> Callable:
        """`step(state, frozen_params, batch)` with these candidates (None for a loss that reads
        none)."""
        return functools.partial(self, candidates=candidates)


def jit_train_step(train_step: Callable, model: Backbone, mesh: Mesh,
                   trainable: Trainable = PROMPT) -> JittedTrainStep:
    """Jits the step over the mesh: state replicated (and donated), frozen params sharded by the
    rules table, batch split over 'data', candidates replicated. Model tuning keeps the trained
    params replicated (data parallel) and takes no frozen params."""
    rep = partitioning.replicated(mesh)
    frozen = rep if trainable.tunes_model else partitioning.param_shardings(model, mesh)
    return JittedTrainStep(jax.jit(
        train_step,
        in_shardings=(rep, frozen, partitioning.batch_sharding(mesh), rep),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
    ))
