"""Domain shift (Lester et al. 2021): a soft prompt and a tuned model of one task, zero-shot on
other tasks, and the tuned params restored from a finished model-tuning run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from prompt_jax import engine
from prompt_jax.training import run
from prompt_jax.transfer.matrix import scored_split
from prompt_jax.transfer.runs import read_json, write_json


def domain_shift(loaded: engine.LoadedModel, prompt: np.ndarray, tuned_params: Callable[[], Any],
                 targets: Sequence[str], out_dir: str | Path, *, limit: int = 500,
                 batch_size: int = 32) -> list[dict[str, Any]]:
    """A soft prompt and a tuned model of the same source task, each zero-shot on other
    tasks: one cell per (row, target) in `out_dir/domain_shift/`, finished cells read back.

    Args:
      prompt: the source task's [P, H] prompt (on the frozen model).
      tuned_params: returns the source task's tuned model params (used with no prompt);
        called once, and only if a model-tuning cell is missing.
      targets: the tasks scored.
    """
    out = Path(out_dir) / "domain_shift"
    tuned = None
    rows = []
    for target in tqdm(targets, desc="domain shift", unit="target"):
        evaluate = None
        for row in ("prompt", "model_tuning"):
            path = out / f"{row}__{target}.json"
            if not path.exists():
                if row == "prompt":
                    args = (jnp.asarray(prompt),)
                else:
                    tuned = tuned_params() if tuned is None else tuned
                    args = (None, tuned)
                if evaluate is None:
                    evaluate = loaded.evaluator(loaded.task(target), scored_split(target),
                                                batch_size=batch_size, limit=limit,
                                                prompt_length=prompt.shape[0])
                write_json(path, {"row": row, "target": target, "limit": limit,
                                  **evaluate(*args)})
            rows.append(read_json(path))
    return rows


def restore_tuned_params(loaded: engine.LoadedModel, config: run.RunConfig):
    """The params of a finished model-tuning run (`config.tune == "model"`), from its last
    checkpoint."""
    from prompt_jax.training import train
    from prompt_jax.training.checkpoints import TrainCheckpoints

    like = train.init_state(loaded.params, train.make_optimizer(config.optimizer), config.seed)
    manager = TrainCheckpoints(Path(config.output_dir) / "checkpoints")
    try:
        state, _ = manager.restore_latest(like)
    finally:
        manager.close()
    return state.trainable
