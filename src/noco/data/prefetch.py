"""Feature prefetching: read the next batches' feature files while the current batch trains.

A training epoch knows its video order in advance, so a background thread can read (and
NaN-check, and copy into memory) the feature arrays a few batches ahead; the training loop then
takes them in the same order. Reading memory-mapped files and NumPy's checks release the GIL, so
the disk and the network overlap. The arrays are exactly what ``Dataset.features`` returns, so
training is bit-identical with or without prefetching; a read error is raised in the training
loop, at the video it concerns.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

import numpy as np


class Prefetcher:
    """``get(vid)`` returns ``load(vid)``, for ``ids`` taken in order: read ahead in a thread as an
    in-memory float32 copy, or with ``depth`` 0 (no thread) ``load(vid)`` itself, read on the spot.

    ``depth``: how many arrays may be read ahead.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, load: Callable[[str], np.ndarray], ids: Sequence[str], depth: int):
        self._load = load
        self._ids = list(ids)
        self._pos = 0
        self.depth = max(0, int(depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.depth and self._ids:
            self._queue: queue.Queue = queue.Queue(maxsize=self.depth)
            self._thread = threading.Thread(target=self._run, name="noco-prefetch", daemon=True)
            self._thread.start()

    def _read(self, vid: str) -> np.ndarray:
        return np.array(self._load(vid), dtype=np.float32, copy=True)

    def _run(self) -> None:
        for vid in self._ids:
            try:
                item = (vid, self._read(vid), None)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                item = (vid, None, e)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set() or item[2] is not None:
                return

    def get(self, vid: str) -> np.ndarray:
        if self._pos >= len(self._ids) or self._ids[self._pos] != vid:
            want = self._ids[self._pos] if self._pos < len(self._ids) else "nothing (order exhausted)"
            raise RuntimeError(f"prefetcher asked for {vid!r}, next in its order is {want!r}")
        self._pos += 1
        if self._thread is None:
            return self._load(vid)
        got, arr, err = self._queue.get()
        if err is not None:
            raise err
        assert got == vid
        return arr

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
            self._thread = None

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
