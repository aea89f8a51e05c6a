"""Batches made ahead on a background thread: the same sequence, errors where they happened,
and a thread that stops when the loop ends, normally or not."""

from __future__ import annotations

import threading

import jax
import numpy as np
import pytest

from prompt_jax.training import loop
from prompt_jax.training.prefetch import THREAD_NAME, Prefetcher, prefetch
from tests.test_loop import _config, _job


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_prefetched_items_are_the_source_in_order():
    for size in (1, 2, 5):
        with Prefetcher(iter(range(50)), size) as items:
            assert list(items) == list(range(50))
        assert next(items, None) is None  # exhausted stays exhausted
    assert prefetch(iter(range(3)), 0).__class__ is not Prefetcher  # 0: the source itself
    with pytest.raises(ValueError, match="at least 1"):
        Prefetcher(iter(()), 0)


def test_an_error_of_the_source_is_raised_at_its_place():
    def source():
        yield 1
        yield 2
        raise OSError("file vanished")

    items = Prefetcher(source(), 4)
    assert next(items) == 1 and next(items) == 2
    with pytest.raises(OSError, match="file vanished"):
        next(items)
    items.close()
    assert not items.alive


def test_closing_early_stops_the_thread_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    items = Prefetcher(endless(), 2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert not items.alive and closed.is_set()


def _final(result):
    return jax.tree.map(np.asarray, (result.state.trainable, result.state.opt_state,
                                     result.state.rng))


def test_the_loop_trains_the_same_with_and_without_prefetching(tmp_path):
    seen = {}

    def recorded(batches, key):
        def batches_from(start):
            for b in batches(start):
                seen.setdefault(key, []).append(b["inputs"].copy())
                yield b
        return batches_from

    results = {}
    for size in (0, 3):
        params, step, state, batches = _job()
        results[size] = loop.run(state, params, step, recorded(batches, size),
                                 _config(6, prefetch=size), tmp_path / str(size))
        assert len(results[size].step_seconds) == 6
    jax.tree.map(np.testing.assert_array_equal, _final(results[0]), _final(results[3]))
    assert results[0].history == results[3].history
    # Six consumed; made ahead at most: the queue (3), the one waiting for room, and one more
    # begun while the queue was emptied on closing.
    assert 6 <= len(seen[3]) <= 6 + 3 + 2
    for a, b in zip(seen[0], seen[3], strict=False):
        np.testing.assert_array_equal(a, b)
    assert not _threads()


def test_a_failing_loop_stops_the_prefetch_thread(tmp_path):
    params, step, state, batches = _job()

    def poisoned(start):  # a NaN input at step 3 stops the loop with FloatingPointError
        for i, b in enumerate(batches(start)):
            yield {**b, "weight": b["weight"] * np.nan} if i == 2 else b

    with pytest.raises(FloatingPointError, match="step 3"):
        loop.run(state, params, step, poisoned, _config(8, prefetch=2), tmp_path / "nan")
    assert not _threads()

    params, step, state, batches = _job()

    def failing_step(state, frozen, batch):
        if int(state.step) == 1:
            raise RuntimeError("device lost")
        return step(state, frozen, batch)

    with pytest.raises(RuntimeError, match="device lost"):
        loop.run(state, params, failing_step, batches, _config(8, prefetch=2),
                 tmp_path / "err")
    assert not _threads()
