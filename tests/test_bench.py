"""`noco bench` smoke test at the tiny size (no timing assertions: only structure, hand-counted
FLOPs, consistency of derived numbers, and the WTAL path matching `noco wtal predict`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from noco import bench
from noco.cli import main
from noco.data.dataset import WeakVideo
from noco.errors import NocoError
from noco.wtal.config import make_config as wtal_config
from noco.wtal.model import WtalModel
from noco.wtal.train import CKPT_KIND, load_wtal, predict_wtal

TINY_ARGS = ["--size", "tiny", "--videos", "2", "--repeats", "2", "--eval-videos", "4", "--eval-preds", "30",
             "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "sub" / "bench.json"
    torch_threads = torch.get_num_threads()
    try:
        rc = main(["bench", *TINY_ARGS, "--json", str(out)])
    finally:
        torch.set_num_threads(torch_threads)
    assert rc == 0
    return json.loads(out.read_text())


def test_json_record(tiny_run, capsys):
    res = tiny_run
    m = res["machine"]
    for key in ("date", "cpu", "cpu_count", "torch", "threads", "device", "device_name"):
        assert key in m, key
    assert m["threads"] == 1 and m["torch"] == torch.__version__ and m["device"] == "cpu"
    assert res["args"]["size"] == "tiny" and res["args"]["videos"] == 2
    r = res["sizes"]["tiny"]
    assert r["num_videos"] == 2 and r["repeats"] == 2 and r["snippets"] == 128
    for name in ("student", "wtal"):
        x = r[name]
        assert len(x["repeat_seconds"]) == 2 and all(t > 0 for t in x["repeat_seconds"])
        # videos/s is the median over repeats of videos / seconds
        rates = sorted(2 / t for t in x["repeat_seconds"])
        assert x["videos_per_s"] == pytest.approx(sum(rates) / 2, rel=1e-3)
        assert x["gflops"] == pytest.approx(x["flops"] / 1e9) and x["gmacs"] == pytest.approx(x["flops"] / 2e9)
        assert sum(x["gflops_by_module"].values()) == pytest.approx(x["gflops"])
        assert len(x["train"]["repeat_seconds"]) == 2 and x["train"]["s_per_step"] > 0
        assert x["memory_infer"]["peak_rss_mib"] > 10
    assert r["speed_ratio"] == pytest.approx(r["student"]["videos_per_s"] / r["wtal"]["videos_per_s"])
    assert r["flops_ratio"] == pytest.approx(r["wtal"]["flops"] / r["student"]["flops"])
    assert r["student"]["train"]["batch_size"] == 2 and r["wtal"]["train"]["seq_len"] == 64
    e = res["eval"]
    assert e["videos"] == 4 and e["predictions"] == 120 and e["seconds"] > 0 and 0 <= e["average_mAP"] <= 1


def test_flops_hand_counted(tiny_run):
    r = bench.SIZES["tiny"]
    t, d = r.snippets, r.feat_dim
    w = tiny_run["sizes"]["tiny"]["wtal"]
    h, k1 = 16, r.num_classes + 1
    n = 64  # uniform test sampling to num_segments
    assert w["input_shape"] == [1, n, d]
    # Conv1d(D->H, k3) + Conv1d(H->2, k1) + Linear(H->K+1), 2 FLOPs per multiply-add
    assert w["gflops_by_module"]["embedding"] * 1e9 == pytest.approx(2 * d * h * 3 * n)
    assert w["gflops_by_module"]["attention"] * 1e9 == pytest.approx(2 * h * 2 * n)
    assert w["flops"] == 2 * n * (d * h * 3 + h * 2 + h * k1)
    assert w["gflops_full_video"] * 1e9 == pytest.approx(2 * t * (d * h * 3 + h * 2 + h * k1))
    s = tiny_run["sizes"]["tiny"]["student"]
    assert s["input_shape"] == [1, d, 128]
    e = 16  # embed_dim: two k3 convolutions without bias at full length
    assert s["gflops_by_module"]["embed"] * 1e9 == pytest.approx(2 * 128 * 3 * (d * e + e * e))
    # parameter counts are the models' own
    from noco.detector.config import make_config as det_config
    from noco.detector.model import build_model

    dcfg = det_config("cpu", {**r.detector_overrides, "input_dim": d, "num_classes": r.num_classes})
    assert s["parameters"] == sum(p.numel() for p in build_model(dcfg).parameters())
    assert w["parameters"] == d * h * 3 + h + h * 2 + 2 + h * k1 + k1


def test_table_printed(tiny_run, capsys):
    table = bench.format_table(tiny_run)
    for label in ("inference videos/s", "forward GFLOPs", "forward GMACs", "train s/step", "parameters (M)",
                  "tiny: student", "tiny: WTAL", "noco eval: 4 videos x 30 predictions"):
        assert label in table, label
    r = tiny_run["sizes"]["tiny"]
    assert f"{r['student']['videos_per_s']:.2f}" in table
    assert f"student/WTAL speed {r['speed_ratio']:.2f}x" in table


def test_make_videos_deterministic():
    a = bench.make_videos(2, 40, 8, seed=3)
    b = bench.make_videos(2, 40, 8, seed=3)
    c = bench.make_videos(2, 40, 8, seed=4)
    assert [tuple(x.shape) for x in a] == [(40, 8), (40, 8)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1]) and all((x > 0).all() for x in a)
    # temporally correlated: neighbouring snippets are closer than distant ones
    x = torch.cat(bench.make_videos(4, 400, 16, seed=0))
    near = (x[1:] - x[:-1]).abs().mean()
    far = (x[40:] - x[:-40]).abs().mean()
    assert near < 0.6 * far


class _FakeDataset:
    """What `predict_wtal` reads of a dataset, over in-memory random features."""

    def __init__(self, feats: dict[str, np.ndarray], classes: list[str]):
        self.feats, self.classes = feats, classes
        self.fps, self.feat_stride, self.num_frames = bench.FPS, bench.FEAT_STRIDE, bench.NUM_FRAMES
        self.feat_dim = next(iter(feats.values())).shape[1]
        self.test_subset = self.train_subset = "Test"

    def settings(self):
        return {"fps": float(self.fps), "feat_stride": self.feat_stride, "num_frames": self.num_frames,
                "feat_dim": self.feat_dim, "classes": list(self.classes)}

    def weak(self, subset):
        return [WeakVideo(vid, subset, bench.video_meta(len(f))["duration"], self.fps, len(f), Path(vid), ())
                for vid, f in sorted(self.feats.items())]

    def features(self, vid):
        return self.feats[vid]


@pytest.mark.parametrize("overrides", [{}, {"class_threshold": 0.0, "test_sampling": "full", "upsample": 4}])
def test_wtal_path_matches_wtal_predict(overrides):
    torch.manual_seed(0)
    d, k = 12, 4
    cfg = wtal_config("cpu", {"hidden_dim": 8, "num_segments": 48})
    model = WtalModel(d, k, cfg)
    feats = {f"v{i}": bench.make_videos(1, n, d, seed=i)[0].numpy() for i, n in enumerate([30, 100, 77])}
    ds = _FakeDataset(feats, [f"c{i}" for i in range(k)])
    ck = {"kind": CKPT_KIND, "config": cfg.to_dict(), "dataset": ds.settings(), "feat_dim": d, "num_classes": k,
          "model": model.state_dict()}
    ref = predict_wtal(ck, ds, overrides=overrides)
    m, c, _ = load_wtal(ck, ds, overrides=overrides)
    total = 0
    for vid, f in feats.items():
        got, pool = bench.wtal_predict_video(m, c, torch.from_numpy(f), bench.video_meta(len(f)), "cpu")
        r = ref[vid]
        assert len(got) == len(r) and pool >= len(got)
        assert torch.equal(got.segments, r.segments) and torch.equal(got.labels, r.labels)
        assert torch.equal(got.scores, r.scores)
        total += len(got)
    assert total > 0  # a case that cannot pass vacuously


def test_bad_arguments(capsys, tmp_path):
    assert main(["bench", "--size", "tiny", "--videos", "0"]) == 2
    assert "--videos must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--size", "tiny", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--size", "tiny", "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "--size", "tiny", "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    with pytest.raises(NocoError, match="unknown bench size huge"):
        bench.run_bench(["huge"])
    assert not math.isnan(bench.peak_rss_mib())
