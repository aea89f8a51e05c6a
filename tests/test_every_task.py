"""Every registered task trains and evaluates, on tiny data, through the engine.

The data root is ../shared/data, except that the tasks whose train files only come from TFDS
(there is no local copy) get a few rows in their release format: for MNLI, SNLI, QNLI, AG News
and TweetEval sentiment the first rows of their local evaluation files, for QQP and the ERASER
movie rationales rows written here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from prompt_jax import engine, prompts, tasks
from prompt_jax.training import train

SHARED = tasks.data_root()
HEADS = {  # folder -> (file copied from, file written, header lines kept), ...
    "mnli": (("dev.jsonl", "train.jsonl", 0),),
    "snli": (("dev.jsonl", "train.jsonl", 0),),
    "glue_qnli": (("validation.tsv", "train.tsv", 1),),
    "ag_news": (("test.csv", "train.csv", 1),),
    "tweeteval/sentiment": (("val_text.txt", "train_text.txt", 0),
                            ("val_labels.txt", "train_labels.txt", 0)),
}


def _mirror(source: Path, target: Path, folder: str = "") -> None:
    """Links `source`'s entries into `target`, except the HEADS folders (and the folders
    above them), which become real folders of links with the head files written."""
    target.mkdir(exist_ok=True)
    written = {t for _, t, _ in HEADS.get(folder, ())}
    for entry in source.iterdir():
        rel = f"{folder}/{entry.name}".lstrip("/")
        if entry.name in written:
            continue
        if any(h == rel or h.startswith(rel + "/") for h in HEADS):
            _mirror(entry, target / entry.name, rel)
        else:
            os.symlink(entry, target / entry.name)
    for src, dst, header in HEADS.get(folder, ()):
        lines = (source / src).read_text(encoding="utf-8").splitlines(True)
        (target / dst).write_text("".join(lines[:header + 100]), encoding="utf-8")
QQP = ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
       + "".join(f"{i}\t{2 * i}\t{2 * i + 1}\tHow do I learn {w}?\tWhat is the best way to learn "
                 f"{w}?\t{i % 2}\n" for i, w in enumerate(["jax", "flax", "optax", "orbax"] * 6)))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _mirror(SHARED, root)
    (root / "glue_qqp").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (root / "glue_qqp" / name).write_text(QQP, encoding="utf-8")
    movies = root / "movies"
    (movies / "docs").mkdir(parents=True)
    rows = []
    for i in range(24):
        label = ("NEG", "POS")[i % 2]
        (movies / "docs" / f"r{i:03d}.txt").write_text(
            ("a dull , tedious film .", "a warm , witty film .")[i % 2] + "\n")
        rows.append(json.dumps({"annotation_id": f"r{i:03d}.txt", "classification": label,
                                "evidences": []}) + "\n")
    for split in ("train", "val", "test"):
        (movies / f"{split}.jsonl").write_text("".join(rows))
    return root


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    return engine.load_model(str(tiny_llama), mesh_data=1)


@pytest.mark.parametrize("name", tasks.list_tasks())
def test_every_registered_task_trains_and_evaluates(name, loaded, tiny_data):
    task = loaded.task(name, max_input_length=48, data=str(tiny_data))
    optimizer = train.make_optimizer(train.OptimizerConfig())
    step = loaded.train_step(task, train.OptimizerConfig())  # the cached step every run uses
    prompt = prompts.random_uniform(jax.random.key(0), 4, loaded.model.d_model)
    state = train.place_state(train.init_state(prompt, optimizer), loaded.mesh)
    batches = task.batches("train", 8, shuffle=True, repeat=True, limit=16,
                           packer=task.packer(4))
    losses = []
    for _ in range(3):
        state, metrics = step(state, loaded.params, next(batches))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses)), losses
    trained = np.asarray(state.trainable)
    assert not np.allclose(trained, np.asarray(prompt)), "the prompt never moved"
    split = "validation"
    evaluate = loaded.evaluator(task, split, batch_size=8, limit=8, prompt_length=4)
    result = evaluate(trained)
    assert result["examples"] == 8, result
    for metric in tasks.get_task(name).metric_names:
        assert 0.0 <= result[metric] <= 1.0, (metric, result)
