"""Development split: held-out training videos become the evaluation subset; no test video."""

import subprocess
import sys

import numpy as np
import pytest

from noco.data.dataset import load_dataset
from noco.data.devsplit import DEV_TEST, DEV_TRAIN, dev_split_ids, write_dev_split
from noco.errors import NocoError


def test_split_ids_partition_seeded_and_bounded():
    ids = [f"v{k:02d}" for k in range(10)]
    keep, held = dev_split_ids(ids[::-1], 0.3, seed=0)
    assert sorted(keep + held) == ids and not set(keep) & set(held) and len(held) == 3
    assert (keep, held) == dev_split_ids(ids, 0.3, seed=0)  # input order does not matter
    assert held != dev_split_ids(ids, 0.3, seed=1)[1]
    assert len(dev_split_ids(ids, 0.01, 0)[1]) == 1 and len(dev_split_ids(ids, 0.99, 0)[0]) == 1
    with pytest.raises(NocoError, match="fraction"):
        dev_split_ids(ids, 1.0, 0)
    with pytest.raises(NocoError, match="at least 2"):
        dev_split_ids(ids[:1], 0.5, 0)


def test_dev_dataset_holds_training_videos_only(tiny_root, tmp_path):
    src = load_dataset(tiny_root)
    out = write_dev_split(tiny_root, tmp_path / "dev", 0.25, seed=3)
    dev = load_dataset(out)
    train_ids = {v.id for v in src.subset(src.train_subset)}
    kept, held = {v.id for v in dev.subset(DEV_TRAIN)}, {v.id for v in dev.subset(DEV_TEST)}
    assert kept | held == train_ids and not kept & held and len(held) == round(0.25 * len(train_ids))
    assert not set(dev.videos) & {v.id for v in src.subset(src.test_subset)}
    assert dev.classes == src.classes and dev.feat_stride == src.feat_stride
    for vid in held:  # same instances, same class indices, the original feature files
        a, b = dev.videos[vid], src.videos[vid]
        np.testing.assert_array_equal(a.segments, b.segments)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.feature_file == b.feature_file
    with pytest.raises(NocoError, match="exists already"):
        write_dev_split(src, out, 0.25)


def test_cli_dev_split(tiny_root, tmp_path):
    dev = tmp_path / "dev"
    r = subprocess.run([sys.executable, "-m", "noco", "dataset", str(tiny_root), "--dev-split", "0.5",
                        "--dev-out", str(dev)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "'dev-test'" in r.stdout and load_dataset(dev).test_subset == DEV_TEST
    r = subprocess.run([sys.executable, "-m", "noco", "dataset", str(tiny_root), "--dev-split", "0.5"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "--dev-out" in r.stderr
