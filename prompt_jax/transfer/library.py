"""A user's folder of saved prompts as a source library, beside the sources an experiment trains.

A library is a folder of `<name>.npy` prompts with their JSON sidecars (from `train`, a serving
bank, converted released prompts). Each prompt's file task is made again from its sidecar
(`tasks.task_spec`). A prompt of another width than the model's is refused naming both widths,
unless a projector maps it; one of another length is fitted to the experiment's length (its
first vectors kept, or its vectors repeated in order), and each prompt's handling is stated.

`import_library` copies the fitted prompts into an experiment folder as sources
(`prompts/<name>.npy`, `sources/<name>.json` with `"library": <file>`), so that every
`prompt-jax transfer` command uses them as it uses the prompts it trained. File tasks that an
experiment uses are kept as `tasks/<name>.json` (`record_task`, `define_recorded_tasks`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from prompt_jax.prompts.formats import PromptShapeError
from prompt_jax.tasks import task_spec
from prompt_jax.transfer.runs import write_json

AS_SAVED = "as saved"


@dataclasses.dataclass(frozen=True)
class LibraryPrompt:
    """A library prompt, ready for the model.

    Attributes:
      name: its file's stem.
      path: the file it was read from.
      task: its sidecar's task (a file task is registered again), or None.
      array: float32 [P, H], fitted to the model's width and the wanted length.
      handling: how it was made to fit ("as saved", "tiled from 10 to 20 vectors", ...).
      metadata: its sidecar.
    """

    name: str
    path: Path
    task: str | None
    array: np.ndarray
    handling: str
    metadata: dict[str, Any]


def fit_length(prompt: np.ndarray, length: int) -> tuple[np.ndarray, str]:
    """A [P, H] prompt as [length, H]: its first `length` vectors when longer, its vectors
    repeated in order (tiled) when shorter; with the handling in words."""
    prompt = np.asarray(prompt, np.float32)
    have = prompt.shape[0]
    if length < 1:
        raise ValueError(f"a prompt length is positive, got {length}")
    if have == length:
        return prompt, AS_SAVED
    if have > length:
        return prompt[:length], f"truncated from {have} to its first {length} vectors"
    reps = -(-length // have)
    return np.tile(prompt, (reps, 1))[:length], f"tiled from {have} to {length} vectors"


def _fit_width(prompt: np.ndarray, d_model: int, where: str, projector) -> tuple[np.ndarray, str]:
    width = prompt.shape[1]
    if width == d_model:
        return prompt, ""
    if projector is None:
        raise PromptShapeError(f"{where}: the prompt's width is {width}, the model's is "
                               f"{d_model}; give a projector (--projector) that maps {width} "
                               f"to {d_model}")
    try:
        projected = projector.apply(prompt)
    except ValueError as e:
        raise PromptShapeError(f"{where}: {e}") from None
    if projected.shape[1] != d_model:
        raise PromptShapeError(f"{where}: the projector {projector.path} maps width {width} to "
                               f"{projected.shape[1]}, not the model's {d_model}")
    return projected, f"projected from width {width} to {d_model} by {projector.path}"


def read_library(directory: str | Path, d_model: int, length: int | None = None, *,
                 projector: str | Path | None = None) -> list[LibraryPrompt]:
    """Every `<name>.npy` prompt of a folder, fitted to a model.

    Args:
      directory: the library folder.
      d_model: the model's width.
      length: the wanted length (None: each prompt's own).
      projector: a saved projector (`project train`) for prompts of another width.

    Raises:
      FileNotFoundError: no such folder, no prompt in it, or a file task's file is gone.
      PromptShapeError: a prompt's width is not the model's and no projector maps it (naming
        both widths).
    """
    from prompt_jax import projectors
    from prompt_jax.prompts.files import load_prompt

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such folder of prompts")
    files = sorted(directory.glob("*.npy"))
    if not files:
        raise FileNotFoundError(f"{directory}: holds no <name>.npy prompts")
    saved = projectors.load_projector(projector) if projector else None
    out = []
    for path in files:
        loaded = load_prompt(path)
        metadata = dict(loaded.metadata)
        task = task_spec.define_from_metadata(metadata, where=str(path)) or metadata.get("task")
        array, projected = _fit_width(np.asarray(loaded.array), d_model, str(path), saved)
        array, fitted = (array, AS_SAVED) if length is None else fit_length(array, length)
        handling = "; ".join(x for x in (projected, fitted) if x and x != AS_SAVED) or AS_SAVED
        out.append(LibraryPrompt(path.stem, path, task, array, handling, metadata))
    return out


def record_task(task: str, out: str | Path) -> Path | None:
    """Keeps a file task's definition as `out/tasks/<task>.json` (None: not a file task)."""
    return task_spec.write_spec(task, Path(out) / "tasks", f"{task}.json")


def define_recorded_tasks(out: str | Path) -> list[str]:
    """Registers every file task an experiment folder keeps (`tasks/*.json`)."""
    return [task_spec.define_from_file(p) for p in sorted((Path(out) / "tasks").glob("*.json"))]


def import_library(library: list[LibraryPrompt], out: str | Path) -> list[str]:
    """Copies library prompts into an experiment folder as sources.

    Each becomes `prompts/<name>.npy` (its sidecar with `library` and `length_handling`
    added) and `sources/<name>.json` (`library`, `task`, `handling`, and as `final` its
    sidecar's own score when it has one); its file task is recorded (`record_task`). A name
    that the experiment already holds from another file is refused.

    Returns:
      The names imported.
    """
    from prompt_jax.prompts.files import save_prompt

    out = Path(out)
    names = []
    for item in library:
        summary_path = out / "sources" / f"{item.name}.json"
        if summary_path.exists():
            held = json.loads(summary_path.read_text()).get("library")
            if held != str(item.path):
                raise ValueError(f"{item.path}: the experiment {out} already holds a source "
                                 f"named {item.name!r} ({held or 'trained by it'}); rename "
                                 "the library prompt")
        metadata = {k: v for k, v in item.metadata.items() if k not in ("length", "d_model",
                                                                          "dtype")}
        save_prompt(item.array, out / "prompts" / f"{item.name}.npy", format="prompt_jax",
                    overwrite=True, metadata={**metadata, "library": str(item.path),
                                              "length_handling": item.handling})
        score = item.metadata.get("score")
        write_json(summary_path, {"library": str(item.path), "task": item.task,
                                  "handling": item.handling,
                                  "final": score if isinstance(score, dict) else {},
                                  "train_seconds": None})
        if item.task:
            record_task(item.task, out)
        names.append(item.name)
    return names
