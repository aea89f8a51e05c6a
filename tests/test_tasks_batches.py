"""Fixed-shape batches through the seqio Tasks and Mixtures, on the real data in ../shared/data."""

from __future__ import annotations

import collections
import time

import numpy as np
import pytest

from prompt_jax.tasks import (
    TfdsUnavailableError,
    batches,
    candidates,
    compile_layout,
    get_task,
    list_tasks,
    mixture_batches,
    read_split,
    render,
    seqio_task,
    sources,
    with_template,
)
from prompt_jax.tasks.registry import sample_rows
from tests.task_tokenizers import BACKBONES, bert_tokenizer, llama_tokenizer

# Every task with data in ../shared/data and the train / validation splits it has there.
LOCAL = {"sst2": ("train", "validation"), "imdb": ("train", "validation"),
         "laptop": ("train", "validation"), "restaurant": ("train", "validation"),
         "mnli": ("validation",), "qnli": ("validation",),
         "snli": ("validation",), "mrpc": ("train", "validation"),
         "rotten_tomatoes": ("train", "validation"), "rte": ("train", "validation"),
         "cb": ("train", "validation"), "trec": ("train", "validation"), "ag_news": ("test",)}
KEYS = {"inputs", "input_mask", "targets", "target_mask", "label", "target_position", "task_id",
        "weight", "index"}


def _rows(batch_list, key):
    return np.concatenate([b[key][b["weight"] > 0] for b in batch_list])


@pytest.mark.parametrize(("task", "split"), [(t, s) for t, ss in LOCAL.items() for s in ss])
def test_every_local_task_yields_fixed_shape_batches(task, split):
    tok = llama_tokenizer()
    got = list(batches(task, split, tok, "causal", 16, max_length=128, shuffle=False, limit=24))
    assert len(got) == 2
    for b in got:
        assert set(b) == KEYS
        assert b["inputs"].shape[0] == 16 and b["inputs"].dtype == np.int32
        assert b["inputs"].shape[1] % 16 == 0 or b["inputs"].shape[1] == 128
        assert b["inputs"].shape == b["input_mask"].shape
        assert b["targets"].shape == (16, candidates(task, tok, "causal")[0].shape[1])
        assert b["weight"].dtype == np.float32 and np.all(b["task_id"] == get_task(task).task_id)
    assert got[1]["weight"].tolist() == [1.0] * 8 + [0.0] * 8
    assert got[1]["index"][8:].tolist() == [-1] * 8
    examples, _ = read_split(task, split)
    rows = sample_rows(len(examples), 24)  # a seeded sample of the split, in file order
    np.testing.assert_array_equal(_rows(got, "index"), rows)
    np.testing.assert_array_equal(_rows(got, "label"), [examples[i].label for i in rows])


def test_absent_splits_and_impossible_lengths_fail_before_running():
    tok = llama_tokenizer()
    with pytest.raises(FileNotFoundError, match="mnli/train.jsonl.*PROMPT_JAX_SOURCE=tfds"):
        next(batches("mnli", "train", tok, "causal", 8, max_length=64))
    with pytest.raises(KeyError, match="no local 'test' split"):
        next(batches("sst2", "test", tok, "causal", 8, max_length=64))
    with pytest.raises(ValueError, match="max_length 8 leaves no room .* 'mnli'"):
        batches("mnli", "validation", tok, "causal", 8, max_length=8)


def test_sst2_validation_through_the_pipeline_matches_the_file():
    tok = bert_tokenizer()
    got = list(batches("sst2", "validation", tok, "mlm", 64, max_length=96, shuffle=False))
    labels = _rows(got, "label")
    assert len(labels) == 872 and int(labels.sum()) == 444
    assert sum(float(b["weight"].sum()) for b in got) == 872.0
    assert len({b["inputs"].shape for b in got}) <= 96 // 16
    ids, mask = candidates("sst2", tok, "mlm")
    for b in got:
        rows = np.arange(64)
        assert np.all(b["target_position"] == 1)
        assert np.all(b["inputs"][rows, b["target_position"]] == tok.mask_token_id)
        np.testing.assert_array_equal(b["targets"], ids[b["label"]])
        np.testing.assert_array_equal(b["target_mask"], mask[b["label"]])
        pads = b["inputs"][b["input_mask"] == 0]
        assert np.all(pads == tok.pad_token_id)


@pytest.mark.parametrize("family", sorted(BACKBONES))
def test_decoding_a_batch_gives_back_the_filled_template(family):
    style, make = BACKBONES[family]
    tok = make()
    (b,) = batches("rte", "validation", tok, style, 8, max_length=512, shuffle=False, limit=8)
    examples, _ = read_split("rte", "validation")
    layout = compile_layout("rte", tok, style)
    for row in range(8):
        e = examples[b["index"][row]]
        decoded = tok.decode(b["inputs"][row][b["input_mask"][row] == 1].tolist())
        expected = render(layout, e.text_a, e.text_b)
        if family == "bert":
            assert "".join(decoded.lower().split()) == "".join(expected.lower().split())
        elif family == "t5":
            assert decoded.split() == expected.split()
        else:
            assert decoded == expected
        gold = get_task("rte").verbalizers_for(style)[b["label"][row]]
        target = tok.decode(b["targets"][row][b["target_mask"][row] == 1].tolist())
        assert target.replace(tok.eos_token or "", "").strip().replace(" ", "") == gold


def test_a_template_of_ones_own_goes_through_the_pipeline():
    tok = llama_tokenizer()
    own = with_template("rte", "causal", "{text_a}\nQuestion: {text_b} Yes or no?\nAnswer:")
    (b,) = batches(own, "validation", tok, "causal", 4, max_length=512, shuffle=False, limit=4)
    (default,) = batches("rte", "validation", tok, "causal", 4, max_length=512, shuffle=False,
                         limit=4)
    e = read_split("rte", "validation")[0][b["index"][0]]
    decoded = tok.decode(b["inputs"][0][b["input_mask"][0] == 1].tolist())
    assert decoded == f"{e.text_a}\nQuestion: {e.text_b} Yes or no?\nAnswer:"
    assert tok.decode(default["inputs"][0][default["input_mask"][0] == 1].tolist()) != decoded
    assert get_task("rte").template("causal") != own.template("causal")  # registry untouched
    for bad, message in [("{text_a} only", r"exactly the fields \['text_a', 'text_b'\]"),
                         ("{text_a} {text_b} {label}", "got \\['label', 'text_a', 'text_b'\\]")]:
        with pytest.raises(ValueError, match=message):
            with_template("rte", "causal", bad)
    with pytest.raises(ValueError, match="mlm style has no template"):
        with_template("sst2", "mlm", "{text_a}")


def _order(seed, repeat_batches=16):
    tok = llama_tokenizer()
    it = batches("cb", "train", tok, "causal", 8, max_length=256, seed=seed, shuffle=True,
                 repeat=True, limit=64)
    return np.concatenate([next(it)["index"] for _ in range(repeat_batches)])


def test_same_seed_same_order_over_two_epochs_other_seed_another():
    first, again, other = _order(0), _order(0), _order(1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    sample = sample_rows(len(read_split("cb", "train")[0]), 64).tolist()
    for order in (first, other):
        assert sorted(order[:64]) == sample == sorted(order[64:])  # whole epochs
    assert not np.array_equal(first[:64], first[64:])  # each epoch is reshuffled
    assert not np.array_equal(first[:64], sample)


def test_limit_is_a_seeded_random_sample_of_a_file_sorted_by_label():
    """IMDB's test file is sorted by label (12,500 negative reviews, then 12,500 positive): a
    limit takes a seeded random sample of the whole split, in file order, so both classes."""
    tok = llama_tokenizer()
    examples, _ = read_split("imdb", "test")
    assert {e.label for e in examples[:500]} == {0}  # the file's start is one class

    def sample(**kwargs):
        got = list(batches("imdb", "test", tok, "causal", 32, max_length=48, shuffle=False,
                           limit=60, **kwargs))
        return _rows(got, "index"), _rows(got, "label")

    index, labels = sample()
    assert len(index) == 60 and len(set(index.tolist())) == 60
    assert np.all(np.diff(index) > 0) and index.max() > 12500  # file order, spread over it
    assert 15 <= int(labels.sum()) <= 45  # both classes, near half and half
    np.testing.assert_array_equal(labels, [examples[i].label for i in index])
    again, _ = sample()
    np.testing.assert_array_equal(again, index)  # same seed, same rows
    other, _ = sample(limit_seed=1)
    assert len(other) == 60 and not np.array_equal(other, index)
    np.testing.assert_array_equal(sample_rows(25000, 60), index)
    assert sample_rows(10, 10) is None and sample_rows(10, None) is None
    with pytest.raises(ValueError, match="limit must be positive"):
        sample_rows(10, 0)


def test_lengths_are_bucketed_and_truncation_keeps_the_template_end():
    tok = llama_tokenizer()
    shapes = collections.Counter()
    suffix = compile_layout("imdb", tok, "causal").parts[-1].ids
    for b in batches("imdb", "validation", tok, "causal", 32, max_length=200, limit=256):
        shapes[b["inputs"].shape] += 1
        for ids, m in zip(b["inputs"], b["input_mask"], strict=True):
            assert tuple(ids[m == 1][-len(suffix):]) == suffix  # "...\nSentiment:" survives
    assert set(shapes) <= {(32, t) for t in (16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176,
                                            192, 200)}
    assert (32, 200) in shapes  # long reviews were cut to max_length


def test_mixture_examples_carry_their_task_id():
    tok = llama_tokenizer()
    kwargs = dict(max_length=256, seed=3, limit=96, rates=[1.0, 1.0])
    got = list(mixture_batches(["rte", "cb"], "train", tok, "causal", 16, **kwargs))
    again = list(mixture_batches(["rte", "cb"], "train", tok, "causal", 16, **kwargs))
    rte, cb = get_task("rte"), get_task("cb")
    ids = _rows(got, "task_id")
    assert set(ids) == {rte.task_id, cb.task_id} and len(ids) == 96
    np.testing.assert_array_equal(ids, _rows(again, "task_id"))
    k = max(candidates(t, tok, "causal")[0].shape[1] for t in ("rte", "cb"))
    for b in got:
        assert b["targets"].shape == (16, k)
        for row in np.flatnonzero(b["weight"]):
            spec = rte if b["task_id"][row] == rte.task_id else cb
            cand, cmask = candidates(spec, tok, "causal")
            gold = cand[b["label"][row]][cmask[b["label"][row]] == 1]
            np.testing.assert_array_equal(b["targets"][row][b["target_mask"][row] == 1], gold)


def test_the_registered_seqio_task():
    import tensorflow as tf

    tok = llama_tokenizer()
    task = seqio_task("mrpc", tok, "causal")
    assert task.name.startswith("prompt_jax_mrpc_causal:local_")
    assert seqio_task("mrpc", tok, "causal") is task
    ex = next(task.get_dataset(None, split="validation", shuffle=False).as_numpy_iterator())
    assert ex["inputs_pretokenized"].decode().startswith("Sentence 1: ")
    assert ex["targets_pretokenized"].decode() in ("no", "yes")
    assert task.postprocess_fn(" yes", is_target=False) == 1
    assert task.postprocess_fn("perhaps") == -1
    (metric,) = task.metric_fns
    assert metric([1, 0, 1], [1, 1, 1]) == pytest.approx({"accuracy": 2 / 3, "f1": 0.8})
    vocab = task.output_features["inputs"].vocabulary
    assert vocab.decode(tok("hi there")["input_ids"]) == "hi there"
    assert vocab.encode_tf(tf.constant("hi there")).numpy().tolist() == tok("hi there")[
        "input_ids"]
    assert vocab.decode_tf(tf.constant([tok("hi there")["input_ids"]])).numpy().tolist() == [
        b"hi there"]
    assert vocab.pad_id == tok.pad_token_id and vocab.vocab_size == len(tok)


def test_tfds_source_fails_fast_and_clearly_when_offline(tmp_path, monkeypatch):
    tok = llama_tokenizer()
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PROMPT_JAX_SOURCE", "tfds")  # the one setting that picks the source
    monkeypatch.setenv("PROMPT_JAX_OFFLINE", "1")
    with pytest.raises(TfdsUnavailableError, match="'glue/sst2'.*PROMPT_JAX_OFFLINE.*local"):
        batches("sst2", "validation", tok, "causal", 8, max_length=64)
    monkeypatch.delenv("PROMPT_JAX_OFFLINE")
    monkeypatch.setattr(sources, "TFDS_HOST", "tfds-host.invalid")
    start = time.perf_counter()
    with pytest.raises(TfdsUnavailableError, match="tfds-host.invalid is unreachable"):
        batches("mnli", "validation", tok, "causal", 8, max_length=64)
    assert time.perf_counter() - start < 15
    with pytest.raises(ValueError, match="'laptop' has no TFDS builder"):
        seqio_task("laptop", tok, "causal")
    monkeypatch.setenv("PROMPT_JAX_SOURCE", "hub")
    with pytest.raises(ValueError, match="unknown data source 'hub'"):
        seqio_task("sst2", tok, "causal")


def test_tfds_field_names_and_label_order_match_the_builders(tmp_path):
    import tensorflow_datasets as tfds

    for name in list_tasks():
        spec = get_task(name)
        if spec.tfds is None:
            continue
        features = tfds.builder(spec.tfds.name, data_dir=str(tmp_path)).info.features
        for path in filter(None, (spec.tfds.text_a, spec.tfds.text_b, spec.tfds.references)):
            feature = features
            for key in path.split("/"):
                feature = feature[key]
        if spec.tfds.label:
            assert tuple(features[spec.tfds.label].names) == spec.tfds.label_names, name
            mapped = [spec.aliases[n] for n in spec.tfds.label_names]
            assert sorted(mapped) == list(range(len(spec.labels))), name


def test_tfds_adapter_maps_builder_shaped_examples():
    """The adapter on examples shaped like the builders' outputs (keys and dtypes as in
    `tfds.builder(...).info.features`), filled with real rows from ../shared/data."""
    import tensorflow as tf

    examples, _ = read_split("cb", "validation")
    tfds_order = get_task("cb").tfds.label_names  # entailment, contradiction, neutral
    rows = {"premise": [e.text_a for e in examples[:6]],
            "hypothesis": [e.text_b for e in examples[:6]],
            "label": [tfds_order.index(get_task("cb").labels[e.label]) for e in examples[:6]],
            "idx": list(range(6))}
    rows["label"][0] = -1  # SNLI-style "no gold label" rows are dropped
    ds = sources.tfds_adapter(tf.data.Dataset.from_tensor_slices(
        {k: tf.constant(v, tf.int64 if k in ("label", "idx") else tf.string)
         for k, v in rows.items()}), name="cb")
    got = list(ds.as_numpy_iterator())
    assert [g["label"] for g in got] == [e.label for e in examples[1:6]]
    assert [g["text_b"].decode() for g in got] == [e.text_b for e in examples[1:6]]
