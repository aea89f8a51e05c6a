"""`prompt-jax tasks`: the registered tasks, their label sets, the sizes of the splits found
locally, and whether each task can be used offline. No TensorFlow."""

from __future__ import annotations

import json
import os

from prompt_jax.tasks.readers import data_root
from prompt_jax.tasks.registry import (
    SPLITS,
    get_task,
    list_tasks,
    local_paths,
    local_splits,
    read_split,
)


def task_table(data: str | os.PathLike | None = None) -> list[dict]:
    """One dict per task: name, family, labels, verbalizers, metrics, tfds, and per split the
    rows read locally (None: file absent), the malformed rows dropped and the missing files.
    `offline` is "yes" (train and validation readable), "eval only" or "no"."""
    root = data_root(data)
    rows = []
    for name in list_tasks():
        spec = get_task(name)
        sizes, dropped, missing = {}, {}, {}
        for split in SPLITS:
            if split not in local_splits(spec):
                continue
            try:
                examples, report = read_split(spec, split, root)
            except FileNotFoundError:
                sizes[split] = None
                missing[split] = [str(p) for p in local_paths(spec, split, root)
                                  if not p.is_file()]
                continue
            sizes[split] = len(examples)
            if report.dropped:
                dropped[split] = report.problem_counts
        rows.append({
            "name": name, "family": spec.family, "labels": list(spec.labels),
            "verbalizers": list(spec.verbalizers), "metrics": list(spec.metric_names),
            "local": sizes, "dropped": dropped, "missing": missing,
            "offline": ("yes" if sizes.get("train") and sizes.get("validation") else
                        "eval only" if any(sizes.values()) else "no"),
            "tfds": spec.tfds.name if spec.tfds else None,
        })
    return rows


def _size(value) -> str:
    return "missing" if value is None else str(value)


def format_table(rows: list[dict], root: str) -> str:
    lines = [f"data root: {root}", "",
             f"{'task':<21} {'family':<14} {'local rows train/validation/test':<30} "
             f"{'offline':<10} {'tfds':<23} labels -> verbalizers (or metrics)"]
    for r in rows:
        labels = ", ".join(f"{lab}->{v}" for lab, v in zip(r["labels"], r["verbalizers"],
                                                            strict=True))
        local = "/".join(_size(r["local"][s]) if s in r["local"] else "-"
                         for s in SPLITS)
        lines.append(f"{r['name']:<21} {r['family']:<14} {local:<30} {r['offline']:<10} "
                     f"{r['tfds'] or '-':<23} {labels or ', '.join(r['metrics'])}")
        for split, counts in r["dropped"].items():
            lines.append(f"{'':<21} dropped in {split}: {counts}")
    lines += ["", "-: no such split; missing: file absent (paths with --json); offline: yes = "
                  "train and validation readable, eval only = only validation/test",
              "a task that is not offline = yes trains from TFDS: set PROMPT_JAX_SOURCE=tfds "
              "(downloads the tfds dataset once; needs the network)"]
    return "\n".join(lines)


def print_tasks(data: str | os.PathLike | None = None, as_json: bool = False) -> None:
    rows = task_table(data)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, str(data_root(data))))
