"""Generation tasks (question answering, summarization) on a loaded model: evaluate a prompt by
greedy decoding and the task's own metric, and generate for raw texts.

A generation task trains like a classification task with the `target_ce` loss: the gold text
(plus EOS) is the target, teacher-forced, the loss on its tokens only (decoder-only models: the
target after the input, packed several examples per row where that pays, see
`training.packing`; T5: the decoder's labels). What differs is evaluation: every row is
decoded (`decoding.greedy`, KV cache, length buckets) up to the task's `max_new_tokens`, cut at
its stop string, and scored against all of its gold texts (`metrics.compute`: SQuAD's EM and
F1, NQ-Open's EM, ROUGE).

    loaded = engine.load_model("smollm2-135m-instruct")
    task = loaded.task("squad", max_input_length=384)
    print(loaded.evaluator(task, "validation", limit=200)(prompt))   # {"f1": ..., ...}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from prompt_jax import decoding, partitioning, scoring
from prompt_jax.models.base import Params


def decode_options(task, tokenizer) -> dict[str, Any]:
    """`decoding.greedy`'s keyword arguments for a task: its maximum of new tokens and stop
    string, the tokenizer's EOS and pad, and a decoder of the generated ids."""
    from prompt_jax.tasks.vocabulary import pad_id

    spec = task.spec
    return dict(max_new_tokens=spec.max_new_tokens, stop=spec.stop or None,
                eos_ids=tokenizer.eos_token_id, pad_id=pad_id(tokenizer),
                decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True))


def references(task, split: str) -> list[tuple[str, ...]]:
    """Every row's gold texts of a split, in the split's row order (a batch's `index`)."""
    from prompt_jax.tasks import read_split

    return [e.references for e in read_split(task.spec, split, task.data or None)[0]]


def predict(loaded, task, batches: Sequence[dict], prompt, params: Params | None = None
            ) -> tuple[list[int], list[str]]:
    """(split row indices, generated texts) of the real rows of `batches`, decoded greedily
    after the prompt (None: the template alone) with `params` (None: the frozen ones)."""
    params = loaded.params if params is None else partitioning.shard_params(
        params, loaded.model, loaded.mesh)
    options = decode_options(task, loaded.tokenizer)
    rows, texts = [], []
    for batch in batches:
        out = decoding.greedy(loaded.model, params, prompt, batch["inputs"],
                              batch["input_mask"], **options)
        real = np.flatnonzero(batch["weight"] > 0)
        texts += [out.texts[i].strip() for i in real]
        rows += [int(batch["index"][i]) for i in real]
    return rows, texts


def evaluator(loaded, task, split: str, *, batch_size: int, limit: int, seed: int,
              per_row: bool = False) -> Callable[[Any, Params | None], dict[str, Any]]:
    """`evaluate(prompt, params=None) -> metrics` of a generation task (`LoadedModel.evaluator`
    dispatches here): greedy decoding of every row (batches made once), the task's own metrics
    against all of each row's gold texts, the number of `examples`, and the first few
    `samples` (split row index, prediction, gold texts) to read; with `per_row`, also
    `row_scores`: each row's primary metric, in one fixed order (for paired comparisons).
    """
    from prompt_jax.tasks.metrics import compute
    from prompt_jax.tasks.metrics import per_row as row_metrics

    partitioning.check_batch_size(batch_size, loaded.mesh)
    batches = list(task.batches(split, batch_size, limit=limit, limit_seed=seed))
    golds = references(task, split)

    def evaluate(prompt, params: Params | None = None) -> dict[str, Any]:
        rows, predictions = predict(loaded, task, batches, prompt, params)
        metrics = compute(task.spec, predictions, [golds[r] for r in rows])
        samples = [{"row": r, "prediction": p, "references": list(golds[r])}
                   for r, p in list(zip(rows, predictions, strict=True))[:3]]
        scores = {}
        if per_row:
            scores["row_scores"] = row_metrics(task.spec, predictions, [golds[r] for r in rows])[
                task.spec.primary_metric].tolist()
        return {**metrics, "examples": len(rows), "samples": samples, **scores}

    return evaluate


def generate(loaded, task, prompt, texts: Sequence[str], *, max_new_tokens: int = 0,
             params: Params | None = None) -> decoding.Generation:
    """Greedy generations for raw input texts through the task's template (`TaskHandle.encode`,
    the one raw-text encoder), up to `max_new_tokens` (0 = the task's own maximum, which also
    bounds it)."""
    from prompt_jax.tasks.vocabulary import pad_id

    spec = task.spec
    if not spec.is_generation:
        raise ValueError(f"task {spec.name!r} is a classification task: score it, not generate")
    if max_new_tokens < 0 or max_new_tokens > spec.max_new_tokens:
        raise ValueError(f"max_new_tokens must be in 0..{spec.max_new_tokens} for task "
                         f"{spec.name!r}, got {max_new_tokens}")
    batch = scoring.pad_rows([(e.ids, 0) for e in task.encode(list(texts))],
                             pad_id(loaded.tokenizer))
    options = decode_options(task, loaded.tokenizer)
    options["max_new_tokens"] = max_new_tokens or spec.max_new_tokens
    return decoding.greedy(loaded.model, loaded.params if params is None else params, prompt,
                           batch["inputs"], batch["input_mask"], **options)
