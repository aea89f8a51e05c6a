"""Resumable orchestration of transfer experiments: source prompts trained by one recipe.

Each piece of work writes one JSON file when it finishes and skips the work whose file exists
(`write_json` is atomic), so a killed command continues where it stopped. A training run
resumes from its last checkpoint (`train_run`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prompt_jax import engine, provenance
from prompt_jax.training import loop, run
from prompt_jax.training.train import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class SourceRecipe:
    """How every source prompt is trained: the demo's recipe (20 vectors, AdamW 3e-2, batch 8,
    320 steps), initialized from each task's own class-label words (Lester et al.'s best
    init) rather than one shared text, so that two prompts do not look alike only because
    they started alike."""

    prompt_length: int = 20
    init: str = "class_labels"
    steps: int = 320
    batch_size: int = 8
    learning_rate: float = 3e-2
    weight_decay: float = 0.01
    max_input_length: int = 128
    eval_limit: int = 200  # the run's own check; the matrix scores every prompt again
    seed: int = 0

    def config(self, model: str, task: str, output_dir: str | Path, **overrides) -> run.RunConfig:
        """The run of one task by this recipe (overrides replace RunConfig fields)."""
        fields = dict(
            model=model, task=task, output_dir=str(output_dir),
            prompt_length=self.prompt_length, init=self.init,
            optimizer=OptimizerConfig(name="adamw", learning_rate=self.learning_rate,
                                      weight_decay=self.weight_decay),
            steps=self.steps, batch_size=self.batch_size,
            max_input_length=self.max_input_length, eval_every=0,
            eval_limit=self.eval_limit, checkpoint_every=80, keep_checkpoints=1,
            seed=self.seed, mesh_data=1)
        fields.update(overrides)
        return run.RunConfig(**fields)


def write_json(path: Path, value: Mapping[str, Any]) -> None:
    """Writes a result with its provenance, atomically (a killed write leaves no half file that
    would count as done)."""
    provenance.write_result(path, value)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def train_run(loaded: engine.LoadedModel, config: run.RunConfig) -> dict[str, Any]:
    """`run.train_prompt`, resumable at the level of whole runs: a finished run (its
    `summary.json` exists) is read back, a killed one resumes from its last checkpoint."""
    path = Path(config.output_dir) / "summary.json"
    if path.exists():
        return read_json(path)
    summary = run.train_prompt(config, resume=loop.holds_run(path.parent), loaded=loaded)
    # as a later call reads it back, provenance included (only the primary process writes it)
    return read_json(path) if path.exists() else summary


def train_sources(loaded: engine.LoadedModel, tasks: Sequence[str], out_dir: str | Path,
                  recipe: SourceRecipe = SourceRecipe(), runs_dir: str | Path | None = None
                  ) -> dict[str, Path]:
    """One source prompt per task, kept as `out_dir/prompts/<task>.npy` (with its JSON
    sidecar) and the run's summary as `out_dir/sources/<task>.json`; the runs themselves
    (checkpoints, metrics) go to `runs_dir/<task>` (default `out_dir/runs`). A task whose
    summary exists is not trained again.

    Returns:
      task -> its prompt file.
    """
    out = Path(out_dir)
    runs_dir = Path(runs_dir) if runs_dir else out / "runs"
    paths = {}
    for i, task in enumerate(tasks, 1):
        summary_path = out / "sources" / f"{task}.json"
        paths[task] = out / "prompts" / f"{task}.npy"
        if summary_path.exists():
            print(f"[source {i}/{len(tasks)}] {task}: done", flush=True)
            continue
        print(f"[source {i}/{len(tasks)}] {task}: training", flush=True)
        folder = runs_dir / task
        summary = train_run(loaded, recipe.config(loaded.name, task, folder))
        paths[task].parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".npy", ".json"):
            (paths[task].with_suffix(suffix)).write_bytes(
                (folder / "prompt").with_suffix(suffix).read_bytes())
        write_json(summary_path, {**summary, "recipe": dataclasses.asdict(recipe),
                                   "prompt": str(paths[task])})
    return paths


def load_prompts(loaded: engine.LoadedModel, paths: Mapping[str, str | Path]
                 ) -> dict[str, np.ndarray]:
    """name -> [P, H] prompt, from files in any format `prompt_io` reads."""
    from prompt_jax.prompts.files import load_prompt_for

    return {name: np.asarray(load_prompt_for(loaded.model, str(p)).array, np.float32)
            for name, p in paths.items()}

