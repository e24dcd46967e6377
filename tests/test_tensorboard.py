"""`--tensorboard`: scalars of the training stages, readable by TensorBoard's own reader."""

import subprocess
import sys

import pytest

pytest.importorskip("tensorboard")  # installed by the test extra; optional for users


def _noco(*args):
    return subprocess.run([sys.executable, "-m", "noco", *args], capture_output=True, text=True, timeout=600)


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_detector_and_wtal_scalars(tmp_path):
    data = tmp_path / "tiny"
    assert _noco("synth", "--preset", "tiny", "--out", str(data)).returncode == 0
    r = _noco("wtal", "train", "--data", str(data), "--out", str(tmp_path / "w"), "--epochs", "2",
              "--set", "hidden_dim=16", "--tensorboard", str(tmp_path / "tb_w"), "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    w = _scalars(tmp_path / "tb_w")
    assert [s for s, _ in w["wtal/train_loss"]] == [1, 2]
    r = _noco("detector", "train", "--data", str(data), "--out", str(tmp_path / "d"), "--epochs", "2",
              "--set", "embed_dim=16", "--set", "head_dim=16", "--set", "mlp_dim=16", "--set", "input_dim=16",
              "--tensorboard", str(tmp_path / "tb_d"), "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    d = _scalars(tmp_path / "tb_d")
    steps = [s for s, _ in d["train/loss"]]
    assert steps == sorted(steps) and steps[0] == 1 and len(steps) == steps[-1]  # one point per step
    assert len(d["epoch/loss"]) == 2
    assert all(v > 0 for _, v in d["train/lr"])
