"""A standard-layout folder without dataset.json (one ActivityNet-style JSON + one .npy per video)."""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from noco.data.dataset import load_dataset
from noco.errors import DataError


def _standard_copy(tiny_root, dst):
    """tiny in ActionFormer's THUMOS14 layout: annotations/thumos14.json + i3d_features/*.npy."""
    (dst / "annotations").mkdir(parents=True)
    shutil.copy(tiny_root / "annotations.json", dst / "annotations" / "thumos14.json")
    shutil.copytree(tiny_root / "features", dst / "i3d_features")
    return dst


def test_thumos_layout_is_inferred_exactly(tiny_root, tmp_path):
    ref = load_dataset(tiny_root)
    ds = load_dataset(_standard_copy(tiny_root, tmp_path / "std"))
    assert ds.description is None and ref.description is not None
    assert (ds.fps, ds.feat_stride, ds.num_frames) == (ref.fps, ref.feat_stride, ref.num_frames) == (30, 4, 16)
    assert (ds.train_subset, ds.test_subset) == ("Validation", "Test")
    assert ds.feat_dim == ref.feat_dim
    # no class list to fix the order: the classes present, by label_id (tiny keeps 6 of THUMOS's 20)
    assert set(ds.classes) == {ref.classes[c] for v in ref.videos.values() for c in v.labels.tolist()}
    assert sorted(ds.videos) == sorted(ref.videos)
    for vid, v in ref.videos.items():
        w = ds.videos[vid]
        assert (w.num_snippets, w.duration, w.fps) == (v.num_snippets, v.duration, v.fps)
        np.testing.assert_array_equal(w.segments, v.segments)
        assert [ds.classes[c] for c in w.labels] == [ref.classes[c] for c in v.labels]
        np.testing.assert_array_equal(ds.features(vid), ref.features(vid))
    assert "layout inferred" in ds.summary()


def _anet_like(root, durations, prefix="v_", stride=16, fps=25, fixed_length=None):
    """An ActivityNet-style folder: no per-video fps, subsets training/validation, v_<id>.npy files."""
    db = {}
    (root / "features").mkdir(parents=True)
    for k, dur in enumerate(durations):
        vid = f"vid{k:03d}"
        db[vid] = {"subset": "training" if k % 3 else "validation", "duration": dur,
                   "annotations": [{"segment": [0.2 * dur, 0.6 * dur], "label": f"c{k % 2}"}]}
        t = fixed_length or int(np.floor((dur * fps - 16) / stride)) + 1
        np.save(root / "features" / f"{prefix}{vid}.npy", np.full((t, 8), k, np.float32))
    (root / "anet.json").write_text(json.dumps({"version": "1.2", "database": db}))
    return root


def test_activitynet_layout_prefix_fps_and_measured_stride(tmp_path):
    durs = [31.0, 57.5, 120.2, 88.8, 45.0, 210.0, 66.6, 150.0, 99.9]
    ds = load_dataset(_anet_like(tmp_path / "a", durs))
    assert (ds.fps, ds.feat_stride, ds.num_frames) == (25, 16, 16)
    assert (ds.train_subset, ds.test_subset) == ("training", "validation")
    assert ds.feature_prefix == "v_" and ds.describe()["feature_prefix"] == "v_"
    assert ds.features("vid004")[0, 0] == 4  # the v_-prefixed file of that video
    # another stride is measured, not assumed
    ds8 = load_dataset(_anet_like(tmp_path / "b", durs, prefix="", stride=8))
    assert ds8.feat_stride == 8 and ds8.feature_prefix == ""


def test_undeterminable_layouts_fail_with_a_clear_error(tmp_path, tiny_root):
    durs = [31.0, 57.5, 120.2, 88.8, 45.0, 210.0, 66.6, 150.0, 99.9]
    # features resized to one fixed length: no stride fits the durations
    root = _anet_like(tmp_path / "fixed", durs, fixed_length=100)
    with pytest.raises(DataError, match="cannot measure the feature stride.*dataset.json"):
        load_dataset(root)
    # two annotation files
    root = _standard_copy(tiny_root, tmp_path / "two")
    shutil.copy(root / "annotations" / "thumos14.json", root / "other.json")
    with pytest.raises(DataError, match=r"several annotation files.*other\.json"):
        load_dataset(root)
    # unknown subset names
    root = tmp_path / "subsets"
    root.mkdir()
    (root / "a.json").write_text(json.dumps({"database": {"x": {"subset": "foo", "duration": 3.0,
                                                                "annotations": []}}}))
    with pytest.raises(DataError, match=r"subset names \['foo'\]"):
        load_dataset(root)
    # nothing at all
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no ActivityNet-style annotation file"):
        load_dataset(tmp_path / "empty")


def test_write_description_round_trip(tiny_root, tmp_path):
    root = _standard_copy(tiny_root, tmp_path / "std")
    cmd = [sys.executable, "-m", "noco", "dataset", str(root), "--write-description"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    desc = json.loads((root / "dataset.json").read_text())
    assert desc["annotations"] == "annotations/thumos14.json" and desc["features"] == "i3d_features"
    ds = load_dataset(root)
    assert ds.description == root / "dataset.json" and ds.feat_stride == 4
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # never overwrites
    assert r.returncode == 2 and "exists already" in r.stderr and "Traceback" not in r.stderr


def test_run_warns_when_the_preset_does_not_fit_the_data(tmp_path, caplog):
    from noco.commands.run import _warn_protocol
    from noco.pipeline import make_pipeline_config

    ds = load_dataset(_anet_like(tmp_path / "a", [31.0, 57.5, 120.2, 88.8, 45.0, 210.0]))
    with caplog.at_level("WARNING", logger="noco"):
        _warn_protocol(ds, make_pipeline_config("cpu"), "cpu")
    assert "--preset anet12" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="noco"):
        _warn_protocol(ds, make_pipeline_config("anet12-cpu"), "anet12-cpu")
        # a run's saved W/config.yaml names the data folder, not the preset: the tIoU set decides
        saved = dataclasses.replace(make_pipeline_config("anet12-cpu"), data=str(tmp_path / "a"))
        _warn_protocol(ds, saved, "W/config.yaml")
    assert caplog.text == ""


def test_noco_run_on_a_standard_layout_folder(tiny_root, tmp_path):
    """The one-command pipeline on a folder with no dataset.json: it runs, and says what it inferred."""
    root = _standard_copy(tiny_root, tmp_path / "std")
    out = tmp_path / "W"
    r = subprocess.run([sys.executable, "-m", "noco", "run", "--data", str(root), "--out", str(out),
                        "--set", "wtal.epochs=3", "--set", "detector.epochs=1", "--set", "student.epochs=1",
                        "--set", "correction.cala_conf=0.1", "--set", "correction.baseline_conf=0.1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no dataset.json; inferred" in r.stderr and "feat_stride 4" in r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"]["source"].startswith("inferred") and cfg["dataset"]["features"] == "i3d_features"
    assert "layout was inferred" in (out / "report.md").read_text()
    assert json.loads((out / "predictions.json").read_text())["results"]
    assert not (root / "dataset.json").exists()  # the user's folder is never written to
