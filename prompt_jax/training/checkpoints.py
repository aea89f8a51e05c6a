"""Orbax checkpoints of the trainable state only (prompt, optimizer state, step, rng).

The frozen model is never written: it is loaded again from its own checkpoint. Saves are
atomic (orbax finalizes a step directory only when complete), so a run killed mid-save
resumes from the last finished checkpoint. A step that was finished but later damaged (its
files overwritten, truncated, lost) is skipped on resume with a warning: `restore_latest`
falls back to the newest step that restores, and moves the damaged newer ones aside.

The state is any pytree (a `TrainState`, a dict of arrays): nothing here depends on its fields.

In a multi-process job every process saves and restores together, as orbax requires (its
primary process writes the shared files); the folder must be one that every process sees.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from prompt_jax import distributed

log = logging.getLogger(__name__)


class CheckpointRestoreError(ValueError):
    """No checkpoint in a run's checkpoint folder can be restored."""


class TrainCheckpoints:
    """Keeps the last `keep` train-state checkpoints under `directory`, one folder per step.

    Args:
      directory: the checkpoint folder (created if missing).
      keep: how many of the newest steps to keep; older ones are deleted after each save.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False,
            ),
        )

    @property
    def damaged_directory(self) -> Path:
        """Where `restore_latest` moves steps that failed to restore: `<directory>.damaged`."""
        return self.directory.with_name(self.directory.name + ".damaged")

    def all_steps(self) -> list[int]:
        """Every saved step, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest saved step (not checked to be readable), or None."""
        return self._manager.latest_step()

    def save(self, state: Any, step: int | None = None) -> None:
        """Writes `state` at `step` (default: `state.step`); a step already saved is kept."""
        step = int(state.step) if step is None else int(step)
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(state))
        self._manager.wait_until_finished()

    def restore(self, like: Any, step: int | None = None) -> Any:
        """The state at `step`, in the structure (and shardings) of `like`.

        Args:
          like: a state of the same pytree structure, shapes and dtypes (e.g. a fresh one).
          step: the step to restore; None restores the newest intact step (`restore_latest`).

        Raises:
          FileNotFoundError: no checkpoint at all (or not at `step`).
          CheckpointRestoreError: the checkpoint cannot be restored.
        """
        if step is None:
            return self.restore_latest(like)[0]
        if step not in self._manager.all_steps():
            raise FileNotFoundError(f"{self.directory}: no checkpoint at step {step} "
                                    f"(steps: {self.all_steps()})")
        try:
            return self._restore(like, step)
        except Exception as e:  # noqa: BLE001 - orbax raises many types for unreadable data
            raise CheckpointRestoreError(
                f"{self.directory}: step {step} cannot be restored ({_reason(e)})"
            ) from None

    def restore_latest(self, like: Any) -> tuple[Any, int]:
        """The newest step that restores, skipping damaged ones.

        A step that fails to restore is logged as a warning naming it and the folder, and the
        next newest is tried. When an older step restores, the damaged newer steps are moved
        to `damaged_directory` (they would otherwise stay the "latest" step, and the resumed
        run could not save those step numbers again), with a warning saying so.

        Args:
          like: a state of the same pytree structure, shapes and dtypes (e.g. a fresh one).

        Returns:
          (state, step): the restored state and the step it was saved at.

        Raises:
          FileNotFoundError: the folder holds no checkpoint.
          CheckpointRestoreError: no step restores; one line naming the folder and what to do.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint to resume from in {self.directory}")
        failed: list[tuple[int, str]] = []
        for step in steps:
            try:
                state = self._restore(like, step)
            except Exception as e:  # noqa: BLE001 - orbax raises many types for unreadable data
                failed.append((step, _reason(e)))
                log.warning("checkpoint step %d in %s cannot be restored (%s)%s", step,
                            self.directory, failed[-1][1],
                            "; trying the next newest step" if step != steps[-1] else "")
                continue
            if failed:
                moved = self._move_aside([s for s, _ in failed])
                log.warning("resuming from step %d in %s instead; the damaged newer step(s) "
                            "%s were moved to %s", step, self.directory,
                            ", ".join(str(s) for s, _ in failed), moved)
            return state, step
        raise CheckpointRestoreError(
            f"{self.directory}: no checkpoint can be restored: step(s) "
            f"{', '.join(str(s) for s, _ in failed)} are damaged or were written for a "
            f"different train state (step {failed[0][0]}: {failed[0][1]}). Delete that folder, "
            "or start the run again without --resume (or with --overwrite)."
        )

    def clear(self) -> None:
        """Deletes every checkpoint (and `damaged_directory`): a fresh start for `--overwrite`."""
        for step in self._manager.all_steps():
            self._manager.delete(step)
        if distributed.is_primary():
            shutil.rmtree(self.damaged_directory, ignore_errors=True)
        distributed.barrier(f"clear {self.directory}")
        self._manager.reload()

    def close(self) -> None:
        self._manager.close()

    def _restore(self, like: Any, step: int) -> Any:
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def _move_aside(self, steps: list[int]) -> Path:
        target = self.damaged_directory
        if distributed.is_primary():  # the others wait for it
            target.mkdir(parents=True, exist_ok=True)
            for step in steps:
                # The manager's default layout names each step's folder by the bare step number.
                source = self.directory / str(step)
                name, n = str(step), 1
                while (target / name).exists():
                    name, n = f"{step}.{n}", n + 1
                shutil.move(source, target / name)
        distributed.barrier(f"move aside {self.directory}")
        self._manager.reload()
        return target


def _reason(error: Exception) -> str:
    """One short line for a log or an error message (orbax errors can run to many lines)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if len(first) > 200:
        first = first[:200] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
