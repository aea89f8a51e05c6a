"""Batches made on a background thread while the step runs.

The input pipeline (seqio/TensorFlow, packing, the transfer of a batch to the devices) is host
work that the training loop would otherwise do between two steps, with the cores idle for
XLA. A `Prefetcher` runs the batch iterator on one thread, `size` batches ahead: the loop finds
the next batch ready when a step ends. The order is the iterator's own (one producer), so a
run yields exactly the batches it would without prefetching.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

THREAD_NAME = "prompt_jax-prefetch"
_END = object()  # the iterator is exhausted


class _Failed:
    """The producer's exception, raised in the consumer where the batch would have come."""

    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Iterates `source` on a background thread, up to `size` items ahead.

    Use it as an iterator and close it when done (or as a context manager): closing stops the
    thread, drops what was made ahead, and closes `source` (a generator's `finally` runs). An
    exception raised by `source` is raised by `next()` at its place in the sequence.

    Args:
      source: any iterator (e.g. a generator of batches).
      size: how many items may wait made ahead (at least 1).

    Raises:
      ValueError: size below 1.
    """

    def __init__(self, source: Iterator[Any], size: int = 2):
        if size < 1:
            raise ValueError(f"prefetch size must be at least 1, got {size}")
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Hands `item` to the consumer; False once closed (waits while the queue is full)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Failed(error))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failed):
            self._done = True
            raise item.error
        return item

    def close(self, timeout: float = 30.0) -> None:
        """Stops the thread (waiting up to `timeout` seconds for the item it is making) and
        closes the source."""
        self._done = True
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)
        close = getattr(self._source, "close", None)
        if close is not None and not self._thread.is_alive():
            close()

    @property
    def alive(self) -> bool:
        """Whether the background thread still runs."""
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prefetch(source: Iterator[Any], size: int) -> Iterator[Any]:
    """`source` made `size` items ahead on a background thread (`Prefetcher`), or `source`
    itself when `size` is 0."""
    if size < 0:
        raise ValueError(f"prefetch size must be 0 (off) or more, got {size}")
    return Prefetcher(source, size) if size else source
