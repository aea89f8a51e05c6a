"""SeqIO Tasks and Mixtures for the registered tasks, and the fixed-shape numpy batches a jitted
step consumes. This module imports TensorFlow and seqio: `prompt_jax.tasks` imports it lazily.

A seqio Task is registered per (task, style, source, tokenizer) under
`<TaskSpec.seqio_name(style)>:<source>:<vocabulary>`. Its pipeline: the source (local files or
TFDS) yields `text_a`, `text_b`, `label`, `target`, `index`; preprocessors add `task_id` and
tokenize with the backbone's own tokenizer (`HFVocabulary`), cutting texts to
`sequence_length` while keeping the template's end (see `encoding`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
import seqio
import tensorflow as tf

from prompt_jax.tasks import encoding, split_cache
from prompt_jax.tasks.metrics import compute, label_from_text
from prompt_jax.tasks.readers import data_root, data_threads
from prompt_jax.tasks.registry import (
    LIMIT_SEED,
    TaskSpec,
    get_task,
    local_paths,
    read_split,
    sample_rows,
)
from prompt_jax.tasks.sources import (
    ensure_tfds_available,
    local_dataset_fn,
    resolve_source,
    tfds_adapter,
)
from prompt_jax.tasks.vocabulary import pad_id, vocabulary

BUCKET = 16

log = logging.getLogger(__name__)


def limit_threads(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` on its own pool of `data_threads()` threads, each op single-threaded."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = data_threads()
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def _keep_rows(ds: tf.data.Dataset, *, keep: np.ndarray) -> tf.data.Dataset:
    """Only the examples whose `index` (row of the split) is marked in the boolean `keep`."""
    table = tf.constant(keep)
    return ds.filter(lambda ex: tf.gather(table, ex["index"]))


def _sampled(task: seqio.Task, rows: np.ndarray, n: int, tag: str) -> seqio.Task:
    """The task restricted to `rows` (of n) of a split, selected before tokenization so that
    only the sample is tokenized. Not registered: built for one `batches` call."""
    keep = np.zeros(n, bool)
    keep[rows] = True
    steps = list(task.preprocessors)
    steps.insert(len(steps) - 1, functools.partial(_keep_rows, keep=keep))  # before _tokenize
    return seqio.Task(f"{task.name}:{tag}", source=task.source,
                      output_features=task.output_features, preprocessors=steps,
                      postprocess_fn=task.postprocessor, metric_fns=task.metric_fns)


def _split_size(task: seqio.Task, spec: TaskSpec, split: str, source: str | None,
                data: str | os.PathLike | None) -> int | None:
    if resolve_source(source) == "local":
        return len(read_split(spec, split, data)[0])
    return task.source.num_input_examples(split)


def _add_task_id(ds: tf.data.Dataset, *, task_id: int) -> tf.data.Dataset:
    return ds.map(lambda ex: {**ex, "task_id": tf.constant(task_id, tf.int32)})


def _tokenize(ds: tf.data.Dataset, sequence_length=None, output_features=None, *,
              spec: TaskSpec, style: str, chunk: int = 128) -> tf.data.Dataset:
    """Encodes inputs / targets with the compiled template: a Python step (numpy_function) over
    chunks of examples, so the Hugging Face tokenizer works on many texts per call."""
    tokenizer = output_features["inputs"].vocabulary.tokenizer
    layout = encoding.compile_layout(spec, tokenizer, style)
    verbalizers = None if spec.is_generation else encoding.verbalizer_ids(spec, tokenizer, style)
    words = None if spec.is_generation else [w.encode() for w in spec.verbalizers_for(style)]
    lengths = sequence_length or {}

    def flat(rows):
        return (np.asarray([t for r in rows for t in r], np.int32),
                np.asarray([len(r) for r in rows], np.int64))

    def encode(text_a, text_b, label, target):
        a = [x.decode("utf-8") for x in text_a]
        b = [x.decode("utf-8") for x in text_b]
        encoded = encoding.encode_inputs_batch(layout, tokenizer, a, b, lengths.get("inputs"))
        if verbalizers is None:
            gold = [encoding.encode_target(layout, tokenizer, t.decode("utf-8"),
                                           lengths.get("targets")) for t in target]
            gold_words = np.asarray(list(target), object)
        else:
            gold = [verbalizers[i] for i in label]
            gold_words = np.asarray([words[i] for i in label], object)
        rendered = np.asarray([encoding.render(layout, x, y).encode("utf-8")
                               for x, y in zip(a, b, strict=True)], object)
        positions = np.asarray([p for _, p in encoded], np.int32)
        return (*flat([ids for ids, _ in encoded]), *flat(gold), positions, rendered, gold_words)

    def step(ex):
        outs = tf.numpy_function(
            encode, [ex["text_a"], ex["text_b"], ex["label"], ex["target"]],
            [tf.int32, tf.int64, tf.int32, tf.int64, tf.int32, tf.string, tf.string],
            stateful=False)
        for t in outs:
            t.set_shape([None])
        ids, ids_len, gold, gold_len, position, text, gold_words = outs
        return {**ex, "inputs": tf.RaggedTensor.from_row_lengths(ids, ids_len),
                "targets": tf.RaggedTensor.from_row_lengths(gold, gold_len),
                "target_position": position, "inputs_pretokenized": text,
                "targets_pretokenized": gold_words}

    return ds.batch(chunk).map(step, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def seqio_task(task: str | TaskSpec, tokenizer, style: str, *, source: str | None = None,
               data: str | os.PathLike | None = None) -> seqio.Task:
    """The registered seqio Task of (task, style, source, tokenizer), registering it once.

    Raises:
      TfdsUnavailableError: source "tfds" while offline and not prepared locally.
      FileNotFoundError: source "local" and no data folder.
    """
    spec = get_task(task)
    spec.check_style(style)
    source = resolve_source(source)
    vocab = vocabulary(tokenizer)
    preprocessors = []
    if source == "local":
        if spec.local.fmt == "file":  # absolute paths of one's own files: no data root
            root, where = None, "file"
        else:
            root = str(data_root(data).resolve())
            where = f"local_{hashlib.sha1(root.encode()).hexdigest()[:8]}"
        splits = [s for s, _ in spec.local.splits]
        data_source = seqio.FunctionDataSource(
            functools.partial(local_dataset_fn, name=spec.name, root=root), splits=splits)
    else:
        ensure_tfds_available(spec)
        where = "tfds"
        data_source = seqio.TfdsDataSource(tfds_name=spec.tfds.name,
                                           splits=dict(spec.tfds.splits))
        preprocessors.append(functools.partial(tfds_adapter, name=spec.name))
    name = f"{spec.seqio_name(style)}:{where}:{vocab.name}"
    if spec.templates != get_task(spec.name).templates:  # a template of the user's own
        name += ":t" + hashlib.sha1(repr(spec.templates).encode()).hexdigest()[:8]
    if spec.local.fmt == "file":  # a file task: its name may be defined again, differently
        defined = (spec.local, spec.labels, spec.verbalizers, spec.templates)
        name += ":f" + hashlib.sha1(repr(defined).encode()).hexdigest()[:8]
    if name in seqio.TaskRegistry.names():
        return seqio.TaskRegistry.get(name)
    preprocessors += [functools.partial(_add_task_id, task_id=spec.task_id),
                      functools.partial(_tokenize, spec=spec, style=style)]
    features = {k: seqio.Feature(vocab, add_eos=style == "t5", dtype=tf.int32)
                for k in ("inputs", "targets")}

    def metric(targets, predictions):
        return compute(spec, predictions, targets)  # seqio passes (targets, predictions)

    def postprocess(text, example=None, is_target=False):
        return text if spec.is_generation else label_from_text(spec, style, text)

    return seqio.TaskRegistry.add(name, source=data_source,
                                  output_features=features, preprocessors=preprocessors,
                                  postprocess_fn=postprocess, metric_fns=[metric])


def _round_up(n: int, multiple: int, cap: int | None) -> int:
    n = max(1, -(-n // multiple) * multiple)
    return min(n, cap) if cap else n


NUMERIC = ("label", "target_position", "task_id", "index")


def to_batches(ds: tf.data.Dataset, batch_size: int, pad: int, *, max_length: int | None,
               target_length: int | None, max_target_length: int | None, bucket: int = BUCKET
               ) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-shape numpy batches of a dataset of tokenized examples.

    T is the longest input of the batch rounded up to a multiple of `bucket` (capped at
    `max_length`); K is `target_length` when given (classification: the candidates' K), else the
    longest target rounded up likewise. The last batch is filled up to `batch_size` with copies
    of its first row whose weight is 0 (and index -1). Batching happens in tf.data (padded), as
    moving single examples out of TensorFlow costs more than tokenizing them.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    ds = ds.map(lambda ex: {"inputs": ex["inputs"], "targets": ex["targets"],
                            "input_length": tf.size(ex["inputs"]),
                            "target_length": tf.size(ex["targets"]),
                            **{k: tf.cast(ex[k], tf.int32) for k in NUMERIC}})
    padding = {k: 0 for k in ("input_length", "target_length", *NUMERIC)}
    padding.update(inputs=pad, targets=pad)
    padding = {k: tf.constant(v, tf.int32) for k, v in padding.items()}
    ds = limit_threads(ds.padded_batch(batch_size, padding_values=padding))
    for b in ds.as_numpy_iterator():
        yield _fix_shape(b, batch_size, pad, max_length, target_length, max_target_length,
                         bucket)


def _fix_shape(b, batch_size, pad, max_length, target_length, max_target_length, bucket):
    real = len(b["label"])
    rows = np.concatenate([np.arange(real), np.zeros(batch_size - real, int)])
    t = _round_up(int(b["input_length"].max()), bucket, max_length)
    k = target_length or _round_up(int(b["target_length"].max()), bucket, max_target_length)
    out = {}
    for key, width, lengths in (("inputs", t, "input_length"), ("targets", k, "target_length")):
        ids = np.full((batch_size, width), pad, np.int32)
        got = b[key][rows, :width]
        ids[:, :got.shape[1]] = got
        out[key] = ids
        out[key.removesuffix("s") + "_mask"] = (
            np.arange(width)[None, :] < b[lengths][rows][:, None]).astype(np.int32)
    out["input_mask"] = out.pop("input_mask")
    for key in NUMERIC:
        out[key] = b[key][rows].astype(np.int32)
    out["index"][real:] = -1
    out["weight"] = (np.arange(batch_size) < real).astype(np.float32)
    return out


def _check_lengths(specs: Sequence[TaskSpec], tokenizer, style: str, max_length: int) -> None:
    """Fails before any pipeline runs when a template alone does not fit max_length."""
    for spec in specs:
        layout = encoding.compile_layout(spec, tokenizer, style)
        if layout.fixed_length >= max_length:
            raise ValueError(f"max_length {max_length} leaves no room for text in the {style} "
                             f"template of {spec.name!r} ({layout.fixed_length} tokens)")


def _target_length(specs: Sequence[TaskSpec], tokenizer, style: str) -> int | None:
    """Fixed K when every task is a classification task: the longest verbalizer."""
    if any(s.is_generation for s in specs):
        return None
    return max(encoding.candidates(s, tokenizer, style)[0].shape[1] for s in specs)


def batches(task: str | TaskSpec, split: str, tokenizer, style: str, batch_size: int, *,
            max_length: int, seed: int = 0, shuffle: bool = True, repeat: bool = False,
            limit: int | None = None, limit_seed: int = LIMIT_SEED,
            max_target_length: int | None = None, source: str | None = None,
            data: str | os.PathLike | None = None, bucket: int = BUCKET
            ) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-shape numpy batches of one task's split, through its seqio Task.

    The split is tokenized once and cached (in memory, and on disk for local data:
    `split_cache`, so that the next run reads it back); with `shuffle`, each epoch is a full
    permutation drawn from `seed` (same seed -> same order, epoch after epoch; TFDS splits
    larger than 2**18 rows are shuffled through a buffer of that size).

    `limit` (e.g. an eval_limit) keeps a seeded random sample of `limit` rows of the split, not
    its first rows (files are often sorted by label): the rows `registry.sample_rows(n, limit,
    limit_seed)` picks, kept in file order, selected before tokenization. The sample depends
    only on `limit_seed` (not on `seed`), so runs with different training seeds evaluate the
    same rows.

    Returns:
      An iterator of dicts: inputs, input_mask [B, T]; targets, target_mask [B, K]; label,
      target_position, task_id, index [B] int32; weight [B] float32.

    Raises:
      ValueError: max_length cannot hold the template; the style does not fit the task.
      KeyError / FileNotFoundError: the split does not exist / its file is absent.
    """
    spec = get_task(task)
    _check_lengths([spec], tokenizer, style, max_length)
    seqio_t = seqio_task(spec, tokenizer, style, source=source, data=data)
    lengths = {"inputs": max_length, "targets": max_target_length or max_length}
    if limit is not None:
        n = _split_size(seqio_t, spec, split, source, data)
        if n is None:  # a TFDS split whose size its builder does not say
            log.warning("the size of %s split %r is unknown: limit %d takes its first rows",
                        seqio_t.name, split, limit)
        else:
            rows = sample_rows(n, limit, limit_seed)
            if rows is not None:
                seqio_t = _sampled(seqio_t, rows, n, f"{split}_sample{limit}_seed{limit_seed}")
    ds = seqio_t.get_dataset(lengths, split=split, shuffle=False, num_epochs=1,
                             trim_output_features=False)
    if limit is not None:
        ds = ds.take(limit)
    if split_cache.enabled() and resolve_source(source) == "local":  # tokenized once, on disk
        ds = ds.map(lambda ex: {k: ex[k] for k in ("inputs", "targets", *NUMERIC)})
        key = split_cache.split_key(seqio_t.name, split, lengths, f"limit{limit}_{limit_seed}",
                                    local_paths(spec, split, data))
        ds = split_cache.on_disk(ds, key)
    ds = ds.cache()
    if shuffle:
        size = len(read_split(spec, split, data)[0]) if resolve_source(source) == "local" else 0
        ds = ds.shuffle(limit or size or 1 << 18, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return to_batches(ds, batch_size, pad_id(tokenizer),
                      max_length=max_length, target_length=_target_length([spec], tokenizer,
                                                                          style),
                      max_target_length=max_target_length or max_length, bucket=bucket)


def seqio_mixture(tasks: Sequence[str | TaskSpec], tokenizer, style: str, *,
                  rates: Sequence[float] | None = None, source: str | None = None,
                  data: str | os.PathLike | None = None) -> seqio.Mixture:
    """A registered seqio Mixture of the tasks (equal rates unless given)."""
    specs = [get_task(t) for t in tasks]
    rates = list(rates) if rates is not None else [1.0] * len(specs)
    if len(rates) != len(specs):
        raise ValueError(f"{len(specs)} tasks but {len(rates)} rates")
    members = [(seqio_task(s, tokenizer, style, source=source, data=data).name, float(r))
               for s, r in zip(specs, rates, strict=True)]
    name = "prompt_jax_mix_" + hashlib.sha1(json.dumps(members).encode()).hexdigest()[:12]
    if name not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(name, members)
    return seqio.get_mixture_or_task(name)


def mixture_batches(tasks: Sequence[str | TaskSpec], split: str, tokenizer, style: str,
                    batch_size: int, *, max_length: int, rates: Sequence[float] | None = None,
                    seed: int = 0, shuffle: bool = True, repeat: bool = True,
                    limit: int | None = None, max_target_length: int | None = None,
                    source: str | None = None, data: str | os.PathLike | None = None,
                    bucket: int = BUCKET) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-shape batches sampled from a seqio Mixture of several tasks; each row's `task_id`
    says which task it came from (`TaskSpec.task_id`). `limit` caps the examples yielded."""
    specs = [get_task(t) for t in tasks]
    _check_lengths(specs, tokenizer, style, max_length)
    mixture = seqio_mixture(specs, tokenizer, style, rates=rates, source=source, data=data)
    lengths = {"inputs": max_length, "targets": max_target_length or max_length}
    ds = mixture.get_dataset(lengths, split=split, shuffle=shuffle, seed=seed,
                             num_epochs=None if repeat else 1, trim_output_features=False,
                             passthrough_features=["label", "target_position", "task_id",
                                                   "index"])
    if limit is not None:
        ds = ds.take(limit)
    return to_batches(ds, batch_size, pad_id(tokenizer),
                      max_length=max_length, target_length=_target_length(specs, tokenizer,
                                                                           style),
                      max_target_length=max_target_length or max_length, bucket=bucket)
