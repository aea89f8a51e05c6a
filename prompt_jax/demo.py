"""The main job for now: a real frozen model (SmolLM2-135M-Instruct, GGUF) classifies the real
SST-2 validation split zero-shot by rank classification over verbalizers."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from prompt_jax.models import fetch, load_pretrained, load_tokenizer
from prompt_jax.scoring import accuracy, length_bucketed_batches, pad_candidates

TEMPLATE = "Review: {sentence}\nSentiment:"
VERBALIZERS = (" negative", " positive")  # SST-2 label 0, 1


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The folder of real datasets: `explicit`, else $PROMPT_JAX_DATA, else ../shared/data."""
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get("PROMPT_JAX_DATA"):
        candidates.append(Path(os.environ["PROMPT_JAX_DATA"]))
    candidates += [Path.cwd().parent / "shared" / "data",
                   Path(__file__).resolve().parents[2] / "shared" / "data"]
    for c in candidates[: 1 if explicit else None]:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        "no data folder found; looked at " + ", ".join(str(c) for c in candidates)
        + " (set PROMPT_JAX_DATA or pass --data)"
    )


def read_sst2(root: Path, split: str = "validation") -> tuple[list[str], np.ndarray]:
    """GLUE SST-2 tsv (header `sentence<TAB>label`, 1 = positive)."""
    path = root / "glue_sst2" / f"{split}.tsv"
    if not path.exists():
        raise FileNotFoundError(f"SST-2 {split} split not found at {path}")
    sentences, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 2):
            if row.get("label") not in ("0", "1") or not row.get("sentence"):
                raise ValueError(f"{path}:{lineno}: malformed row {row}")
            sentences.append(row["sentence"].strip())
            labels.append(int(row["label"]))
    return sentences, np.array(labels)


def zero_shot_accuracy(pre, tokenizer, texts, labels, template=TEMPLATE, verbalizers=VERBALIZERS,
                       batch_size=32) -> tuple[float, float]:
    """(accuracy, examples per second) of rank classification with a hand-written template."""
    model, params = pre.model, pre.params
    cand_ids, cand_mask = pad_candidates(
        [tokenizer(v, add_special_tokens=False)["input_ids"] for v in verbalizers])
    score = jax.jit(lambda p, ids, mask: model.score(
        p, model.embed(p, ids), mask, jnp.asarray(cand_ids), jnp.asarray(cand_mask)))
    prompts = [tokenizer(template.format(sentence=t))["input_ids"] for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    predictions = np.zeros(len(texts), np.int64)
    start = time.perf_counter()
    with tqdm(total=len(texts), desc="zero-shot", unit="ex") as bar:
        for batch in length_bucketed_batches(prompts, batch_size, pad,
                                             max_length=model.max_length):
            best = np.asarray(score(params, batch.ids, batch.mask)).argmax(-1)
            real = batch.index >= 0
            predictions[batch.index[real]] = best[real]
            bar.update(int(real.sum()))
    seconds = time.perf_counter() - start
    return accuracy(predictions, labels), len(texts) / seconds


def run(data: str | None = None, limit: int | None = None, batch_size: int = 32,
        template: str = TEMPLATE) -> dict:
    """Fetches the model, evaluates it on SST-2 validation, prints and returns the result."""
    gguf = fetch("smollm2-135m-instruct")
    texts, labels = read_sst2(data_root(data))
    if limit:
        texts, labels = texts[:limit], labels[:limit]
    print(f"loading {gguf.name} ...")
    pre, tokenizer = load_pretrained(gguf), load_tokenizer(gguf)
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(pre.params))
    acc, speed = zero_shot_accuracy(pre, tokenizer, texts, labels, template, batch_size=batch_size)
    shown = template.replace("\n", "\\n")
    print(f"\nSmolLM2-135M-Instruct (frozen, {n_params / 1e6:.1f}M params), SST-2 validation "
          f"({len(texts)} examples), rank classification over {VERBALIZERS}\n")
    print("| method | template | accuracy | trainable params | eval examples/s |")
    print("|---|---|---|---|---|")
    print(f"| zero-shot hand-written prompt | `{shown}` | {acc:.1%} | 0 | {speed:.1f} |")
    return {"accuracy": acc, "examples_per_second": speed, "examples": len(texts)}
