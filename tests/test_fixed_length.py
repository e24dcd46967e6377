"""ActivityNet-style fixed-length detector inputs (``DetectorConfig.fixed_length``): the feature
resize, the seconds <-> grid mapping shared by training labels and detections, make_sample's
crop on the resized steps, detect() on very short and very long videos, a few training steps."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from noco.data.dataset import expected_snippets, load_dataset
from noco.data.grid import grid_to_sec, sec_to_grid
from noco.detector.assign import assign_labels
from noco.detector.config import make_config
from noco.detector.infer import (decode, detect, detector_features, detector_grid, effective_grid, input_steps,
                                 predict_detector, resize_features, video_meta)
from noco.detector.model import TriDet
from noco.detector.train import StaticLabels, make_sample, train_detector
from noco.errors import NocoError
from noco.io import load_checkpoint
from noco.ops.intervals import soft_nms

pytestmark = pytest.mark.usefixtures("one_thread")

FPS, STRIDE, FRAMES, D = 25, 16, 16, 8
CLASSES = ["A", "B"]
# ActivityNet extremes: 2 s (3 snippets) and 290 s (453 snippets) at 25 fps / stride 16
VIDEOS = {
    "v_short": ("Validation", 2.0, [([0.3, 1.1], "A"), ([1.2, 1.9], "B")]),
    "v_long": ("Validation", 290.0, [([10.0, 40.0], "A"), ([100.0, 250.0], "B"), ([280.0, 289.5], "A")]),
    "v_mid": ("Validation", 60.0, [([5.0, 20.0], "B"), ([30.0, 55.0], "A")]),
    "v_mid2": ("Validation", 17.0, [([2.0, 9.0], "A")]),
    "t_short": ("Test", 2.5, [([0.5, 2.0], "B")]),
    "t_long": ("Test", 200.0, [([20.0, 120.0], "A")]),
}


@pytest.fixture(scope="module")
def anet(tmp_path_factory) -> object:
    root = tmp_path_factory.mktemp("anet")
    (root / "dataset.json").write_text(json.dumps({
        "fps": FPS, "feat_stride": STRIDE, "num_frames": FRAMES, "train_subset": "Validation",
        "test_subset": "Test", "classes": CLASSES}))
    db = {vid: {"subset": sub, "duration": dur,
                "annotations": [{"segment": seg, "label": lab} for seg, lab in ann]}
          for vid, (sub, dur, ann) in VIDEOS.items()}
    (root / "annotations.json").write_text(json.dumps({"database": db}))
    (root / "features").mkdir()
    rng = np.random.default_rng(0)
    for vid, (_, dur, _) in VIDEOS.items():
        t = expected_snippets(dur, FPS, STRIDE, FRAMES)
        np.save(root / "features" / f"{vid}.npy", rng.standard_normal((t, D)).astype(np.float32))
    return load_dataset(root)


def cfg_fixed(length=192, **kw):
    base = dict(input_dim=D, num_classes=2, embed_dim=16, head_dim=16, mlp_dim=16, fixed_length=length,
                max_seq_len=max(length, 32), input_noise=0.0, pre_nms_topk=300, max_segments=100)
    return make_config(None, {**base, **kw})


# ---------------------------------------------------------------------- config
def test_fixed_length_is_validated():
    assert make_config(None, {}).fixed_length == 0
    assert cfg_fixed(192).fixed_length == 192
    for bad in (100, -32):
        with pytest.raises(NocoError, match="fixed_length must be 0 .* multiple of the largest stride 32"):
            make_config(None, {"fixed_length": bad})
    with pytest.raises(NocoError, match="needs input_downsample 1, found 2"):
        make_config(None, {"fixed_length": 64, "input_downsample": 2})
    # 3 levels: the largest stride is 4, so 12 is fine
    assert make_config(None, {"fixed_length": 12, "num_levels": 3,
                              "regression_ranges": [[0, 4], [4, 8], [8, 1e4]]}).fixed_length == 12
    # a config written before the field existed loads with it off
    d = make_config(None, {}).to_dict()
    del d["fixed_length"]
    assert make_config(None, d).fixed_length == 0


# ---------------------------------------------------------------------- grid mapping
def test_grid_helper_hand_values_and_variable_length_unchanged():
    cfg = cfg_fixed(192)
    # 3 snippets of 16 frames every 16: the features cover frames [0, 48) -> 0.25 frames per step
    assert detector_grid(16, 16, 3, cfg) == (0.25, 0.25)
    # 453 snippets: [0, 452 * 16 + 16) = [0, 7248) frames -> 37.75 frames per step
    assert detector_grid(16, 16, 453, cfg) == (37.75, 37.75)
    # THUMOS-like 4/16 features: span (T - 1) * 4 + 16
    assert detector_grid(4, 16, 101, cfg) == pytest.approx((416 / 192, 416 / 192))
    # 1 s at 25 fps is frame 25: step (25 - 0.125) / 0.25 = 99.5; step edges -0.5 and L - 0.5 are the span's ends
    st, fr = detector_grid(16, 16, 3, cfg)
    assert sec_to_grid(1.0, FPS, st, fr) == pytest.approx(99.5)
    assert grid_to_sec(-0.5, FPS, st, fr) == pytest.approx(0.0)
    assert grid_to_sec(191.5, FPS, st, fr) == pytest.approx(48 / FPS)
    # fixed_length == 0: the same grid as before (input_downsample averaging)
    for factor in (1, 2, 4):
        c = make_config(None, {"input_downsample": factor})
        for t in (1, 57, 2000):
            assert detector_grid(4, 16, t, c) == effective_grid(4, 16, factor)
            x = torch.randn(t, 3)
            assert input_steps(t, c) == detector_features(x, c).shape[0] == math.ceil(t / factor)
            if factor == 1:
                assert detector_features(x, c) is x
    for t in (1, 3, 192, 453):
        assert input_steps(t, cfg) == detector_features(torch.randn(t, 3), cfg).shape[0] == 192


@pytest.mark.parametrize("num_snippets", [1, 3, 93, 453, 5000])
@pytest.mark.parametrize("feat_stride,num_frames", [(16, 16), (4, 16), (8, 24)])
def test_seconds_grid_seconds_round_trip_is_exact(num_snippets, feat_stride, num_frames):
    cfg = cfg_fixed(192)
    stride, frames = detector_grid(feat_stride, num_frames, num_snippets, cfg)
    span = (num_snippets - 1) * feat_stride + num_frames
    t = torch.rand(1000, generator=torch.Generator().manual_seed(num_snippets), dtype=torch.float64) * span / FPS
    g = sec_to_grid(t, FPS, stride, frames)
    # independent reference: step i is centred on second (i + 0.5) * span / (L * fps)
    assert torch.allclose(g, t * FPS * 192 / span - 0.5, rtol=0, atol=1e-9)
    assert torch.allclose(grid_to_sec(g, FPS, stride, frames), t, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- resize
@pytest.mark.parametrize("t", [1, 3, 50, 192, 453])
def test_resize_preserves_constant_and_linear_ramp(t):
    length = 192
    const = torch.full((t, 4), -2.5)
    assert torch.allclose(resize_features(const, length), torch.full((length, 4), -2.5), atol=1e-6)
    j = torch.arange(t, dtype=torch.float32)
    ramp = torch.stack([3.0 + 0.5 * j, -1.0 * j], dim=1)
    out = resize_features(ramp, length)
    assert out.shape == (length, 2)
    # align_corners=False: output step i samples the input at clamp((i + 0.5) * T / L - 0.5, 0, T - 1)
    u = ((torch.arange(length, dtype=torch.float64) + 0.5) * t / length - 0.5).clamp(0, t - 1)
    ref = torch.stack([3.0 + 0.5 * u, -u], dim=1).float()
    assert torch.allclose(out, ref, atol=1e-4)
    if t == length:
        assert torch.equal(out, ramp)
    if t > 1:  # interior of the ramp: exactly linear in the step index
        assert (out[1:, 0] - out[:-1, 0]).max() <= 0.5 * t / length + 1e-4


def test_resize_of_empty_features_is_a_clear_error():
    with pytest.raises(NocoError, match="no snippets to resize"):
        resize_features(torch.zeros(0, 4), 192)


# ---------------------------------------------------------------------- training samples
def test_oracle_ground_truth_survives_the_fixed_grid(anet):
    """Ground truth -> make_sample (whole video) -> assignment -> positive points' targets decoded
    by the same helper -> the original seconds, for a 2 s and a 290 s video."""
    cfg = cfg_fixed(192)
    gt = anet.ground_truth("Validation")
    model = TriDet(cfg)
    points = model.points(192)
    for vid in ("v_short", "v_long", "v_mid"):
        v = anet.videos[vid]
        x, segs, labels, w = make_sample(anet, v, gt[vid], cfg, None)
        raw = anet.features_tensor(vid)
        assert x.shape == (D, 192) and torch.equal(x, resize_features(raw, 192).T)
        assert torch.equal(labels, gt[vid].labels) and torch.equal(w, torch.ones(len(labels)))
        stride, frames = detector_grid(anet.feat_stride, anet.num_frames, v.num_snippets, cfg)
        span = (v.num_snippets - 1) * STRIDE + FRAMES
        ref = gt[vid].segments.double() * FPS * 192 / span - 0.5
        assert torch.allclose(segs.double(), ref, atol=1e-3)
        # every instance gets positives; each positive point's target gives back its instance
        cls, reg, pw = assign_labels(points, segs, labels, torch.ones(len(labels)), 2, cfg.center_sample_radius)
        pos = pw > 0
        p, s = points[pos, 0], points[pos, 3]
        dec = torch.stack((p - reg[pos, 0] * s, p + reg[pos, 1] * s), dim=1)
        secs = grid_to_sec(dec.double(), v.fps, stride, frames)
        err = (secs[:, None, :] - gt[vid].segments[None].double()).abs().amax(dim=2)   # [P, N]
        best = err.min(dim=1)
        assert (best.values <= 0.5 * stride / v.fps).all()      # within half a step (in fact ~1e-5 s)
        assert set(best.indices.tolist()) == set(range(len(labels)))
        assert (cls[pos].argmax(1) == labels[best.indices]).all()


def test_crop_applies_to_the_resized_steps(anet):
    cfg = cfg_fixed(192, crop_ratio=[0.9, 1.0])
    v = anet.videos["v_long"]
    ins = anet.ground_truth("Validation")["v_long"]
    full = resize_features(anet.features_tensor(v.id), 192).T
    _, whole, _, _ = make_sample(anet, v, ins, cfg, None)
    lengths = set()
    for k in range(8):
        x, segs, labels, _ = make_sample(anet, v, ins, cfg, torch.Generator().manual_seed(k))
        n = x.shape[1]
        lengths.add(n)
        assert round(0.9 * 192) <= n <= 192
        starts = [s for s in range(192 - n + 1) if torch.equal(x, full[:, s:s + n])]
        assert len(starts) == 1
        st = starts[0]
        # kept instances: clipped to the window [-0.5, n + 0.5] of the full grid, shifted by the start
        assert len(segs) >= 1 and (segs[:, 0] >= -0.5 - 1e-4).all() and (segs[:, 1] <= n + 0.5 + 1e-4).all()
        for s, c in zip(segs + st, labels):
            match = (whole[:, 0] <= s[0] + 1e-4) & (whole[:, 1] >= s[1] - 1e-4) & (ins.labels == c)
            assert match.any()
    assert len(lengths) > 1
    # a fixed length above max_seq_len: truncation windows of max_seq_len resized steps
    cfg = cfg_fixed(192, max_seq_len=64, crop_ratio=[])
    x, segs, _, _ = make_sample(anet, v, ins, cfg, torch.Generator().manual_seed(0))
    assert x.shape == (D, 64) and len(segs) >= 1


# ---------------------------------------------------------------------- inference
@pytest.mark.parametrize("duration", [2.0, 290.0])
def test_detect_maps_the_fixed_grid_back_to_the_whole_video(duration):
    cfg = cfg_fixed(32, init_conv_vars=0.1)
    torch.manual_seed(0)
    model = TriDet(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    t = expected_snippets(duration, FPS, STRIDE, FRAMES)
    feats = torch.randn(t, D, generator=torch.Generator().manual_seed(t))
    meta = {"fps": FPS, "duration": duration, "feat_stride": STRIDE, "num_frames": FRAMES}
    dets = detect(model, feats, meta)
    assert len(dets) > 10
    assert (dets.segments >= 0).all() and (dets.segments <= duration).all()
    assert (dets.segments[:, 1] >= dets.segments[:, 0]).all()
    centre = dets.segments.mean(1)
    # detections spread over the whole video, whatever its length (a wrong stride would squeeze them)
    assert centre.min() < 0.25 * duration and centre.max() > 0.75 * duration
    # reference: resize, forward, decode, Soft-NMS, explicit step -> seconds mapping
    x = torch.nn.functional.interpolate(feats.T[None], size=32, mode="linear", align_corners=False)
    with torch.no_grad():
        out = model(x, torch.ones(1, 32, dtype=torch.bool))
    segs, scores, labels = decode(out, cfg)
    segs, scores, labels = soft_nms(segs, scores, labels, sigma=cfg.nms_sigma, min_score=cfg.nms_min_score,
                                    max_num=cfg.max_segments, voting_thresh=cfg.voting_thresh or None)
    span = (t - 1) * STRIDE + FRAMES
    secs = ((segs.double() + 0.5) * span / 32 / FPS).clamp(0, duration)
    assert torch.equal(labels, dets.labels) and torch.allclose(scores, dets.scores)
    assert torch.allclose(secs, dets.segments.double(), atol=1e-4 * max(duration, 1.0))


# ---------------------------------------------------------------------- training
def test_a_few_training_steps_with_fixed_length(anet, tmp_path):
    cfg = cfg_fixed(32, epochs=2, warmup_epochs=1, batch_size=2, lr=1e-3, ema_decay=0.9)
    gt = anet.ground_truth("Validation")
    ckpt = train_detector(anet, StaticLabels(gt), cfg, tmp_path / "w", seed=0, log_every=0)
    ck = load_checkpoint(ckpt)
    assert ck["config"]["fixed_length"] == 32 and ck["step"] == 4
    assert all(math.isfinite(h["loss"]) for h in ck["history"])
    preds = predict_detector(ckpt, anet, "Test")
    assert set(preds) == {"t_short", "t_long"}
    for vid, p in preds.items():
        dur = anet.videos[vid].duration
        assert len(p) > 0 and (p.segments >= 0).all() and (p.segments <= dur).all()
    # the same model without fixed length sees other inputs: the setting reaches inference
    model = TriDet(cfg)
    model.load_state_dict(ck["ema"])
    v = anet.videos["t_long"]
    var = detect(model, anet.features_tensor(v.id), video_meta(anet, v), dataclasses.replace(cfg, fixed_length=0))
    assert not torch.equal(var.scores[:5], preds["t_long"].scores[:5])
