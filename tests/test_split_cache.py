"""Tokenized splits on disk: the batches read back equal those tokenized afresh, a second run
tokenizes nothing, and a changed data file or an interrupted write is never read as a cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prompt_jax.tasks import batches, define_file_task, encoding, split_cache
from tests.task_tokenizers import llama_tokenizer


def _take(task, split, n=None, **kwargs):
    it = batches(task, split, llama_tokenizer(), "causal", 8, max_length=64, **kwargs)
    return [next(it) for _ in range(n)] if n else list(it)


def _equal(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPT_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(split_cache.ENV, "1")
    return tmp_path / "cache" / "splits"


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*") if not p.name.startswith("."))


def _refuse_tokenizing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tokenized although the split is on disk")

    monkeypatch.setattr(encoding, "encode_inputs_batch", refuse)


def test_cached_batches_equal_fresh_ones_and_a_second_run_tokenizes_nothing(cache, monkeypatch):
    settings = [("rotten_tomatoes", "train", 5, dict(seed=3, shuffle=True, repeat=True)),
                ("rte", "validation", None, dict(shuffle=False, limit=20))]
    monkeypatch.setenv(split_cache.ENV, "0")
    fresh = [_take(t, s, n, **kw) for t, s, n, kw in settings]
    assert not cache.exists()
    monkeypatch.setenv(split_cache.ENV, "1")
    stored = [_take(t, s, n, **kw) for t, s, n, kw in settings]
    assert len(_entries(cache)) == 2 and all((e / "complete").exists() for e in _entries(cache))
    _refuse_tokenizing(monkeypatch)
    again = [_take(t, s, n, **kw) for t, s, n, kw in settings]
    for a, b, c in zip(fresh, stored, again, strict=True):
        assert _equal(a, b) and _equal(a, c)
    # another sample of rows is another entry, not the stored one
    with pytest.raises(Exception, match="tokenized although"):  # raised within tf.data
        _take("rte", "validation", shuffle=False, limit=21)


def test_a_changed_data_file_is_tokenized_again(cache, tmp_path, monkeypatch):
    from prompt_jax.tasks import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the task goes after
    path = tmp_path / "reviews.jsonl"

    def write(word):
        rows = [{"review": f"a {word} film {i}", "stars": "pos" if i % 2 else "neg"}
                for i in range(40)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        define_file_task("cached_reviews", path, text_fields=["review"], label_field="stars",
                         template="Review: {review}\nSentiment:")

    write("great")
    first = _take("cached_reviews", "train", shuffle=False)
    write("dreadful")  # same rows and labels, other words
    second = _take("cached_reviews", "train", shuffle=False)
    assert len(_entries(cache)) == 2
    assert not np.array_equal(first[0]["inputs"], second[0]["inputs"])
    np.testing.assert_array_equal(first[0]["label"], second[0]["label"])


def test_a_damaged_entry_is_made_again_and_the_switch_turns_the_cache_off(cache, monkeypatch):
    fresh = _take("rte", "validation", shuffle=False, limit=16)
    [entry] = _entries(cache)
    (entry / "complete").unlink()  # an entry is renamed into place whole: this one is damaged
    for data in entry.rglob("*"):
        if data.is_file():
            data.write_bytes(b"")
    assert _equal(_take("rte", "validation", shuffle=False, limit=16), fresh)
    assert (entry / "complete").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no staging left
    monkeypatch.setenv(split_cache.DIR_ENV, str(cache.parent / "own"))
    assert split_cache.cache_root() == cache.parent / "own"
    for off in ("0", "false", "off"):
        monkeypatch.setenv(split_cache.ENV, off)
        assert not split_cache.enabled()
    monkeypatch.setenv(split_cache.ENV, "0")
    _refuse_tokenizing(monkeypatch)  # off: every call tokenizes, the stored entry is not read
    with pytest.raises(Exception, match="tokenized although"):  # raised within tf.data
        _take("rte", "validation", shuffle=False, limit=16)
