"""Orbax checkpoints of the trainable state only (prompt, optimizer state, step, rng).

The frozen model is never written: it is loaded again from its own checkpoint. Saves are
atomic (orbax finalizes a step directory only when complete), so a run killed mid-save
resumes from the last finished checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from prompt_jax.train import TrainState


class TrainCheckpoints:
    """Keeps the last `keep` train-state checkpoints under `directory`."""

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False,
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state: TrainState) -> None:
        """Writes the state at its step (overwriting nothing: steps are unique)."""
        step = int(state.step)
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(state))
        self._manager.wait_until_finished()

    def restore(self, like: TrainState, step: int | None = None) -> TrainState:
        """Restores into the structure (and shardings) of `like`; latest step by default."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {self.directory}")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._manager.close()
