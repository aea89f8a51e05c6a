"""Whole jobs from a typed `RunConfig`: train a prompt, evaluate one, classify new text.

The CLI resolves gin files and flags into a `RunConfig` and calls these; library users can
call them directly without gin.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from prompt_jax import loop, packing, partitioning, prompts, scoring, train
from prompt_jax.models import REAL_MODELS, fetch, load_pretrained, load_tokenizer

log = logging.getLogger(__name__)

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
    pack: bool = True  # several examples per row where that pays (see prompt_jax.packing)
    # evaluation, logging, checkpoints
    eval_split: str = "validation"
    eval_batch_size: int = 32
    eval_every: int = 100
    eval_limit: int = 0  # 0 = the whole split
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    # device mesh
    mesh_data: int = 0  # 0 = all devices not used by the model axis
    mesh_model: int = 1

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


@dataclasses.dataclass
class Job:
    """A loaded model, tokenizer and task, on a mesh: what train/eval/infer share."""

    config: RunConfig
    model: Any
    params: Any
    tokenizer: Any
    task: Any
    style: str
    candidates: tuple[jax.Array, jax.Array]
    mesh: Any
    placement: str
    packer: packing.Packer | None = None  # None: one example per row


def model_source(name: str) -> str:
    return str(fetch(name)) if name in REAL_MODELS else name


def load_job(config: RunConfig) -> Job:
    """Loads model + tokenizer + task and shards the frozen params over the mesh."""
    from prompt_jax import tasks

    task = tasks.get_task(config.task)  # fails fast (KeyError naming known tasks)
    source = model_source(config.model)
    pre = load_pretrained(source, dtype=config.dtype, param_dtype=config.dtype)
    model = pre.model
    prompts.check_length(config.prompt_length, model.max_length, config.max_input_length)
    mesh = partitioning.make_mesh(config.mesh_data or None, config.mesh_model)
    partitioning.check_batch_size(config.batch_size, mesh)
    partitioning.check_batch_size(config.eval_batch_size, mesh)
    tokenizer = load_tokenizer(source)
    style = tasks.style_for_family(model.family)
    if config.template:
        task = tasks.with_template(task, style, config.template)
    ids, mask = tasks.candidates(task, tokenizer, style)
    params = partitioning.shard_params(pre.params, model, mesh)
    placement = config.placement or prompts.default_placement(model.family)
    return Job(config, model, params, tokenizer, task, style,
               (jnp.asarray(ids), jnp.asarray(mask)), mesh, placement,
               make_packer(config, model, placement, ids.shape[1], tokenizer, mesh))


def make_packer(config: RunConfig, model, placement: str, candidate_length: int,
                tokenizer, mesh) -> packing.Packer | None:
    """A packer when `config.pack` asks for one and it applies: a backbone that `packs`
    (decoder-only), a prefix prompt (or none, when tuning the model) and single-token
    verbalizers. Otherwise None (one example per row; same results, more FLOPs)."""
    from prompt_jax.tasks.vocabulary import pad_id

    if not (config.pack and getattr(model, "packs", False) and placement == "prefix"
            and candidate_length == 1):
        return None
    return packing.Packer(
        rows=mesh.shape["data"],
        prefix_length=config.prompt_length if config.tune == "prompt" else 0,
        keys_per_token=model.pack_keys_per_token(), pad_id=pad_id(tokenizer))


def initial_prompt(job: Job) -> jax.Array:
    """The [P, H] starting prompt for `config.init`."""
    cfg, model, params, tok = job.config, job.model, job.params, job.tokenizer
    rng = jax.random.PRNGKey(cfg.seed + 1)
    p = cfg.prompt_length

    def embed(ids):
        return model.embed(params, jnp.asarray(ids))

    vocab_skip = len(getattr(tok, "all_special_ids", []) or [])
    if cfg.init == "random_uniform":
        return prompts.random_uniform(rng, p, model.d_model, cfg.init_scale)
    if cfg.init == "sampled_vocab":
        return prompts.sampled_vocab(rng, embed, model.vocab_size, p, skip=vocab_skip)
    if cfg.init == "class_labels":
        space = " " if job.style == "causal" else ""
        words = [tok(space + v, add_special_tokens=False)["input_ids"]
                 for v in job.task.verbalizers_for(job.style)]
        return prompts.class_labels(rng, embed, model.vocab_size, p, words, skip=vocab_skip)
    if cfg.init == "text":
        ids = tok(cfg.init_text, add_special_tokens=False)["input_ids"]
        return prompts.text(embed, ids, p)
    from prompt_jax.prompt_io import load_prompt_for

    loaded = load_prompt_for(model, cfg.init_prompt)
    return prompts.from_array(loaded.array, model.d_model, p, cfg.init_prompt, model.family)


def task_batches(job: Job, split: str, batch_size: int, *, shuffle: bool, repeat: bool,
                 limit: int = 0):
    from prompt_jax import tasks

    batches = tasks.batches(job.task, split, job.tokenizer, job.style, batch_size,
                            max_length=job.config.max_input_length, seed=job.config.seed,
                            shuffle=shuffle, repeat=repeat, limit=limit or None,
                            data=job.config.data or None)
    return packing.pack_batches(batches, job.packer) if job.packer else batches


def make_evaluator(job: Job, split: str | None = None):
    """`(prompt, params=None) -> {"accuracy", "macro_f1"}` over the (cached, fixed-shape) eval
    batches; `prompt=None` scores the hand-written template alone (zero-shot), `params`
    replaces the job's frozen params (a tuned model)."""
    cfg = job.config
    batches = list(task_batches(job, split or cfg.eval_split, cfg.eval_batch_size,
                                shuffle=False, repeat=False, limit=cfg.eval_limit))
    step = scoring.jit_eval_step(scoring.make_eval_step(job.model, placement=job.placement),
                                 job.model, job.mesh)
    num_classes = len(job.task.labels)

    def evaluate(prompt, params=None) -> dict[str, float]:
        params = job.params if params is None else partitioning.shard_params(
            params, job.model, job.mesh)
        predictions, labels = scoring.classify(step, prompt, params, batches, job.candidates)
        return scoring.classification_metrics(predictions, labels, num_classes)

    return evaluate


def zero_shot(job: Job, split: str | None = None) -> dict[str, float]:
    """Metrics of the task's hand-written template alone (no soft prompt)."""
    return make_evaluator(job, split)(None)


def sidecar(job: Job, **extra) -> dict[str, Any]:
    """Metadata saved beside an exported prompt."""
    return {"backbone": job.model.family, "model": job.config.model, "task": job.config.task,
            "init": job.config.init, "placement": job.placement, "style": job.style,
            "template": job.task.template(job.style), **extra}


def train_prompt(config: RunConfig, resume: bool = False, job: Job | None = None,
                 evaluate: Callable[[train.TrainState], dict[str, float]] | None = None
                 ) -> dict[str, Any]:
    """Trains a soft prompt; writes checkpoints, metrics and the best and last prompts
    (`best_prompt.npy`, `prompt.npy`, each with a JSON sidecar) into `output_dir`.

    With `config.tune == "model"` it trains every weight of the model instead, on the
    hand-written template alone (no prompt is saved; the tuned params are in the last orbax
    checkpoint).

    Args:
      config: the run.
      resume: continue from the latest checkpoint in `output_dir`.
      job: an already loaded model (its config must be `config`).
      evaluate: `state -> metrics`, replacing the default evaluation on `config.eval_split`
        (e.g. to evaluate a subset often and the whole split rarely).
    """
    from prompt_jax.prompt_io import save_prompt

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    job = job or load_job(config)
    tune_model = config.tune == "model"
    optimizer = train.make_optimizer(config.optimizer)
    if tune_model:
        state = train.init_state(None, optimizer, config.seed, params=job.params)
    else:
        state = train.init_state(initial_prompt(job), optimizer, config.seed)
    state = train.place_state(state, job.mesh)
    step = train.jit_train_step(
        train.make_train_step(job.model, optimizer, loss=config.loss, placement=job.placement,
                              candidates=job.candidates, dropout=config.dropout,
                              tune_model=tune_model),
        job.model, job.mesh, tune_model=tune_model)

    def batches_from(start: int):
        it = task_batches(job, "train", config.batch_size, shuffle=True, repeat=True)
        return itertools.islice(it, start, None)  # replay the same order after a resume

    def save_best(prompt, metrics, at_step):
        save_prompt(prompt, out / "best_prompt.npy", format="prompt_jax", overwrite=True,
                    metadata=sidecar(job, steps=at_step, score=metrics))

    if evaluate is None:
        evaluator = make_evaluator(job)

        def evaluate(state):
            return evaluator(state.prompt, state.params)

    started = time.perf_counter()
    result = loop.run(
        state, None if tune_model else job.params, step, batches_from,
        loop.LoopConfig(steps=config.steps, eval_every=config.eval_every,
                        checkpoint_every=config.checkpoint_every,
                        keep_checkpoints=config.keep_checkpoints, log_every=config.log_every),
        out, evaluate=evaluate, resume=resume, examples_per_batch=config.batch_size,
        on_best=save_best,
    )
    summary = {
        "task": config.task, "model": config.model, "tune": config.tune,
        "steps": int(result.state.step), "final": result.last_metrics,
        "best": result.best_metrics, "train_seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "train_examples_per_second": result.examples_per_second,
    }
    if tune_model:
        summary["trainable_params"] = sum(x.size for x in jax.tree.leaves(result.state.params))
        summary["checkpoints"] = str(out / "checkpoints")
    else:
        final = np.asarray(result.state.prompt)
        save_prompt(final, out / "prompt.npy", format="prompt_jax", overwrite=True,
                    metadata=sidecar(job, steps=int(result.state.step),
                                     score=result.last_metrics))
        summary.update(trainable_params=int(final.size), prompt=str(out / "prompt.npy"),
                       best_prompt=str(out / "best_prompt.npy"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def evaluate_prompt(config: RunConfig, prompt_path: str | None, split: str | None = None
                    ) -> dict[str, float]:
    """Metrics of a saved prompt (any format `prompt_io` reads) on a split of the task; with
    no prompt, of the hand-written template alone (zero-shot)."""
    from prompt_jax.prompt_io import load_prompt_for

    job = load_job(config)
    if prompt_path is None:
        return zero_shot(job, split)
    prompt = jnp.asarray(load_prompt_for(job.model, prompt_path).array)
    return make_evaluator(job, split)(prompt)


def encode_texts(job: Job, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """One batch from raw inputs through the task's template; a pair task takes
    "text_a<TAB>text_b"."""
    from prompt_jax.tasks import compile_layout
    from prompt_jax.tasks.encoding import encode_inputs_batch
    from prompt_jax.tasks.vocabulary import pad_id

    pairs = [t.split("\t", 1) if job.task.pair else [t] for t in texts]
    if any(len(p) != 2 for p in pairs) and job.task.pair:
        raise ValueError(f"task {job.task.name!r} takes pairs: give 'text_a<TAB>text_b'")
    encoded = encode_inputs_batch(compile_layout(job.task, job.tokenizer, job.style),
                                  job.tokenizer, [p[0] for p in pairs],
                                  [p[-1] for p in pairs] if job.task.pair else [],
                                  job.config.max_input_length)
    width = -(-max(len(ids) for ids, _ in encoded) // 16) * 16
    inputs = np.full((len(texts), width), pad_id(job.tokenizer), np.int32)
    mask = np.zeros_like(inputs)
    for row, (ids, _) in enumerate(encoded):
        inputs[row, :len(ids)] = ids
        mask[row, :len(ids)] = 1
    return {"inputs": inputs, "input_mask": mask,
            "target_position": np.array([pos for _, pos in encoded], np.int32)}


def infer(config: RunConfig, prompt_path: str, texts: Sequence[str]) -> list[str]:
    """The predicted label name for each raw input text."""
    from prompt_jax.prompt_io import load_prompt_for

    if not texts:
        raise ValueError("no input text given")
    job = load_job(config)
    prompt = jnp.asarray(load_prompt_for(job.model, prompt_path).array)
    step = jax.jit(scoring.make_eval_step(job.model, placement=job.placement))
    scores = np.asarray(step(prompt, job.params, encode_texts(job, texts), *job.candidates))
    return [job.task.labels[i] for i in scores.argmax(-1)]
