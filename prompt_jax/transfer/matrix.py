"""The zero-shot transfer matrix: every source prompt (and two controls) scored on every
target task, one resumable JSON cell per pair."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from prompt_jax import engine
from prompt_jax.transfer.runs import read_json, write_json

NO_PROMPT = "none"  # control row: the hand-written template alone
RANDOM_PROMPT = "random"  # control row: a random prompt of the sources' mean norm
CONTROLS = (NO_PROMPT, RANDOM_PROMPT)

# Task pairs whose texts come from the same source: a transfer between them is not to an unseen
# domain (SST-2's sentences are Rotten Tomatoes review snippets, Pang & Lee 2005).
SHARED_TEXT = (frozenset({"sst2", "rotten_tomatoes"}),)


def shares_text(a: str, b: str) -> bool:
    """Whether two tasks' texts come from the same source (see SHARED_TEXT)."""
    return a != b and frozenset({a, b}) in SHARED_TEXT


def random_control(sources: Mapping[str, np.ndarray], seed: int = 0) -> np.ndarray:
    """A Gaussian prompt of the sources' shape, scaled to their mean Frobenius norm."""
    stack = np.stack(list(sources.values()))
    norm = float(np.linalg.norm(stack.reshape(len(stack), -1), axis=-1).mean())
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), stack.shape[1:]), np.float32)
    return x * (norm / np.linalg.norm(x))


def scored_split(task: str, preferred: str = "validation", data: str | None = None) -> str:
    """The split a target is scored on: `preferred`, or the task's test split when
    `preferred` has no local file (AG News has only its test set in ../shared/data)."""
    from prompt_jax.tasks.registry import local_paths, local_splits

    for split in (preferred, "test"):
        if split in local_splits(task) and all(p.is_file()
                                               for p in local_paths(task, split, data)):
            return split
    raise FileNotFoundError(f"task {task!r} has neither a {preferred!r} nor a 'test' split "
                            "in the local data")


def _cell_path(out_dir: Path, source: str, target: str) -> Path:
    return out_dir / "cells" / f"{source}__{target}.json"


def zero_shot_matrix(loaded: engine.LoadedModel, sources: Mapping[str, np.ndarray],
                     targets: Sequence[str], out_dir: str | Path, *, split: str = "validation",
                     limit: int = 500, batch_size: int = 32, controls: bool = True,
                     seed: int = 0) -> list[dict[str, Any]]:
    """Scores every source prompt (and the controls) on every target task.

    Each cell is `out_dir/cells/<source>__<target>.json`; cells already there are read, not
    recomputed (one stored with another `limit` is refused: its rows are not this call's). A
    target's batches are made once and reused by all its prompts.

    Args:
      loaded: the model.
      sources: name -> [P, H] prompt.
      targets: task names; each is scored with its own template and verbalizers.
      out_dir: where the cells go.
      split: the split scored (a target without it locally is scored on its test split).
      limit: a seeded random sample of this many examples per target (0 = all).
      batch_size: evaluation batch size.
      controls: add the NO_PROMPT and RANDOM_PROMPT rows.
      seed: the random control's seed.

    Returns:
      The cells: {"source", "target", "metric" (the target's own: accuracy, SQuAD's F1,
      NQ-Open's EM, ROUGE-L), "score" (its value), "examples", "seconds", the target's other
      metrics, and per row in an order shared by the target's cells "correct" (a
      classification row's outcome) or "row_scores" (a generation row's metric), ...}.
    """
    out = Path(out_dir)
    rows: dict[str, np.ndarray | None] = dict(sources)
    if controls:
        rows = {NO_PROMPT: None, RANDOM_PROMPT: random_control(sources, seed), **rows}
    cells = []
    bar = tqdm(total=len(rows) * len(targets), desc="matrix", unit="cell")
    for target in targets:
        todo = [s for s in rows if not _cell_path(out, s, target).exists()]
        evaluate = None
        for source, prompt in rows.items():
            path = _cell_path(out, source, target)
            if source in todo:
                if evaluate is None:  # only for targets with work left
                    task = loaded.task(target)
                    lengths = [p.shape[0] for p in rows.values() if p is not None]
                    target_split = scored_split(target, split, task.data or None)
                    evaluate = loaded.evaluator(task, target_split, batch_size=batch_size,
                                                limit=limit, per_row=True,
                                                prompt_length=lengths[0] if lengths else 0)
                t0 = time.perf_counter()
                metrics = evaluate(None if prompt is None else jnp.asarray(prompt))
                primary = task.spec.primary_metric  # the target's own metric
                write_json(path, {"source": source, "target": target, "split": target_split,
                                   "limit": limit, "model": loaded.name, **metrics,
                                   "metric": primary, "score": metrics[primary],
                                   "seconds": time.perf_counter() - t0})
            cell = read_json(path)
            if cell.get("limit", limit) != limit:
                raise ValueError(f"{path} was scored with limit {cell['limit']}, this call asks "
                                 f"for {limit}: use another results folder, or remove its "
                                 "cells to score them again")
            cells.append(cell)
            bar.update(1)
    bar.close()
    return cells


def ordered_cells(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells sorted for tables: the controls first, then tasks in registry order (so that
    a task's family stays together), by source then target."""
    from prompt_jax.tasks import list_tasks

    order = {name: i for i, name in enumerate((*CONTROLS, *list_tasks()))}

    def key(cell):
        return (order.get(cell["source"], len(order)), cell["source"],
                order.get(cell["target"], len(order)), cell["target"])

    return sorted(cells, key=key)


def cell_score(cell: dict[str, Any], metric: str = "score") -> float:
    """A cell's `metric`; "score" is its target's own metric (cells stored before targets had
    their own were classification cells: their accuracy)."""
    if metric == "score" and "score" not in cell:
        return cell["accuracy"]
    return cell[metric]


def matrix_arrays(cells: Sequence[dict[str, Any]], metric: str = "score"
                  ) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """The cells as arrays: (sources, targets, score [S, T], relative [S, T]).

    `relative[s, t]` = score[s, t] / score[t, t], the target's own prompt's score (NaN for a
    target with no prompt of its own among the sources); rows in cell order, controls first.
    """
    sources = list(dict.fromkeys(c["source"] for c in cells))
    targets = list(dict.fromkeys(c["target"] for c in cells))
    score = np.full((len(sources), len(targets)), np.nan)
    for c in cells:
        score[sources.index(c["source"]), targets.index(c["target"])] = cell_score(c, metric)
    own = np.array([score[sources.index(t), j] if t in sources else np.nan
                    for j, t in enumerate(targets)])
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = score / own[None, :]
    return sources, targets, score, relative

