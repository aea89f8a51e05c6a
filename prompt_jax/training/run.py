"""Whole jobs from a typed `RunConfig`: train a prompt, evaluate one, classify new text.

The CLI resolves gin files and flags into a `RunConfig` and calls these; library users can
call them directly without gin. They stand on `prompt_jax.engine`: pass `loaded=` to share
one loaded model between many jobs (the weights are read once).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from prompt_jax import distributed, engine, partitioning, prompts, provenance
from prompt_jax.tasks import task_spec
from prompt_jax.training import loop, train

TUNES = ("prompt", "model")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a prompt-tuning run needs. Defaults follow Lester et al. where they apply."""

    model: str = "smollm2-135m-instruct"  # a REAL_MODELS name, a local path or a hub id
    task: str = "sst2"
    template: str = ""  # "" = the task's own hand-written template for the model's style
    data: str = ""  # data folder; "" = $PROMPT_JAX_DATA or ../shared/data
    output_dir: str = "runs/default"
    dtype: str = "float32"
    # the prompt
    prompt_length: int = 20
    init: str = "sampled_vocab"  # one of prompts.INITS
    init_text: str = ""  # for init="text"
    init_scale: float = 0.5  # for init="random_uniform"
    init_prompt: str = ""  # a prompt file (any format prompt_io reads), for init="from_array"
    placement: str = ""  # "" = prefix, or after_bos for masked LMs
    # training
    tune: str = "prompt"  # or "model": train every weight, no soft prompt (the upper reference)
    loss: str = "target_ce"  # or "rank"
    optimizer: train.OptimizerConfig = train.OptimizerConfig()
    steps: int = 1000
    batch_size: int = 8
    max_input_length: int = 128  # input tokens, the prompt not included
    dropout: bool = False
    seed: int = 0
    pack: bool = True  # several examples per row where that pays (see prompt_jax.training.packing)
    # evaluation, logging, checkpoints
    eval_split: str = "validation"
    eval_batch_size: int = 32
    eval_every: int = 100
    eval_limit: int = 0  # 0 = the whole split
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    prefetch: int = 2  # batches made ahead on a background thread (0 = in the loop)
    # device mesh
    mesh_data: int = 0  # 0 = all devices not used by the model axis
    mesh_model: int = 1
    remat: bool = False  # recompute each layer in the backward pass (big models' activations)
    unroll_layers: bool = False  # decoder-only: no layer loop in the compiled programs
    scan_layers: bool = True  # False, decoder-only: each layer's params apart (no slicing)

    def __post_init__(self):
        prompts.check_length(self.prompt_length)
        if self.init not in prompts.INITS:
            raise ValueError(f"unknown init {self.init!r}; use one of {prompts.INITS}")
        if self.placement and self.placement not in prompts.PLACEMENTS:
            raise ValueError(f"unknown placement {self.placement!r}; use {prompts.PLACEMENTS}")
        if self.tune not in TUNES:
            raise ValueError(f"unknown tune {self.tune!r}; use one of {TUNES}")
        if self.loss not in train.LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; use one of {train.LOSSES}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(f"batch sizes must be positive ({self.batch_size}, "
                             f"{self.eval_batch_size})")


def load(config: RunConfig, loaded: engine.LoadedModel | None = None
         ) -> tuple[engine.LoadedModel, engine.TaskHandle]:
    """The model and the run's task on it, checked against the config; the model is loaded
    only when `loaded` (an already loaded `config.model`) is not given."""
    if loaded is None:
        from prompt_jax import tasks

        tasks.get_task(config.task)  # fails fast, before the weights load
        loaded = engine.load_model(config.model, dtype=config.dtype,
                                   mesh_data=config.mesh_data, mesh_model=config.mesh_model,
                                   remat=config.remat, unroll_layers=config.unroll_layers,
                                   scan_layers=config.scan_layers)
    return loaded, task_for(loaded, config)


def task_for(loaded: engine.LoadedModel, config: RunConfig) -> engine.TaskHandle:
    """The run's task on an already loaded model (no weights touched)."""
    prompts.check_length(config.prompt_length, loaded.model.max_length,
                         config.max_input_length)
    partitioning.check_batch_size(config.batch_size, loaded.mesh)
    partitioning.check_batch_size(config.eval_batch_size, loaded.mesh)
    return loaded.task(config.task, template=config.template, placement=config.placement,
                       max_input_length=config.max_input_length, data=config.data,
                       pack=config.pack)


def prefix_length(config: RunConfig) -> int:
    """Vectors of soft prompt before each input (0 when tuning the model)."""
    return config.prompt_length if config.tune == "prompt" else 0


def trainable_for(config: RunConfig) -> train.Trainable:
    return train.MODEL if config.tune == "model" else train.PROMPT


def initial_trainable(loaded: engine.LoadedModel, task: engine.TaskHandle,
                      config: RunConfig):
    """What the run starts from: the initial prompt, or the model's params (model tuning)."""
    if config.tune == "model":
        return loaded.params
    return prompts.initial_prompt(loaded, task, config.init, config.prompt_length,
                                 seed=config.seed, init_text=config.init_text,
                                 init_scale=config.init_scale, init_prompt=config.init_prompt)


def evaluator(loaded: engine.LoadedModel, task: engine.TaskHandle, config: RunConfig,
              split: str | None = None):
    """`(prompt, params=None) -> metrics` on the config's evaluation split and limit."""
    return loaded.evaluator(task, split or config.eval_split,
                            batch_size=config.eval_batch_size, limit=config.eval_limit,
                            prompt_length=prefix_length(config))


def train_batches(task: engine.TaskHandle, config: RunConfig, mesh: Mesh | None = None
                  ) -> Callable[[int], Any]:
    """`start_step -> iterator` of training batches: the same order from step 0 on, replayed
    from `start_step` after a resume. Given a mesh, they are split over its data axis: every
    process builds the same global batches and feeds only its own rows
    (`partitioning.shard_batch`); without one, host batches."""
    packer = task.packer(prefix_length(config))

    def batches_from(start: int):
        it = itertools.islice(task.batches("train", config.batch_size, seed=config.seed,
                                           shuffle=True, repeat=True, packer=packer),
                              start, None)
        return it if mesh is None else (partitioning.shard_batch(b, mesh) for b in it)

    return batches_from


def sidecar(loaded: engine.LoadedModel, task: engine.TaskHandle, config: RunConfig,
            **extra) -> dict[str, Any]:
    """Metadata saved beside an exported prompt; a file task's definition too (`task_spec`),
    so that the prompt alone makes its task again in another process."""
    spec = task_spec.definition(config.task)
    return {"backbone": loaded.model.family, "model": config.model, "task": config.task,
            "init": config.init, "placement": task.placement, "style": task.style,
            "template": task.template, **({task_spec.SIDECAR_KEY: spec} if spec else {}),
            **extra}


def train_prompt(config: RunConfig, resume: bool = False, *, overwrite: bool = False,
                 loaded: engine.LoadedModel | None = None,
                 evaluate: Callable[[train.TrainState], dict[str, float]] | None = None,
                 config_files: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Trains a soft prompt; writes checkpoints, metrics and the best and last prompts
    (`best_prompt.npy`, `prompt.npy`, each with a JSON sidecar) into `output_dir`, and a file
    task's definition (`task_spec.json`, also in the sidecars).

    With `config.tune == "model"` it trains every weight of the model instead, on the
    hand-written template alone (no prompt is saved; the tuned params are in the last orbax
    checkpoint).

    In a multi-process job (`prompt_jax.distributed`) every process calls it with the same
    config; the result does not depend on the number of processes, and only process 0 writes
    files (`output_dir` must be one that every process sees, for orbax).

    Args:
      config: the run.
      resume: continue from the latest checkpoint in `output_dir`.
      overwrite: start over in an `output_dir` that holds a previous run (deleting its
        checkpoints and metrics); without `resume` or `overwrite` such a folder is refused.
      loaded: an already loaded model (`config.model`), shared with other runs.
      evaluate: `state -> metrics`, replacing the default evaluation on `config.eval_split`
        (e.g. to evaluate a subset often and the whole split rarely).
      config_files: name -> text of files written beside `config.json` once the folder is
        claimed (the CLI's gin config, `config.gin`).
    """
    return train_trainable(config, trainable_for(config), resume=resume, overwrite=overwrite,
                           loaded=loaded, evaluate=evaluate, config_files=config_files)[0]


def train_trainable(config: RunConfig, trainable: train.Trainable, initial: Any = None, *,
                    resume: bool = False, overwrite: bool = False,
                    loaded: engine.LoadedModel | None = None,
                    evaluate: Callable[[train.TrainState], dict[str, float]] | None = None,
                    metadata: dict[str, Any] | None = None,
                    config_files: Mapping[str, str] | None = None, claimed: bool = False
                    ) -> tuple[dict[str, Any], Any]:
    """`train_prompt` for any trainable (a prompt, the model, a projector's params): the same
    step, loop, checkpoints, exact resume and exported prompts.

    Args:
      config: the run (`prompt_length` is the length of the prompt the trainable makes).
      trainable: what is trained and how it becomes what the model sees.
      initial: the trainable pytree at step 0 (None: `initial_trainable` of the config).
      resume, overwrite, loaded, evaluate, config_files: as in `train_prompt`.
      metadata: extra fields for the saved prompts' sidecars (they win over the config's).
      claimed: the caller has claimed `output_dir` for this run already
        (`loop.claim_output_dir`, e.g. before loading the model that shapes the trainable).

    The output folder is claimed once per run (here, unless `claimed`), before anything is
    read or written; the model is loaded only when `loaded` is not given.

    Returns:
      (the summary also written to `summary.json`, the trained pytree at the last step).
    """
    from prompt_jax.prompts.files import save_prompt

    out = Path(config.output_dir)
    if not claimed:  # before anything is read
        loop.claim_output_dir(out, resume=resume, overwrite=overwrite)
    loaded, task = load(config) if loaded is None else (loaded, task_for(loaded, config))
    loaded_at = time.perf_counter()
    primary = distributed.is_primary()  # the one process of a job that writes files
    if primary:
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2)
                                         + "\n")
        for name, text in (config_files or {}).items():
            (out / name).write_text(text)
        task_spec.write_spec(config.task, out)  # a file task's definition (task_spec.json)
    optimizer = train.make_optimizer(config.optimizer)
    if initial is None:
        initial = initial_trainable(loaded, task, config)
    state = train.place_state(train.init_state(initial, optimizer, config.seed), loaded.mesh)
    step = loaded.train_step(task, config.optimizer, trainable=trainable, loss=config.loss,
                             dropout=config.dropout)  # cached: compiled once per shape
    frozen = None if trainable.tunes_model else loaded.params
    extra = dict(metadata or {})

    def export(state):
        prompt = trainable.prompt(state.trainable)
        return None if prompt is None else np.asarray(prompt)

    def save_best(prompt, metrics, at_step):
        if not primary:
            return
        save_prompt(prompt, out / "best_prompt.npy", format="prompt_jax", overwrite=True,
                    metadata={**sidecar(loaded, task, config, steps=at_step, score=metrics),
                              **extra})

    if evaluate is None:
        evaluate_split = evaluator(loaded, task, config)

        def evaluate(state):  # frozen=None: the evaluator's own params stand in for them
            return evaluate_split(*trainable.apply(state.trainable, None))

    started = time.perf_counter()
    result = loop.run(
        state, frozen, step, train_batches(task, config, loaded.mesh),
        loop.LoopConfig(steps=config.steps, eval_every=config.eval_every,
                        checkpoint_every=config.checkpoint_every,
                        keep_checkpoints=config.keep_checkpoints, log_every=config.log_every,
                        best_metric=task.spec.primary_metric, prefetch=config.prefetch),
        out, evaluate=evaluate, resume=resume, examples_per_batch=config.batch_size,
        export=export, on_best=save_best, claimed=True,
    )
    summary = {
        "task": config.task, "model": config.model,
        "tune": trainable.name,  # "prompt", "model", or a mapped trainable's own name
        "steps": int(result.state.step), "final": result.last_metrics,
        "best": result.best_metrics, "train_seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "train_examples_per_second": result.examples_per_second,
        # The loop's steady state (the wait for batches included, the first step not), and
        # the time from the model loaded to the first step done (compilation included).
        "median_step_seconds": (statistics.median(result.step_seconds[1:])
                                if len(result.step_seconds) > 1 else None),
        "loaded_to_first_step_seconds": (result.first_step_end - loaded_at
                                         if result.first_step_end else None),
        "trainable_params": sum(x.size for x in jax.tree.leaves(result.state.trainable)),
    }
    final = export(result.state)
    if final is None:
        summary["checkpoints"] = str(out / "checkpoints")
    else:
        if primary:
            save_prompt(final, out / "prompt.npy", format="prompt_jax", overwrite=True,
                        metadata={**sidecar(loaded, task, config, steps=int(result.state.step),
                                            score=result.last_metrics), **extra})
        summary.update(prompt=str(out / "prompt.npy"), best_prompt=str(out / "best_prompt.npy"))
    if primary:
        provenance.write_result(out / "summary.json", summary)
    return summary, result.state.trainable


def _load_prompt(loaded: engine.LoadedModel, path: str) -> jax.Array:
    from prompt_jax.prompts.files import load_prompt_for

    return jnp.asarray(load_prompt_for(loaded.model, path).array)


def evaluate_prompt(config: RunConfig, prompt_path: str | None, split: str | None = None,
                    loaded: engine.LoadedModel | None = None) -> dict[str, float]:
    """Metrics of a saved prompt (any format `prompt_io` reads) on a split of the task; with
    no prompt, of the hand-written template alone (zero-shot)."""
    loaded, task = load(config, loaded)
    prompt = None if prompt_path is None else _load_prompt(loaded, prompt_path)
    return evaluator(loaded, task, config, split)(prompt)


def infer(config: RunConfig, prompt_path: str, texts: Sequence[str],
          loaded: engine.LoadedModel | None = None) -> list[str]:
    """The predicted label name for each raw input text; a generation task's generated text."""
    if not texts:
        raise ValueError("no input text given")
    loaded, task = load(config, loaded)
    if task.spec.is_generation:
        from prompt_jax import generation

        return list(generation.generate(loaded, task, _load_prompt(loaded, prompt_path),
                                        texts).texts)
    scores = loaded.scores(task, _load_prompt(loaded, prompt_path), texts)
    return [task.labels[i] for i in scores.argmax(-1)]
