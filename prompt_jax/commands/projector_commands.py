"""The jobs behind `prompt-jax project train|apply`: projectors from prompt files.

- `train_from_pairs`: distance minimization (or the least-squares fit) on pairs of prompt
  files, source model -> target model, one pair per task; writes the projector.
- `task_tune_from_file`: task tuning of a fresh projector on a target model and task, from a
  source prompt file (`projectors.task_tune`).
- `apply_file`: projects a prompt file and writes the target model's prompt as
  `<name>.npy` + sidecar, which `prompt-jax eval --prompt` and `train --init from_array` read.

Pairs are given as `SOURCE=TARGET` (two prompt files of any format `prompt_io` reads) or as a
folder holding `source/` and `target/`, whose files are paired by name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from prompt_jax import projectors
from prompt_jax.prompts.files import load_prompt, save_prompt

PAIR_FOLDERS = ("source", "target")


def pair_paths(specs: Sequence[str]) -> list[tuple[str, str]]:
    """(source, target) prompt paths from `SOURCE=TARGET` specs and pair folders.

    Args:
      specs: each either `SOURCE=TARGET`, or a folder with `source/` and `target/` subfolders
        whose entries (JSON sidecars aside) are paired by name.

    Raises:
      ValueError: a spec that is neither, or a folder entry without its counterpart.
    """
    pairs = []
    for spec in specs:
        folder = Path(spec)
        if folder.is_dir():
            sources, targets = (folder / name for name in PAIR_FOLDERS)
            if not (sources.is_dir() and targets.is_dir()):
                raise ValueError(f"{folder}: a pairs folder holds source/ and target/ "
                                 f"subfolders with prompt files paired by name")
            names = sorted(p.name for p in sources.iterdir() if p.suffix != ".json")
            missing = [n for n in names if not (targets / n).exists()]
            if missing:
                raise ValueError(f"{folder}: no target/ prompt for source/ {missing}")
            pairs += [(str(sources / n), str(targets / n)) for n in names]
        elif "=" in spec:
            source, target = spec.split("=", 1)
            pairs.append((source, target))
        else:
            raise ValueError(f"{spec}: a pair is SOURCE=TARGET (two prompt files) or a folder "
                             f"with source/ and target/")
    if not pairs:
        raise ValueError("no prompt pairs given")
    return pairs


def read_pairs(pairs: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """The paired prompts stacked: sources [N, P_s, d_s], targets [N, P_t, d_t].

    Raises:
      ValueError: the sources (or the targets) do not all have one shape (naming the file).
    """
    stacks = []
    for side, paths in zip(PAIR_FOLDERS, zip(*pairs, strict=True), strict=True):
        arrays = [load_prompt(path).array for path in paths]
        for path, array in zip(paths, arrays, strict=True):
            if array.shape != arrays[0].shape:
                raise ValueError(f"{path}: {side} prompt of shape {array.shape}, but {paths[0]} "
                                 f"has shape {arrays[0].shape}; the {side} prompts must agree")
        stacks.append(np.stack(arrays))
    return stacks[0], stacks[1]


def new_projector(kind: str, source_shape: tuple[int, int], target_width: int, *,
                  target_length: int | None = None, hidden: int = 768,
                  activation: str = "tanh", layer_norm: bool | None = None, seed: int = 0
                  ) -> tuple[projectors.ProjectorConfig, projectors.Params]:
    """A freshly initialized flat or token projector for source prompts of `source_shape`.

    Args:
      target_length: P_t of the flat kind (default: the source's length).
      layer_norm: default True for the flat kind (the paper's), False for the token kind.
    """
    rng = jax.random.PRNGKey(seed)
    if kind == "flat":
        return projectors.init_flat(
            rng, *source_shape, target_length or source_shape[0], target_width, hidden=hidden,
            activation=activation, layer_norm=True if layer_norm is None else layer_norm)
    if kind == "token":
        return projectors.init_token(rng, source_shape[1], target_width, hidden=hidden,
                                     activation=activation, layer_norm=bool(layer_norm))
    raise ValueError(f"a new projector is of kind flat or token (linear is fitted), got {kind!r}")


def train_from_pairs(specs: Sequence[str], out: str | os.PathLike, *, kind: str = "flat",
                     hidden: int = 768, activation: str = "tanh",
                     layer_norm: bool | None = None, steps: int = 1000,
                     learning_rate: float = 1e-3, batch_size: int = 0, seed: int = 0,
                     source_backbone: str = "", target_backbone: str = "",
                     overwrite: bool = False) -> dict[str, Any]:
    """Trains a projector by distance minimization on prompt pairs (the linear kind is fitted
    by least squares instead) and writes it to `out` (`<name>.safetensors` + `.json`).

    Returns:
      A summary: the files, the pairs, the first and last loss (the mean squared distance).
    """
    pairs = pair_paths(specs)
    sources, targets = read_pairs(pairs)
    if kind == "linear":
        if sources.shape[1] != targets.shape[1]:
            raise ValueError(f"the linear projector pairs vectors one to one: the source prompts "
                             f"have length {sources.shape[1]}, the targets {targets.shape[1]}")
        config, params = projectors.fit_linear(sources, targets)
        losses = np.asarray([projectors.distance_loss(config, params, sources, targets)])
    else:
        config, params = new_projector(kind, sources.shape[1:], targets.shape[2],
                                       target_length=targets.shape[1], hidden=hidden,
                                       activation=activation, layer_norm=layer_norm, seed=seed)
        params, losses = projectors.train_distance(
            config, params, sources, targets, steps=steps, learning_rate=learning_rate,
            batch_size=batch_size, seed=seed)
    metadata = {"mode": "distance", "source_backbone": source_backbone,
                "target_backbone": target_backbone, "pairs": [list(p) for p in pairs],
                "steps": 0 if kind == "linear" else steps, "first_loss": float(losses[0]),
                "loss": float(losses[-1])}
    written = projectors.save_projector(out, config, params, metadata=metadata,
                                        overwrite=overwrite)
    return {"projector": str(written[0]), "kind": kind, "pairs": len(pairs),
            "source_shape": list(sources.shape[1:]), "target_shape": list(targets.shape[1:]),
            "first_loss": float(losses[0]), "loss": float(losses[-1])}


def task_tune_from_file(config, source_prompt: str, *, kind: str = "flat", hidden: int = 768,
                        activation: str = "tanh", layer_norm: bool | None = None,
                        target_length: int | None = None, source_backbone: str = "",
                        resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Task-tunes a fresh projector (seeded by `config.seed`) from a source prompt file onto
    `config.model` for `config.task` (`projectors.task_tune`).

    Returns:
      The run's summary (with the projector's path).
    """
    from prompt_jax.training import loop, run

    source = load_prompt(source_prompt)
    loop.claim_output_dir(config.output_dir, resume=resume, overwrite=overwrite)
    loaded, _ = run.load(config)
    projector, params = new_projector(
        kind, source.array.shape, loaded.model.d_model, target_length=target_length,
        hidden=hidden, activation=activation, layer_norm=layer_norm, seed=config.seed)
    return projectors.task_tune(
        config, projector, params, source.array, loaded=loaded, resume=resume,
        overwrite=overwrite,
        metadata={"source_prompt": source.source, "source_backbone": source_backbone
                  or source.metadata.get("backbone", "")})


def apply_file(projector_path: str | os.PathLike, prompt_path: str | os.PathLike,
               output: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Projects a prompt file and writes the result as `<name>.npy` + JSON sidecar (backbone:
    the projector's target; init: "projector"; the source prompt and the projector).

    Raises:
      ValueError: the prompt's width (or length) is not the projector's source (naming both).
    """
    saved = projectors.load_projector(projector_path)
    prompt = load_prompt(prompt_path)
    try:
        projected = saved.apply(prompt.array)
    except ValueError as e:
        raise ValueError(f"{prompt.source}: {e}") from None
    target = saved.metadata.get("target_backbone") or saved.metadata.get("target_family")
    metadata = {"init": "projector", "projector": str(saved.path),
                "projector_kind": saved.config.kind, "source": prompt.source,
                "source_backbone": saved.metadata.get("source_backbone", ""),
                **({"backbone": target} if target else {}),
                **({"task": prompt.metadata["task"]} if "task" in prompt.metadata else {})}
    output = Path(output)
    if output.suffix != ".npy":
        raise ValueError(f"{output}: the projected prompt is written as <name>.npy (+ .json)")
    return save_prompt(projected, output, format="prompt_jax", metadata=metadata,
                       overwrite=overwrite)

