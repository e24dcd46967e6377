"""The feature prefetcher: same arrays, same order, errors raised where the video is used."""

import threading
import time

import numpy as np
import pytest

from noco.data.prefetch import Prefetcher
from noco.errors import DataError


def _load(vid):
    return np.full((3, 2), int(vid[1:]), np.float64)


@pytest.mark.parametrize("depth", [0, 1, 4])
def test_same_arrays_in_order_as_float32_copies(depth):
    ids = [f"v{k}" for k in range(7)]
    with Prefetcher(_load, ids, depth) as pf:
        for vid in ids:
            arr = pf.get(vid)
            if depth:  # read ahead: an in-memory float32 copy
                assert arr.dtype == np.float32 and arr.flags.writeable
            np.testing.assert_array_equal(arr, _load(vid))
    # asking out of order is a programming error, said plainly
    with Prefetcher(_load, ids, depth) as pf, pytest.raises(RuntimeError, match="next in its order is 'v0'"):
        pf.get("v1")


def test_a_read_error_is_raised_at_its_video():
    def load(vid):
        if vid == "v2":
            raise DataError(f"features/{vid}.npy: video {vid}: cannot read features")
        return _load(vid)

    with Prefetcher(load, ["v0", "v1", "v2", "v3"], 3) as pf:
        time.sleep(0.2)  # the thread has already met the error; v0 and v1 still come first
        pf.get("v0")
        pf.get("v1")
        with pytest.raises(DataError, match="video v2"):
            pf.get("v2")


def test_close_stops_a_producer_blocked_on_a_full_queue():
    before = threading.active_count()
    pf = Prefetcher(_load, [f"v{k}" for k in range(100)], 2)
    pf.get("v0")
    time.sleep(0.1)
    pf.close()
    assert threading.active_count() == before
