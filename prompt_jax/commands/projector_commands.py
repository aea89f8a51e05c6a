"""The jobs behind `prompt-jax project train|apply`: projectors from prompt files.

Both objectives are trainables of the engine's one loop (`training.loop.run`: orbax
checkpoints of the projector's params and optimizer state, exact resume, metrics):

- `train_from_pairs` / `train_distance`: distance minimization on pairs of prompt files,
  source model -> target model, one pair per task (the linear kind is fitted by least
  squares instead); the projector is `<name>.safetensors`, its run `<name>.run/`.
- `task_tune_from_file` / `task_tune`: task tuning of a projector through the frozen target
  model on a task, the fixed source prompt projected at every step (`train.mapped_prompt`).
- `apply_file`: projects a prompt file and writes the target model's prompt as
  `<name>.npy` + sidecar, which `prompt-jax eval --prompt` and `train --init from_array` read.

Pairs are given as `SOURCE=TARGET` (two prompt files of any format `prompt_io` reads) or as a
folder holding `source/` and `target/`, whose files are paired by name.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prompt_jax import provenance

if TYPE_CHECKING:  # the heavy imports wait for a command that runs (the parser stays light)
    from prompt_jax import engine
    from prompt_jax.projectors import Params, ProjectorConfig
    from prompt_jax.training.run import RunConfig
    from prompt_jax.training.train import OptimizerConfig

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
    from prompt_jax.prompts.files import load_prompt

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
                  ) -> tuple[ProjectorConfig, Params]:
    """A freshly initialized flat or token projector for source prompts of `source_shape`.

    Args:
      target_length: P_t of the flat kind (default: the source's length).
      layer_norm: default True for the flat kind (the paper's), False for the token kind.
    """
    import jax

    from prompt_jax import projectors

    rng = jax.random.PRNGKey(seed)
    if kind == "flat":
        return projectors.init_flat(
            rng, *source_shape, target_length or source_shape[0], target_width, hidden=hidden,
            activation=activation, layer_norm=True if layer_norm is None else layer_norm)
    if kind == "token":
        return projectors.init_token(rng, source_shape[1], target_width, hidden=hidden,
                                     activation=activation, layer_norm=bool(layer_norm))
    raise ValueError(f"a new projector is of kind flat or token (linear is fitted), got {kind!r}")


def train_distance(projector: ProjectorConfig, params: Params, sources, targets,
                   run_dir: str | os.PathLike, *, steps: int = 1000,
                   optimizer: OptimizerConfig | None = None, batch_size: int = 0,
                   seed: int = 0, resume: bool = False, overwrite: bool = False,
                   checkpoint_every: int = 100, keep_checkpoints: int = 2,
                   log_every: int = 10) -> tuple[Params, float]:
    """Distance minimization (`projectors.distance_loss`) in the engine's loop: checkpoints,
    metrics (`metrics.jsonl`) and exact resume in `run_dir`, which is claimed once.

    Args:
      projector, params: the projector and its starting params.
      sources: [N, P_s, d_s], the source model's prompts of N tasks.
      targets: [N, P_t, d_t], the target model's prompts of the same tasks.
      run_dir: the run's folder.
      steps: optimizer steps in all (a resumed run continues to it).
      optimizer: default Adam at 1e-3 (AdamW without weight decay).
      batch_size: pairs per step drawn without replacement (0 = all pairs every step).
      seed: the minibatch draws' seed.
      resume, overwrite: as in `run.train_prompt`.

    Returns:
      (the trained params, the distance over all pairs at the end).
    """
    import jax
    import jax.numpy as jnp

    from prompt_jax import projectors
    from prompt_jax.training import loop, train

    x, y = np.asarray(sources, np.float32), np.asarray(targets, np.float32)
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"distance training takes [N, P, d] source and target prompts of the "
                         f"same N > 0 tasks; got {tuple(x.shape)} and {tuple(y.shape)}")
    projectors.check_prompt(projector, x.shape[1:])
    expected = (projector.output_length(x.shape[1]), projector.target_width)
    if tuple(y.shape[1:]) != expected:
        raise ValueError(f"the projector makes prompts of shape {expected}, but the target "
                         f"prompts have shape {tuple(y.shape[1:])}")
    if not 0 <= batch_size <= x.shape[0]:
        raise ValueError(f"batch size {batch_size} is not in [0, {x.shape[0]}] pairs")
    optimizer = train.make_optimizer(optimizer or train.OptimizerConfig(
        name="adamw", learning_rate=1e-3))
    state = train.init_state(jax.tree.map(jnp.asarray, params), optimizer, seed)
    result = loop.run(
        state, None, projectors.distance_step(projector, optimizer),
        projectors.pair_batches(x, y, batch_size, seed),
        loop.LoopConfig(steps=steps, eval_every=0, checkpoint_every=checkpoint_every,
                        keep_checkpoints=keep_checkpoints, log_every=log_every),
        run_dir, resume=resume, overwrite=overwrite)
    trained = result.state.trainable
    return trained, float(projectors.distance_loss(projector, trained, x, y))


def train_from_pairs(specs: Sequence[str], out: str | os.PathLike, *, kind: str = "flat",
                     hidden: int = 768, activation: str = "tanh",
                     layer_norm: bool | None = None, steps: int = 1000,
                     optimizer: OptimizerConfig | None = None, batch_size: int = 0,
                     seed: int = 0, source_backbone: str = "", target_backbone: str = "",
                     resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Trains a projector by distance minimization on prompt pairs (`train_distance`, its run
    in `<name>.run/`; the linear kind is fitted by least squares instead) and writes it to
    `out` (`<name>.safetensors` + `.json`).

    Returns:
      A summary: the files, the pairs, the distance (summed squared, mean over pairs) before
      and after.
    """
    from prompt_jax import projectors

    pairs = pair_paths(specs)
    sources, targets = read_pairs(pairs)
    path = projectors.projector_path(out)
    if path.with_suffix(".json").exists() and not (overwrite or resume):
        raise FileExistsError(f"{path.with_suffix('.json')}: already exists (--overwrite "
                              "replaces it)")
    if kind == "linear":
        if sources.shape[1] != targets.shape[1]:
            raise ValueError(f"the linear projector pairs vectors one to one: the source prompts "
                             f"have length {sources.shape[1]}, the targets {targets.shape[1]}")
        config, params = projectors.fit_linear(sources, targets)
        first = loss = float(projectors.distance_loss(config, params, sources, targets))
    else:
        config, params = new_projector(kind, sources.shape[1:], targets.shape[2],
                                       target_length=targets.shape[1], hidden=hidden,
                                       activation=activation, layer_norm=layer_norm, seed=seed)
        first = float(projectors.distance_loss(config, params, sources, targets))
        params, loss = train_distance(
            config, params, sources, targets, path.with_name(path.stem + ".run"), steps=steps,
            optimizer=optimizer, batch_size=batch_size, seed=seed, resume=resume,
            overwrite=overwrite)
    metadata = {"mode": "distance", "source_backbone": source_backbone,
                "target_backbone": target_backbone, "pairs": [list(p) for p in pairs],
                "steps": 0 if kind == "linear" else steps, "first_loss": first, "loss": loss}
    written = projectors.save_projector(path, config, params, metadata=metadata,
                                        overwrite=True)
    return {"projector": str(written[0]), "kind": kind, "pairs": len(pairs),
            "source_shape": list(sources.shape[1:]), "target_shape": list(targets.shape[1:]),
            "first_loss": first, "loss": loss}


def task_tune(config: RunConfig, projector: ProjectorConfig, params: Params, source_prompt, *,
              loaded: engine.LoadedModel | None = None, resume: bool = False,
              overwrite: bool = False, metadata: Mapping[str, Any] | None = None,
              config_files: Mapping[str, str] | None = None, claimed: bool = False
              ) -> dict[str, Any]:
    """Task tuning: trains only the projector's params through the frozen target model on a
    task, the fixed source prompt projected at every step (`train.mapped_prompt`).

    The run is a prompt-training run in every other way (`run.train_trainable`: the same step,
    loop, orbax checkpoints of the projector's params and optimizer state, exact `resume`,
    evaluation, `best_prompt.npy` and `prompt.npy`, the projected prompts); the trained
    projector is also written to `<output_dir>/projector.safetensors` (+ `.json`).

    Args:
      config: a `run.RunConfig` on the target model and task (its `prompt_length` is set to
        the projected prompt's length; its optimizer trains the projector).
      projector: the projector's config; its target width must be the model's d_model.
      params: the projector's starting params.
      source_prompt: the source model's prompt [P_s, d_s], fixed (closed over by the step as a
        small constant; the frozen model's params stay an argument).
      loaded: the already loaded target model (`config.model`).
      resume, overwrite, config_files, claimed: as in `run.train_trainable`.
      metadata: extra sidecar fields for the projector and the projected prompts (e.g.
        source_backbone, source_prompt).

    Returns:
      The run's summary, with the projector's path under "projector".

    Raises:
      ValueError: the source prompt does not fit the projector, or the projector's target
        width is not the model's (naming both).
    """
    import dataclasses

    import jax.numpy as jnp

    from prompt_jax import projectors
    from prompt_jax.training import loop, run, train

    source = jnp.asarray(source_prompt, jnp.float32)  # [P_s, d_s]
    projectors.check_prompt(projector, source.shape)
    config = dataclasses.replace(config, prompt_length=projector.output_length(source.shape[0]),
                                 tune="prompt")
    if not claimed:  # refused before the model loads
        loop.claim_output_dir(config.output_dir, resume=resume, overwrite=overwrite)
    loaded = loaded or run.load(config)[0]
    if projector.target_width != loaded.model.d_model:
        raise ValueError(f"the projector makes prompts of width {projector.target_width}, but "
                         f"the target model {config.model} has width {loaded.model.d_model}")
    trainable = train.mapped_prompt("projector",
                                    lambda p: projectors.apply(projector, p, source))
    extra = {"init": "projector", "projector_kind": projector.kind, **dict(metadata or {})}
    summary, trained = run.train_trainable(
        config, trainable, params, resume=resume, overwrite=overwrite, loaded=loaded,
        metadata=extra, config_files=config_files, claimed=True)
    out = Path(config.output_dir)
    saved = projectors.save_projector(
        out / "projector.safetensors", projector, trained, overwrite=True,
        metadata={"mode": "task", "task": config.task, "target_backbone": config.model,
                  "target_family": loaded.model.family, "steps": summary["steps"],
                  **{k: v for k, v in extra.items() if k not in ("init", "projector_kind")}})
    summary["projector"] = str(saved[0])
    provenance.write_result(out / "summary.json", summary)
    return summary


def task_tune_from_file(config: RunConfig, source_prompt: str, *, kind: str = "flat",
                        hidden: int = 768, activation: str = "tanh",
                        layer_norm: bool | None = None, target_length: int | None = None,
                        source_backbone: str = "", resume: bool = False,
                        overwrite: bool = False, config_files: Mapping[str, str] | None = None
                        ) -> dict[str, Any]:
    """Task-tunes a fresh projector (seeded by `config.seed`) from a source prompt file onto
    `config.model` for `config.task` (`task_tune`): the run's folder is claimed once, then
    the model is loaded once (its width shapes the projector).

    Returns:
      The run's summary (with the projector's path).
    """
    from prompt_jax.prompts.files import load_prompt
    from prompt_jax.training import loop, run

    source = load_prompt(source_prompt)
    loop.claim_output_dir(config.output_dir, resume=resume, overwrite=overwrite)
    loaded, _ = run.load(config)
    projector, params = new_projector(
        kind, source.array.shape, loaded.model.d_model, target_length=target_length,
        hidden=hidden, activation=activation, layer_norm=layer_norm, seed=config.seed)
    return task_tune(
        config, projector, params, source.array, loaded=loaded, resume=resume,
        overwrite=overwrite, config_files=config_files, claimed=True,
        metadata={"source_prompt": source.source, "source_backbone": source_backbone
                  or source.metadata.get("backbone", "")})


def apply_file(projector_path: str | os.PathLike, prompt_path: str | os.PathLike,
               output: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Projects a prompt file and writes the result as `<name>.npy` + JSON sidecar (backbone:
    the projector's target; init: "projector"; the source prompt and the projector).

    Raises:
      ValueError: the prompt's width (or length) is not the projector's source (naming both).
    """
    from prompt_jax import projectors
    from prompt_jax.prompts.files import load_prompt, save_prompt

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
                **{k: prompt.metadata[k] for k in ("task", "task_spec") if k in prompt.metadata}}
    output = Path(output)
    if output.suffix != ".npy":
        raise ValueError(f"{output}: the projected prompt is written as <name>.npy (+ .json)")
    return save_prompt(projected, output, format="prompt_jax", metadata=metadata,
                       overwrite=overwrite)



def main(args) -> None:
    """Runs `project train` (distance or task mode) or `project apply`."""
    from prompt_jax.training.train import OptimizerConfig

    if args.action == "apply":
        if not (args.projector and args.prompt and args.output):
            raise ValueError("project apply needs --projector, --prompt and --output")
        written = apply_file(args.projector, args.prompt, args.output, overwrite=args.overwrite)
        print(f"{args.prompt} -> {', '.join(map(str, written))}")
        return
    if not args.out:
        raise ValueError("project train needs --out")
    if args.mode == "distance":
        if not args.pairs:
            raise ValueError("project train --mode distance needs --pairs")
        summary = train_from_pairs(
            args.pairs, args.out, kind=args.kind, hidden=args.hidden, activation=args.activation,
            layer_norm=args.layer_norm, steps=args.steps or 1000,
            optimizer=OptimizerConfig(name=args.optimizer, learning_rate=args.learning_rate),
            batch_size=args.batch_size or 0, seed=args.seed,
            source_backbone=args.source_backbone, target_backbone=args.target_backbone,
            resume=args.resume, overwrite=args.overwrite)
    else:  # task
        from prompt_jax.commands import run_commands
        from prompt_jax.commands.common import import_tensorflow_quietly

        if args.source_prompt:  # its own task by default (a file task made again)
            from prompt_jax.tasks import task_spec

            own = task_spec.prompt_metadata(args.source_prompt).get("task")
            if args.task in (None, own):
                args.task = task_spec.define_from_prompt(args.source_prompt)
        missing = [f"--{name}" for name in ("model", "task", "source_prompt")
                   if not getattr(args, name)]
        if missing:
            raise ValueError(f"project train --mode task needs {', '.join(missing)}")
        import_tensorflow_quietly()
        config = run_commands.resolve_config(args.gin_file, args.gin_param, {
            "model": args.model, "task": args.task, "output_dir": args.out, "steps": args.steps,
            "batch_size": args.batch_size, "eval_limit": args.eval_limit, "seed": args.seed,
            "name": args.optimizer, "learning_rate": args.learning_rate})
        summary = task_tune_from_file(
            config, args.source_prompt, kind=args.kind, hidden=args.hidden,
            activation=args.activation, layer_norm=args.layer_norm,
            target_length=args.target_length, source_backbone=args.source_backbone,
            resume=args.resume, overwrite=args.overwrite,
            config_files=run_commands.config_files())
    print(json.dumps(summary, indent=2))


def add_parser(sub) -> None:
    """Adds `project` to the `prompt-jax` subparsers."""
    p = sub.add_parser(
        "project", help="cross-model prompt projectors (Su et al. 2022): train one by distance "
                        "minimization or task tuning, apply one to a prompt file")
    p.add_argument("action", choices=["train", "apply"])
    p.add_argument("--mode", choices=["distance", "task"], default="distance",
                   help="train: distance (map source prompts onto target prompts of the same "
                        "tasks) or task (tune through the frozen target model on a task)")
    p.add_argument("--out", help="train: the projector (distance: <name>[.safetensors], its "
                                 "run in <name>.run/) or the run folder (task)")
    p.add_argument("--pairs", action="append",
                   help="distance: SOURCE=TARGET prompt files, or a folder with source/ and "
                        "target/ paired by file name (repeatable)")
    p.add_argument("--kind", choices=["flat", "token", "linear"], default="flat",
                   help="flat (the paper's, over the flattened prompt), token (one MLP per "
                        "vector) or linear (least squares; distance only)")
    p.add_argument("--hidden", type=int, default=768, help="hidden width")
    p.add_argument("--activation", choices=["tanh", "leaky_relu"], default="tanh")
    p.add_argument("--layer_norm", action=argparse.BooleanOptionalAction,
                   help="LayerNorm over each output vector (default: on for flat, off for token)")
    p.add_argument("--steps", type=int, help="training steps (distance default 1000; task: "
                                             "RunConfig's)")
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=["adamw", "adafactor", "sgd"], default="adamw",
                   help="the projector's optimizer (adamw: no weight decay, i.e. Adam)")
    p.add_argument("--batch_size", type=int, help="distance: pairs per step (default all); "
                                                  "task: examples per step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source_backbone", default="", help="recorded in the projector's sidecar")
    p.add_argument("--target_backbone", default="", help="distance: recorded in the sidecar")
    p.add_argument("--model", help="task: the target model (REAL_MODELS name, local directory "
                                   "or file, or hub id)")
    p.add_argument("--task", help="task: the registered task trained on (default: the source "
                                  "prompt's own, a file task made again from its sidecar)")
    p.add_argument("--source_prompt", help="task: the source model's prompt file")
    p.add_argument("--target_length", type=int,
                   help="task, flat: projected prompt length (default: the source's)")
    p.add_argument("--eval_limit", type=int, help="task: evaluate on a seeded sample of N")
    p.add_argument("--gin_file", action="append", default=[],
                   help="task: gin config file (repeatable; plain flags win over it)")
    p.add_argument("--gin_param", action="append", default=[], help="task: gin binding")
    p.add_argument("--resume", action="store_true",
                   help="train: continue the run (task: in --out; distance: in <name>.run/)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing projector, prompt or run")
    p.add_argument("--projector", help="apply: the projector (<name>.safetensors)")
    p.add_argument("--prompt", help="apply: the source prompt file")
    p.add_argument("--output", help="apply: the projected prompt (<name>.npy, + .json)")
    p.set_defaults(func=main)
