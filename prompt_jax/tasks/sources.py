"""The two kinds of data source of a seqio Task, chosen by one setting (`source` argument,
else $PROMPT_JAX_SOURCE, else "local"): local files under the data root, or TFDS, which fails
fast with `TfdsUnavailableError` when the dataset is not prepared and the machine is offline.
Imports TensorFlow."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import tensorflow as tf

from prompt_jax.tasks.readers import data_root
from prompt_jax.tasks.registry import TaskSpec, TfdsUnavailableError, get_task, read_split

SOURCES = ("local", "tfds")
SOURCE_ENV = "PROMPT_JAX_SOURCE"
OFFLINE_ENV = "PROMPT_JAX_OFFLINE"
TFDS_HOST = "storage.googleapis.com"


def resolve_source(source: str | None = None) -> str:
    """`source`, else $PROMPT_JAX_SOURCE, else "local"."""
    source = source or os.environ.get(SOURCE_ENV) or "local"
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; choose one of {SOURCES} "
                         f"(argument or ${SOURCE_ENV})")
    return source


def tfds_data_dir() -> Path:
    return Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets"))


def ensure_tfds_available(task: str | TaskSpec, timeout: float = 5.0) -> None:
    """Returns if the task's TFDS dataset is prepared locally or its host is reachable.

    Raises:
      ValueError: the task has no TFDS builder.
      TfdsUnavailableError: not prepared under $TFDS_DATA_DIR and offline ($PROMPT_JAX_OFFLINE
        set, or the download host does not answer within `timeout` seconds).
    """
    spec = get_task(task)
    if spec.tfds is None:
        raise ValueError(f"task {spec.name!r} has no TFDS builder; use source='local' "
                         f"(files under {data_root_hint()})")
    folder = tfds_data_dir() / spec.tfds.name
    if any(folder.glob("**/dataset_info.json")):
        return
    why = None
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        why = f"${OFFLINE_ENV} is set"
    else:
        try:
            socket.create_connection((TFDS_HOST, 443), timeout=timeout).close()
        except OSError as e:
            why = f"{TFDS_HOST} is unreachable ({e})"
    if why:
        raise TfdsUnavailableError(
            f"TFDS dataset {spec.tfds.name!r} (task {spec.name!r}) is not prepared under "
            f"{folder} and cannot be downloaded: {why}. Use source='local' "
            f"(${SOURCE_ENV}=local) with the files under {data_root_hint()}.")


def data_root_hint() -> str:
    try:
        return str(data_root())
    except FileNotFoundError:
        return "$PROMPT_JAX_DATA"


def local_dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *,
                      name: str, root: str | None) -> tf.data.Dataset:
    examples, _ = read_split(name, split, root)
    return tf.data.Dataset.from_tensor_slices({
        "text_a": tf.constant([e.text_a for e in examples], tf.string),
        "text_b": tf.constant([e.text_b for e in examples], tf.string),
        "label": tf.constant([e.label for e in examples], tf.int32),
        "target": tf.constant([e.target for e in examples], tf.string),
        "index": tf.range(len(examples), dtype=tf.int32),
    })


def tfds_adapter(ds: tf.data.Dataset, *, name: str) -> tf.data.Dataset:
    """TFDS features -> text_a / text_b / label (our class order) / target / index."""
    source = get_task(name).tfds
    aliases = get_task(name).aliases
    table = tf.constant([aliases[n] for n in source.label_names] or [0], tf.int32)

    def field(ex, path):
        for key in path.split("/"):
            ex = ex[key]
        return ex

    def convert(i, ex):
        out = {"text_a": tf.strings.strip(field(ex, source.text_a)),
               "text_b": (tf.strings.strip(field(ex, source.text_b)) if source.text_b
                          else tf.constant("")),
               "index": tf.cast(i, tf.int32), "label": tf.constant(-1, tf.int32),
               "target": tf.constant("")}
        if source.label:
            raw = tf.cast(field(ex, source.label), tf.int32)  # SNLI marks "no gold label" -1
            out["label"] = tf.where(raw >= 0, tf.gather(table, tf.maximum(raw, 0)), -1)
        if source.references:
            refs = field(ex, source.references)
            out["target"] = refs if refs.shape.rank == 0 else tf.concat([refs, [""]], 0)[0]
        return out

    ds = ds.enumerate().map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.filter(lambda ex: ex["label"] >= 0) if source.label else ds
