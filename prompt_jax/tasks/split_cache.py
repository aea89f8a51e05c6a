"""Tokenized splits kept on disk, so that a second run on the same data does not tokenize again.

A run that shuffles a split tokenizes all of it before its first batch (the shuffle buffer
holds the split); on SST-2 and SmolLM2 that was most of a warm run's time to its first step.
`on_disk` stores the tokenized examples once (`tf.data.Dataset.save`, one shard, read back in
order) under `$PROMPT_JAX_CACHE/splits/<key>` and reads them from there after.

The key (`split_key`) covers everything the tokenized examples depend on: the seqio task's
name (task, template, prompt style, data folder, tokenizer vocabulary, a file task's
definition), the split, the sequence lengths, the sampled rows, each data file's path, size and
modification time, and the source of the modules that tokenize. A change to any of them is a
new key; nothing stale is read. `PROMPT_JAX_SPLIT_CACHE=0` turns it off;
`PROMPT_JAX_SPLIT_CACHE_DIR` puts it in a folder of one's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import tensorflow as tf

VERSION = 1
ENV = "PROMPT_JAX_SPLIT_CACHE"
DIR_ENV = "PROMPT_JAX_SPLIT_CACHE_DIR"
_DONE = "complete"  # written last: a folder without it is an interrupted write, not a cache


def enabled() -> bool:
    """Whether tokenized splits are kept on disk (`PROMPT_JAX_SPLIT_CACHE`, default on)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_root() -> Path:
    """`$PROMPT_JAX_SPLIT_CACHE_DIR` when set, else `splits/` in the prompt_jax cache folder
    (`$PROMPT_JAX_CACHE`)."""
    from prompt_jax.models.fetch import cache_dir

    own = os.environ.get(DIR_ENV)
    return Path(own) if own else cache_dir() / "splits"


def _code_digest() -> str:
    """The source of the modules that tokenize and lay out examples."""
    from prompt_jax.tasks import encoding, pipeline

    digest = hashlib.sha256()
    for module in (encoding, pipeline):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def split_key(task_name: str, split: str, lengths: Mapping[str, int], rows: str,
              files: Sequence[Path]) -> str:
    """The cache key of one tokenized split (a hex digest; see the module docstring).

    Args:
      task_name: the seqio task's name.
      split: the split.
      lengths: the sequence lengths it is cut to.
      rows: which rows ("all", or the sample's tag).
      files: the data files it is read from.
    """
    stamps = []
    for f in files:
        stat = Path(f).stat()
        stamps.append([str(Path(f).resolve()), stat.st_size, stat.st_mtime_ns])
    digest = hashlib.sha256(json.dumps({
        "version": VERSION, "task": task_name, "split": split,
        "lengths": dict(sorted(lengths.items())), "rows": rows, "files": stamps,
        "code": _code_digest()}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _load(folder: Path) -> tf.data.Dataset:
    return tf.data.Dataset.load(str(folder / "data"),
                                reader_func=lambda shards: shards.flat_map(lambda d: d))


def on_disk(ds: tf.data.Dataset, key: str) -> tf.data.Dataset:
    """`ds` read from the cache when `key` is stored; else written there (every element, in
    order) and read back. Writes go to a private folder renamed into place, so concurrent
    runs and a killed run leave either a whole entry or none."""
    folder = cache_root() / key
    if (folder / _DONE).exists():
        return _load(folder)
    if folder.exists():  # not written here (entries arrive whole): damaged, so made again
        shutil.rmtree(folder)
    cache_root().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_root()))
    try:
        ds.save(str(staging / "data"), shard_func=lambda _: tf.constant(0, tf.int64))
        (staging / _DONE).write_text("")
        try:
            staging.rename(folder)
        except OSError:  # another run stored the same entry first
            if not (folder / _DONE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _load(folder)
