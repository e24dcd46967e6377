"""ActivityNet v1.2 as a user runs it: `noco run --preset anet12-cpu` on a small anet12-sim
subsample (real v1.2 annotations, simulated features), in a subprocess."""

import json
import subprocess
import sys

import pytest

from noco.pipeline import ANET_TIOUS, make_pipeline_config

# a 2-epoch WTAL model on 40 videos reaches confidence ~0.03: a low threshold keeps row a trainable
SMALL = ["--set", "wtal.epochs=2", "--set", "wtal.hidden_dim=32", "--set", "detector.epochs=1",
         "--set", "correction.cala_conf=0.01", "--set", "correction.baseline_conf=0.01",
         "--set", "detector.fixed_length=64", "--set", "detector.max_seq_len=64",
         "--set", "detector.embed_dim=32", "--set", "detector.head_dim=32", "--set", "detector.mlp_dim=48",
         "--set", "student.epochs=1"]


def _noco(*args):
    return subprocess.run([sys.executable, "-m", "noco", *args], capture_output=True, text=True, timeout=600)


def test_anet_presets_are_activitynet_shaped():
    for name in ("anet12", "anet12-cpu"):
        cfg = make_pipeline_config(name)
        assert cfg.tiou == ANET_TIOUS and cfg.data == "anet12-sim"
        assert cfg.detector.fixed_length == 192 and cfg.detector.input_downsample == 1
        assert cfg.wtal.loss_fg == 5.0 and cfg.wtal.nms_threshold == 0.9
        assert cfg.fusion["mode"] == "multiply"
    assert make_pipeline_config("anet12-cpu").synth == {"train_videos": 1000, "test_videos": 500}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("data") / "anet"
    r = _noco("synth", "--preset", "anet12-sim", "--out", str(d), "--train-videos", "40", "--test-videos", "20",
              "--dim", "16")
    assert r.returncode == 0, r.stderr
    return d


def test_run_anet_end_to_end_with_fusion(small, tmp_path):
    out = tmp_path / "W"
    r = _noco("run", "--preset", "anet12-cpu", "--data", str(small), "--out", str(out), "--ablation", "a",
              "--set", "detector.input_dim=16", *SMALL)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    m = report["rows"]["a"]
    assert m["tiou"] == pytest.approx(ANET_TIOUS) and set(m["averages"]) == {"0.5:0.95"}
    # the fused result is computed beside the plain one, from the WTAL model's video scores
    assert "fused" in m and len(m["fused"]["mAP"]) == 10
    assert (out / "seed0" / "wtal" / "test_scores.json").is_file()
    assert "x WTAL video scores" in r.stdout and "anet12-sim" in r.stdout and "SIMULATED" in r.stdout
    # detections are in seconds inside each video (fixed-length grid mapped back)
    preds = json.loads((out / "predictions.json").read_text())["results"]
    ann = json.loads((small / "annotations.json").read_text())["database"]
    assert preds
    for vid, dets in preds.items():
        dur = ann[vid]["duration"]
        assert all(0.0 <= d["segment"][0] <= d["segment"][1] <= dur + 1e-3 for d in dets), vid


def test_named_averages_need_their_exact_thresholds():
    from noco.pipeline import THUMOS_TIOUS, named_averages

    assert named_averages(ANET_TIOUS, [0.5] * 10) == {"0.5:0.95": 0.5}  # no "0.3:0.7" from 0.5..0.7
    got = named_averages(THUMOS_TIOUS, [0.1 * i for i in range(7)])
    assert got == pytest.approx({"0.1:0.5": 0.2, "0.3:0.7": 0.4, "0.1:0.7": 0.3})


def test_preset_data_is_generated_once_with_its_subsample(tmp_path):
    from noco.data.dataset import load_dataset
    from noco.pipeline import resolve_data

    opts = {"train_videos": 40, "test_videos": 20}
    d = resolve_data("anet12-sim", tmp_path, opts)
    assert d == tmp_path / "data" / "anet12-sim-test20-train40"
    ds = load_dataset(d)
    assert len(ds.subset("training")) == 40 and len(ds.subset("validation")) == 20
    stamp = (d / "dataset.json").stat().st_mtime_ns
    assert resolve_data("anet12-sim", tmp_path, opts) == d and (d / "dataset.json").stat().st_mtime_ns == stamp
