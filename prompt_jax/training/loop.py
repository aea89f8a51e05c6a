"""The training loop: steps, periodic evaluation, best/last prompt, progress bar, metrics
(TensorBoard events and JSON lines) and orbax checkpoints with exact resume.

An output folder holds one run: a new run refuses a folder that already holds one unless told
to resume it (its checkpoints continue, its metrics lines after the resumed step are dropped)
or to overwrite it (its checkpoints, metrics and events are deleted first).

In a multi-process job every process runs the loop (the steps, evaluations and orbax saves
are collective); only the primary process writes metrics, events and the progress bar, and
deletes an overwritten run, which every process then waits for (`distributed`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from prompt_jax import distributed
from prompt_jax.training.checkpoints import TrainCheckpoints
from prompt_jax.training.prefetch import prefetch
from prompt_jax.training.train import TrainState

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int = 1000
    eval_every: int = 100  # 0 = only at the end
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    best_metric: str = "accuracy"
    prefetch: int = 2  # batches made ahead on a background thread (0 = in the loop)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, got {self.checkpoint_every}")
        if self.prefetch < 0:
            raise ValueError(f"prefetch must be 0 (off) or more, got {self.prefetch}")


class RunExistsError(ValueError):
    """The output folder already holds a run, and neither resume nor overwrite was asked."""


# What `run` writes, and overwrite deletes.
RUN_FILES = ("metrics.jsonl", "tb", "checkpoints", "checkpoints.damaged")


def holds_run(output_dir: str | Path) -> bool:
    """Whether a run has written into `output_dir` (metrics or checkpoints)."""
    out = Path(output_dir)
    return (out / "metrics.jsonl").exists() or any((out / "checkpoints").glob("[0-9]*"))


def claim_output_dir(output_dir: str | Path, *, resume: bool = False,
                     overwrite: bool = False) -> None:
    """Makes `output_dir` ready for a run: refuses one that holds a run unless `resume` (kept
    as it is) or `overwrite` (the previous run's checkpoints, metrics and events deleted).

    In a multi-process job only the primary process deletes; every process returns once it
    has (the folder must be one that every process sees: a shared filesystem).

    Raises:
      RunExistsError: the folder holds a run and neither flag is set.
    """
    out = Path(output_dir)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: pick one")
    if holds_run(out) and not resume:
        if not overwrite:
            raise RunExistsError(
                f"{out} already holds a run (metrics or checkpoints); resume it (--resume), "
                f"start over in it (--overwrite), or pick another output folder")
        if distributed.is_primary():
            for name in RUN_FILES:
                path = out / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            log.info("overwriting the run in %s", out)
    out.mkdir(parents=True, exist_ok=True)
    distributed.barrier(f"claim {out.resolve()}")


def _drop_metrics_after(path: Path, step: int) -> None:
    """Keeps the lines of `metrics.jsonl` up to `step` (a killed run may have logged past its
    last checkpoint: those steps run again after the resume)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


@dataclasses.dataclass
class LoopResult:
    state: TrainState
    best_prompt: np.ndarray | None  # None when the trainable makes no prompt (model tuning)
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    history: list[dict[str, Any]]
    train_seconds: float  # the steps' wall time (see `run`), the first step excluded
    examples_per_second: float
    step_seconds: list[float] = dataclasses.field(default_factory=list)
    first_step_end: float | None = None  # time.perf_counter() when the first step was done


class MetricsWriter:
    """Appends metrics to `metrics.jsonl` and TensorBoard events under `output_dir/tb`."""

    def __init__(self, output_dir: Path, start_step: int = 0):
        from tensorboardX import SummaryWriter

        _drop_metrics_after(output_dir / "metrics.jsonl", start_step)
        self._jsonl = open(output_dir / "metrics.jsonl", "a", encoding="utf-8")
        # Events past the resumed step are a killed run's: TensorBoard drops them.
        self._tb = SummaryWriter(str(output_dir / "tb"),
                                 purge_step=start_step + 1 if start_step else None)

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        self._jsonl.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        self._jsonl.flush()
        for name, value in metrics.items():
            if isinstance(value, int | float):  # notes (strings) go to the JSON lines only
                self._tb.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        self._jsonl.close()
        self._tb.close()


class NoMetrics:
    """The `MetricsWriter` of a process that writes nothing (not the primary one)."""

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def run(
    state: TrainState,
    frozen_params,
    train_step: Callable,
    train_batches: Callable[[int], Iterator[dict]],
    config: LoopConfig,
    output_dir: str | Path,
    *,
    evaluate: Callable[[TrainState], dict[str, float]] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    examples_per_batch: int | None = None,
    export: Callable[[TrainState], np.ndarray | None] | None = None,
    on_best: Callable[[np.ndarray, dict, int], None] | None = None,
    claimed: bool = False,
) -> LoopResult:
    """Trains until `config.steps`.

    Args:
      state: the initial (placed) train state; replaced by the latest checkpoint if `resume`.
      frozen_params: the frozen model params (sharded), passed to every step.
      train_step: jitted `(state, frozen_params, batch) -> (state, metrics)`.
      train_batches: `start_step -> iterator` of batches, the same sequence for the same start
        step (so that resuming replays exactly the batches an uninterrupted run sees).
      evaluate: `state -> metrics` (e.g. accuracy) run every `eval_every` steps and at the end.
      resume: continue from the latest checkpoint in `output_dir/checkpoints`.
      overwrite: delete a previous run's checkpoints and metrics in `output_dir` first (without
        `resume` or `overwrite`, a folder that holds a run is refused: `claim_output_dir`).
      examples_per_batch: for the examples/s figure.
      export: `state -> prompt` (the prompt the trainable produces, as numpy), or None when it
        makes none (model tuning); kept as the best prompt.
      on_best: called with (prompt, metrics, step) whenever the best metric improves and
        `export` gives a prompt.
      claimed: the caller has already claimed `output_dir` for this run
        (`claim_output_dir`, as `run.train_trainable` does): it is not claimed again.

    The batches are made `config.prefetch` ahead on a background thread (the same sequence),
    which stops when the loop ends, normally or not. A step's wall time (`step_seconds`,
    `train_seconds`) runs from asking for its batch to its metrics written, evaluation and
    checkpoint saves left out: the loop's steady state, waits for batches included.

    Raises:
      RunExistsError: `output_dir` holds a run and neither `resume` nor `overwrite` is set.
      FloatingPointError: the loss became NaN or infinite; the last good checkpoint is kept.
    """
    output_dir = Path(output_dir)
    if not claimed:
        claim_output_dir(output_dir, resume=resume, overwrite=overwrite)
    export = export or (lambda state: None)
    checkpoints = TrainCheckpoints(output_dir / "checkpoints", keep=config.keep_checkpoints)
    if resume and checkpoints.latest_step() is not None:
        # The newest intact step: a damaged newer one is skipped with a warning.
        state, restored = checkpoints.restore_latest(state)
        log.info("resumed from step %d in %s", restored, checkpoints.directory)
    start = int(state.step)
    primary = distributed.is_primary()
    writer = MetricsWriter(output_dir, start) if primary else NoMetrics()
    history: list[dict[str, Any]] = []
    best_value, best_prompt, best_metrics, last_metrics = -math.inf, None, {}, {}
    seen, train_seconds, step_seconds, first_step_end = 0, 0.0, [], None
    bar = tqdm(total=config.steps, initial=start, desc="train", unit="step",
               disable=not primary)
    batches = prefetch(train_batches(start), config.prefetch)
    try:
        for step in range(start + 1, config.steps + 1):
            t0 = time.perf_counter()
            batch = next(batches)
            state, metrics = train_step(state, frozen_params, batch)
            loss = float(metrics["loss"])  # waits for the step; also the NaN guard
            first_step_end = first_step_end or time.perf_counter()
            if not math.isfinite(loss):
                last = checkpoints.latest_step()
                raise FloatingPointError(
                    f"loss became {loss} at step {step}; stopping. The last good checkpoint is "
                    f"step {last} in {checkpoints.directory}" if last is not None else
                    f"loss became {loss} at step {step}; stopping (no checkpoint written yet)"
                )
            postfix = {"loss": f"{loss:.4f}"}
            if seen and train_seconds > 0:
                postfix["ex/s"] = f"{seen / train_seconds:.1f}"
            if step % config.log_every == 0 or step == config.steps:
                scalars = {k: float(v) for k, v in metrics.items()}
                writer.write(step, "train", scalars)
                history.append({"step": step, "split": "train", **scalars})
            step_seconds.append(time.perf_counter() - t0)
            if step > start + 1:  # the first step of a process includes compilation
                train_seconds += step_seconds[-1]
                seen += examples_per_batch or 0
            is_last = step == config.steps
            if evaluate is not None and (is_last or (config.eval_every
                                                     and step % config.eval_every == 0)):
                last_metrics = evaluate(state)
                writer.write(step, "eval", last_metrics)
                history.append({"step": step, "split": "eval", **last_metrics})
                value = last_metrics[config.best_metric]
                if value > best_value:
                    best_value, best_metrics = value, dict(last_metrics, step=step)
                    best_prompt = export(state)
                    if on_best is not None and best_prompt is not None:
                        on_best(best_prompt, best_metrics, step)
                postfix[config.best_metric[:3]] = f"{value:.3f}"
            if step % config.checkpoint_every == 0 or is_last:
                checkpoints.save(state)
            bar.set_postfix(postfix)
            bar.update(1)
    finally:
        if hasattr(batches, "close"):
            batches.close()
        bar.close()
        writer.close()
        checkpoints.close()
    if best_prompt is None:
        best_prompt = export(state)
    jax.block_until_ready(state)
    return LoopResult(
        state=state, best_prompt=best_prompt, best_metrics=best_metrics,
        last_metrics=last_metrics, history=history, train_seconds=train_seconds,
        examples_per_second=seen / train_seconds if train_seconds and seen else 0.0,
        step_seconds=step_seconds, first_step_end=first_step_end,
    )
