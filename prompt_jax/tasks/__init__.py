"""SeqIO tasks for the paper's task families: registry, local/TFDS sources, templates per
backbone style, verbalizers, metrics, and fixed-shape numpy batches.

Importing this package does not import TensorFlow; the names in `_LAZY` (`batches`,
`mixture_batches`, `seqio_task`, ... which run seqio pipelines) load it on first use.
"""

from __future__ import annotations

import importlib

from prompt_jax.tasks import catalog as _catalog  # noqa: F401  (registers the tasks)
from prompt_jax.tasks.encoding import candidates, compile_layout, render, verbalizer_ids
from prompt_jax.tasks.metrics import compute as compute_metrics
from prompt_jax.tasks.metrics import evaluate_classification
from prompt_jax.tasks.readers import Example, ReadReport, data_root
from prompt_jax.tasks.registry import (
    FAMILY_STYLE,
    STYLES,
    TaskSpec,
    TfdsUnavailableError,
    get_task,
    list_tasks,
    local_paths,
    read_split,
    style_for_family,
    task_by_id,
    with_template,
)
from prompt_jax.tasks.user_file import define_file_task

_LAZY = {"batches": "pipeline", "mixture_batches": "pipeline", "seqio_task": "pipeline",
         "seqio_mixture": "pipeline", "to_batches": "pipeline", "vocabulary": "vocabulary",
         "HFVocabulary": "vocabulary", "ensure_tfds_available": "sources",
         "resolve_source": "sources"}

__all__ = [
    "FAMILY_STYLE", "STYLES", "Example", "ReadReport", "TaskSpec", "TfdsUnavailableError",
    "candidates", "compile_layout", "compute_metrics", "data_root", "define_file_task",
    "evaluate_classification",
    "get_task", "list_tasks", "local_paths", "read_split", "render", "style_for_family",
    "task_by_id", "verbalizer_ids", "with_template",
]  # the _LAZY names are public too, but left out so that `import *` does not load TensorFlow


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"prompt_jax.tasks.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'prompt_jax.tasks' has no attribute {name!r}")
