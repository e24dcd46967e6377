"""Stage 1: the WTAL base model, its training (weak labels only) and its proposals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from noco.data.dataset import WeakVideo, load_dataset
from noco.errors import NocoError
from noco.io import load_checkpoint
from noco.labels.instances import Instances, read_instances, write_instances
from noco.wtal.config import make_config
from noco.wtal.model import WtalModel, masked_topk_mean, multi_hot, wtal_losses
from noco.wtal.proposals import (
    VideoMeta,
    find_runs,
    nms_detections,
    oic_scores,
    score_to_confidence,
    select_classes,
    upsample,
    video_proposals,
)
from noco.wtal.train import (
    filter_baseline,
    predict_wtal,
    propose_wtal,
    sample_indices,
    train_wtal,
    video_map,
)

FPS, STRIDE, NF = 30.0, 4, 16


def sec(g):
    return (g * STRIDE + NF / 2) / FPS


# ------------------------------------------------------------------------------- fake datasets
class FakeWeakDataset:
    """Only what weakly-supervised training may use; anything else raises."""

    def __init__(self, n=24, k=6, d=16, seed=0, test=6):
        g = np.random.default_rng(seed)
        self.classes = [f"class{i}" for i in range(k)]
        self.num_classes, self.feat_dim = k, d
        self.fps, self.feat_stride, self.num_frames = FPS, STRIDE, NF
        self.train_subset, self.test_subset = "train", "test"
        proto = (g.normal(size=(k + 1, d)) * 2).astype(np.float32)
        self._feats, self._weak, self.truth = {}, {"train": [], "test": []}, {}
        for i in range(n + test):
            sub = "train" if i < n else "test"
            t = int(g.integers(50, 110))
            c = i % k
            x = proto[k] + g.normal(size=(t, d)).astype(np.float32)
            ln = int(g.integers(8, 16))
            a = int(g.integers(0, t - ln))
            x[a:a + ln] = proto[c] + g.normal(size=(ln, d))
            vid = f"v{i:03d}"
            self._feats[vid] = x.astype(np.float32)
            self.truth[vid] = (c, a, a + ln)
            dur = sec(t - 0.5)
            self._weak[sub].append(WeakVideo(vid, sub, dur, FPS, t, Path(f"{vid}.npy"), (c,)))
        self.calls = []

    def weak(self, subset):
        self.calls.append(("weak", subset))
        return list(self._weak[subset])

    def features(self, vid):
        return self._feats[vid]

    def settings(self):
        return {"fps": FPS, "feat_stride": STRIDE, "num_frames": NF, "feat_dim": self.feat_dim,
                "classes": list(self.classes)}

    def __getattr__(self, name):  # ground_truth, subset, videos, ...: never reachable in training
        raise AssertionError(f"weakly-supervised code touched dataset.{name}")


TINY = dict(hidden_dim=32, num_segments=48, batch_size=8, epochs=3, lr=1e-3)


# ------------------------------------------------------------------------------- model / losses
def test_masked_topk_mean_by_hand():
    x = torch.tensor([[1.0, 5.0, 3.0, 2.0, 100.0, 100.0, 100.0, 100.0]]).reshape(1, 8, 1)
    valid = torch.tensor([[True, True, True, True, False, False, False, False]])
    # valid length 4: ratio 0.5 -> k 2 -> mean(5, 3); ratio 0.1 -> k 1 -> 5; padding never chosen
    assert masked_topk_mean(x, valid, 0.5).item() == pytest.approx(4.0)
    assert masked_topk_mean(x, valid, 0.1).item() == pytest.approx(5.0)
    # no mask: length 8, ratio 1/8 -> k 1 -> 100 ; ratio 3/8 -> mean of three 100s
    assert masked_topk_mean(x, None, 1 / 8).item() == pytest.approx(100.0)
    two = torch.cat([x, x.flip(1)], 0)
    v2 = torch.cat([valid, torch.ones(1, 8, dtype=torch.bool)], 0)
    out = masked_topk_mean(two, v2, 0.25)  # k = 1 and 2
    assert out.flatten().tolist() == pytest.approx([5.0, 100.0])


def test_losses_by_hand():
    cfg = make_config("cpu", {})
    fg = torch.tensor([[1.0, 0.0, -1.0]])  # K = 2 classes + background
    bg = torch.tensor([[0.0, 2.0, 1.0]])
    y = torch.tensor([[1.0, 1.0]])
    out = {"fg_logits": fg, "bg_logits": bg}
    ls = wtal_losses(out, y, cfg)
    lf = torch.log_softmax(fg, -1)[0]
    lb = torch.log_softmax(bg, -1)[0]
    assert ls["fg"].item() == pytest.approx(-(0.5 * lf[0] + 0.5 * lf[1]).item(), rel=1e-6)
    assert ls["bg"].item() == pytest.approx(-lb[2].item(), rel=1e-6)
    assert ls["abg"].item() == pytest.approx(-(0.5 * lb[0] + 0.5 * lb[1]).item(), rel=1e-6)
    total = 1.0 * ls["fg"] + 0.5 * ls["bg"] + 0.5 * ls["abg"]
    assert ls["total"].item() == pytest.approx(total.item(), rel=1e-6)


def test_model_padding_does_not_change_valid_outputs():
    torch.manual_seed(0)
    cfg = make_config("cpu", {"hidden_dim": 16})
    m = WtalModel(6, 3, cfg).eval()
    x = torch.randn(1, 20, 6)
    padded = torch.cat([x, torch.randn(1, 12, 6) * 50], 1)
    valid = torch.zeros(1, 32, dtype=torch.bool)
    valid[0, :20] = True
    a, b = m(x), m(padded, valid)
    assert torch.allclose(a["fg_logits"], b["fg_logits"], atol=1e-5)
    assert torch.allclose(a["bg_logits"], b["bg_logits"], atol=1e-5)
    assert torch.allclose(a["cas"], b["cas"][:, :20], atol=1e-5)
    assert torch.allclose(a["fg_score"].sum(-1), torch.ones(1))


def test_losses_finite_and_decreasing():
    torch.manual_seed(0)
    ds = FakeWeakDataset(n=16)
    cfg = make_config("cpu", {**TINY, "snippet_dropout": 0.0, "feature_dropout": 0.0})
    m = WtalModel(ds.feat_dim, ds.num_classes, cfg)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    vids = ds.weak("train")
    x = torch.stack([torch.from_numpy(ds.features(v.id)[:40]) for v in vids])
    y = multi_hot([v.class_ids for v in vids], ds.num_classes)
    hist = []
    for _ in range(15):
        ls = wtal_losses(m(x), y, cfg)
        assert all(torch.isfinite(v) for v in ls.values())
        opt.zero_grad()
        ls["total"].backward()
        opt.step()
        hist.append(ls["total"].item())
    assert hist[-1] < 0.8 * hist[0]
    assert sum(b < a for a, b in zip(hist, hist[1:])) >= 12


# ------------------------------------------------------------------------------- proposals
def test_find_runs_by_hand():
    m = torch.tensor([[0, 1, 1, 0, 1, 0, 1, 1, 1],
                      [1, 1, 1, 1, 1, 1, 1, 1, 1],
                      [0, 0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    row, s, e = find_runs(m, min_points=1)
    assert list(zip(row.tolist(), s.tolist(), e.tolist())) == [(0, 1, 3), (0, 4, 5), (0, 6, 9), (1, 0, 9)]
    row, s, e = find_runs(m, min_points=2)
    assert list(zip(row.tolist(), s.tolist(), e.tolist())) == [(0, 1, 3), (0, 6, 9), (1, 0, 9)]


def _oic_brute(seq, r, s, e, ratio):
    x = seq[r].tolist()
    n = e - s
    f = math.ceil(n * ratio - 1e-9)
    outer = x[max(0, s - f):s] + x[e:min(len(x), e + f)]
    return sum(x[s:e]) / n - (sum(outer) / len(outer) if outer else 0.0)


def test_oic_matches_brute_force_and_hand_case():
    # hand case: inside [3, 4, 5] of length 5 -> flank floor(0.2*5) = 1 -> outer (0.1 + 0.3) / 2
    seq = torch.tensor([[0.0, 0.0, 0.1, 0.8, 0.9, 1.0, 0.7, 0.6, 0.3, 0.0]])
    got = oic_scores(seq, torch.tensor([0]), torch.tensor([3]), torch.tensor([8]), 0.2)
    assert got.item() == pytest.approx((0.8 + 0.9 + 1.0 + 0.7 + 0.6) / 5 - (0.1 + 0.3) / 2, abs=1e-6)
    # at the video's start the left flank is clipped away: only the right flank counts
    got = oic_scores(seq, torch.tensor([0]), torch.tensor([0]), torch.tensor([5]), 0.4)
    assert got.item() == pytest.approx((0.0 + 0.0 + 0.1 + 0.8 + 0.9) / 5 - (1.0 + 0.7) / 2, abs=1e-6)
    g = torch.Generator().manual_seed(3)
    seq = torch.rand(4, 60, generator=g)
    rows = torch.randint(0, 4, (50,), generator=g)
    s = torch.randint(0, 58, (50,), generator=g)
    e = torch.minimum(s + torch.randint(1, 30, (50,), generator=g), torch.tensor(60))
    got = oic_scores(seq, rows, s, e, 0.25)
    ref = [_oic_brute(seq, int(r), int(a), int(b), 0.25) for r, a, b in zip(rows, s, e)]
    assert torch.allclose(got, torch.tensor(ref), atol=1e-5)


def test_upsample_is_centre_aligned_linear():
    up = upsample(torch.tensor([0.0, 1.0, 0.0]), 2)
    assert up.tolist() == pytest.approx([0.0, 0.25, 0.75, 0.75, 0.25, 0.0])
    assert upsample(torch.tensor([[1.0, 2.0]]), 1).tolist() == [[1.0, 2.0]]


def test_select_classes():
    assert select_classes(torch.tensor([0.1, 0.3, 0.26, 0.2]), 0.25).tolist() == [1, 2]
    assert select_classes(torch.tensor([0.1, 0.2, 0.05]), 0.25).tolist() == [1]


def test_proposals_of_handmade_cas_are_exact():
    # 12 snippets, 2 classes; class 1 has two clear runs, class 0 is never selected.
    cas = torch.zeros(12, 2)
    cas[2:5, 1] = torch.tensor([0.9, 0.9, 0.9])
    cas[7:11, 1] = torch.tensor([0.18, 0.18, 0.18, 0.18])
    cas[:, 0] = 0.5
    att = torch.zeros(12)
    att[2:5] = 0.8
    meta = VideoMeta(num_snippets=12, duration=sec(11.5), fps=FPS)
    out = video_proposals(cas, att, torch.tensor([1]), torch.tensor([0.3, 0.6]), meta,
                          feat_stride=STRIDE, num_frames=NF, cas_thresholds=[0.15, 0.2],
                          att_thresholds=[0.5], upsample_factor=1, min_points=2, flank_ratio=0.5,
                          gamma=0.2, score_mapping="oic")
    # runs: thr .15 -> [2,5), [7,11); thr .20 -> [2,5); attention .5 -> [2,5)
    segs = sorted((round(a, 5), round(b, 5), round(c, 5)) for (a, b), c in
                  zip(out.segments.tolist(), out.scores.tolist()))
    s1 = 0.9 - 0.0 + 0.2 * 0.6  # flank ceil(1.5) = 2 points each side, all 0
    s2 = 0.18 - 0.0 + 0.2 * 0.6  # flank 2 points each side: [5,7) and [11,12) (clipped), all 0
    exp = sorted([(round(sec(1.5), 5), round(sec(4.5), 5), round(s1, 5))] * 3
                 + [(round(sec(6.5), 5), round(sec(10.5), 5), round(s2, 5))])
    assert segs == exp
    assert out.labels.tolist() == [1, 1, 1, 1]
    assert torch.all(out.weights == 1)


def test_proposal_time_mapping_with_upsampling_and_edges():
    # one class active on snippets 0..3 of 8: the run touches the start -> begins at 0 s
    cas = torch.zeros(8, 1)
    cas[:4, 0] = 1.0
    meta = VideoMeta(8, sec(7.5), FPS)
    out = video_proposals(cas, torch.zeros(8), torch.tensor([0]), torch.tensor([1.0]), meta,
                          feat_stride=STRIDE, num_frames=NF, cas_thresholds=[0.5], att_thresholds=[],
                          upsample_factor=4, min_points=2, flank_ratio=0.0, gamma=0.0)
    # centre-aligned linear up-sampling x4: values >= 0.5 up to point 15 (value 0.5 at 3.5 snippets)
    up = upsample(cas[:, 0], 4)
    last = int(torch.nonzero(up >= 0.5).max())
    assert out.segments.tolist() == [[0.0, pytest.approx(sec((last + 1) / 4 - 0.5), abs=1e-5)]]
    # uniform sampling: 4 positions for 8 snippets -> each position is 2 snippets wide
    cas4 = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    out = video_proposals(cas4, torch.zeros(4), torch.tensor([0]), torch.tensor([1.0]), meta,
                          feat_stride=STRIDE, num_frames=NF, cas_thresholds=[0.5], att_thresholds=[],
                          upsample_factor=1, min_points=2, flank_ratio=0.0, gamma=0.0)
    assert out.segments.tolist() == [[pytest.approx(sec(1.5)), pytest.approx(sec(5.5))]]
    # a run reaching the last point ends at the duration
    cas_end = torch.zeros(8, 1)
    cas_end[5:, 0] = 1.0
    out = video_proposals(cas_end, torch.zeros(8), torch.tensor([0]), torch.tensor([1.0]), meta,
                          feat_stride=STRIDE, num_frames=NF, cas_thresholds=[0.5], att_thresholds=[],
                          upsample_factor=1, min_points=2, flank_ratio=0.0, gamma=0.0)
    assert out.segments.tolist() == [[pytest.approx(sec(4.5)), pytest.approx(meta.duration)]]


def test_score_mapping_is_monotone_into_unit_interval():
    x = torch.linspace(-1, 2, 31)
    c = score_to_confidence(x, "linear")
    assert float(c.min()) == 0.0 and float(c.max()) == 1.0
    assert torch.all(c[1:] >= c[:-1])
    assert torch.equal(score_to_confidence(x, "oic"), x)
    half = score_to_confidence(x, "linear", 0.5)
    assert torch.allclose(half, (2 * x).clamp(0, 1)) and torch.all(half[1:] >= half[:-1])


def test_nms_and_baseline_filter_by_hand():
    pool = {"a": Instances.create(
        torch.tensor([[0.0, 10.0], [1.0, 10.0], [20.0, 30.0], [0.0, 10.0], [40.0, 41.0], [0.5, 9.0]]),
        torch.tensor([0, 0, 0, 1, 0, 0]), torch.tensor([0.9, 0.8, 0.6, 0.7, 0.4, 0.95]),
        torch.full((6,), 0.3))}
    base = filter_baseline(pool, conf=0.5, nms=0.45)["a"]
    # 0.95 [0.5,9] suppresses [0,10] (IoU .85) and [1,10] (IoU .8); class 1 survives; 0.4 is dropped
    got = sorted(zip(base.labels.tolist(), [tuple(s) for s in base.segments.tolist()], base.scores.tolist()))
    assert got == [(0, (0.5, 9.0), pytest.approx(0.95)), (0, (20.0, 30.0), pytest.approx(0.6)),
                   (1, (0.0, 10.0), pytest.approx(0.7))]
    assert torch.all(base.weights == 1)
    top = nms_detections(pool["a"], 0.45, max_num=2)
    assert top.scores.tolist() == pytest.approx([0.95, 0.7])


# ------------------------------------------------------------------------------- training
def test_sample_indices():
    g = torch.Generator().manual_seed(0)
    idx = sample_indices(100, 10, g)
    assert len(idx) == 10 and torch.all(idx[1:] >= idx[:-1])
    assert torch.all(idx // 10 == torch.arange(10))  # one index per bin of width 10
    assert sample_indices(100, 10, None).tolist() == [5 + 10 * i for i in range(10)]
    assert sample_indices(7, 10, g).tolist() == list(range(7))


def test_video_map_by_hand():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2], [0.1, 0.6]])
    labels = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 0]])
    # class 0: positives at ranks 1 and 3 -> (1 + 2/3) / 2 ; class 1: positive at rank 1 -> 1
    assert video_map(scores, labels) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    # ties are pessimistic: a constant score is not perfect
    assert video_map(torch.ones(4, 1), torch.tensor([[1], [0], [0], [0]])) == pytest.approx(0.25)


def test_training_sees_only_weak_labels_and_is_deterministic(tmp_path):
    ds = FakeWeakDataset()
    cfg = make_config("cpu", TINY)
    p1 = train_wtal(ds, cfg, tmp_path / "a", seed=3, val_fraction=0.25, progress=False)
    assert ds.calls == [("weak", "train")]  # nothing else of the dataset was asked for
    ck1 = load_checkpoint(p1)
    assert ck1["kind"] == "noco-wtal" and len(ck1["val_videos"]) == 6 and len(ck1["train_videos"]) == 18
    assert not set(ck1["val_videos"]) & set(ck1["train_videos"])
    assert {h["epoch"] for h in ck1["history"]} == {1, 2, 3}
    assert all(math.isfinite(h["val_map"]) and math.isfinite(h["val_loss"]) for h in ck1["history"])
    best = min(ck1["history"], key=lambda h: h["val_loss"])
    assert ck1["epoch"] == best["epoch"]
    # same seed -> bitwise identical; 2 epochs + resume to 3 -> identical too
    p2 = train_wtal(ds, cfg, tmp_path / "b", seed=3, val_fraction=0.25, progress=False)
    last_a = load_checkpoint(tmp_path / "a" / "last.pt")
    for k, v in load_checkpoint(tmp_path / "b" / "last.pt")["model"].items():
        assert torch.equal(v, last_a["model"][k])
    cfg2 = make_config("cpu", {**TINY, "epochs": 2})
    train_wtal(ds, cfg2, tmp_path / "c", seed=3, val_fraction=0.25, progress=False)
    train_wtal(ds, cfg, tmp_path / "c", seed=3, val_fraction=0.25, progress=False, resume=True)
    last_c = load_checkpoint(tmp_path / "c" / "last.pt")
    assert last_c["epoch"] == 3 and len(last_c["history"]) == 3
    for k, v in last_c["model"].items():
        assert torch.equal(v, last_a["model"][k])
    assert p2.name == "wtal.pt"
    with pytest.raises(NocoError, match="config differs"):
        train_wtal(ds, make_config("cpu", {**TINY, "hidden_dim": 8}), tmp_path / "c", seed=3,
                   val_fraction=0.25, progress=False, resume=True)
    # "auto" restarts instead (callers that cache by config)
    train_wtal(ds, make_config("cpu", {**TINY, "hidden_dim": 8, "epochs": 1}), tmp_path / "c", seed=3,
               val_fraction=0.25, progress=False, resume="auto")
    last_c = load_checkpoint(tmp_path / "c" / "last.pt")
    assert last_c["config"]["hidden_dim"] == 8 and last_c["epoch"] == 1


def test_trained_model_localizes_and_predicts_without_labels(tmp_path):
    ds = FakeWeakDataset(n=40, test=8, seed=1)
    cfg = make_config("cpu", {**TINY, "epochs": 25})
    p = train_wtal(ds, cfg, tmp_path, seed=0, val_fraction=0.1, progress=False)
    dets = predict_wtal(p, ds)  # the test subset
    assert set(dets) == {v.id for v in ds._weak["test"]}
    hits = 0
    for vid, d in dets.items():
        c, a, b = ds.truth[vid]
        assert len(d) > 0 and torch.all(d.scores[1:] <= d.scores[:-1])
        top = d.segments[0]
        gt = torch.tensor([sec(a - 0.5), sec(b - 0.5)])
        inter = (torch.minimum(top[1], gt[1]) - torch.maximum(top[0], gt[0])).clamp(min=0)
        iou = inter / ((top[1] - top[0]) + (gt[1] - gt[0]) - inter)
        hits += int(d.labels[0] == c and iou > 0.5)
    assert hits >= 6  # of 8: the top detection finds the action
    pool = propose_wtal(p, ds)
    assert set(pool) == {v.id for v in ds._weak["train"]}
    for v in ds._weak["train"]:
        assert set(pool[v.id].labels.tolist()) <= set(v.class_ids)  # known classes only
        assert torch.all((pool[v.id].scores >= 0) & (pool[v.id].scores <= 1))
        assert torch.all(pool[v.id].segments[:, 0] <= pool[v.id].segments[:, 1])
    # the pool is pre-NMS: it is larger than its NMS'd version
    n_pool = sum(len(x) for x in pool.values())
    n_nms = sum(len(nms_detections(x, 0.45)) for x in pool.values())
    assert n_pool > 2 * n_nms


def test_external_proposal_file_round_trip(tmp_path):
    classes = ["a", "b", "c"]
    g = torch.Generator().manual_seed(0)
    pool = {}
    for i in range(3):
        s = torch.rand(7, generator=g) * 50
        segs = torch.stack([s, s + torch.rand(7, generator=g) * 10 + 0.1], 1)
        pool[f"vid{i}"] = Instances.create(segs, torch.randint(0, 3, (7,), generator=g),
                                           torch.rand(7, generator=g))
    path = write_instances(tmp_path / "O.json", pool, classes, with_weight=False)
    raw = json.loads(path.read_text())
    assert set(raw["results"]["vid0"][0]) == {"segment", "label", "score"}
    back = read_instances(path, classes)
    for vid in pool:
        assert torch.allclose(back[vid].segments, pool[vid].segments, atol=1e-4)
        assert torch.equal(back[vid].labels, pool[vid].labels)
        assert torch.allclose(back[vid].scores, pool[vid].scores, atol=1e-6)
        a, b = filter_baseline(pool)[vid], filter_baseline(back)[vid]
        assert torch.equal(a.labels, b.labels) and torch.allclose(a.segments, b.segments, atol=1e-4)


def test_config_presets_and_errors():
    assert make_config("cpu", {}).hidden_dim == 256
    paper = make_config("paper", {})
    assert (paper.hidden_dim, paper.num_segments, paper.batch_size, paper.lr, paper.epochs) == (2048, 750, 16, 1e-4, 100)
    assert len(paper.att_thresholds) == 33 and paper.att_thresholds[0] == 0.1 and paper.att_thresholds[-1] == 0.9
    with pytest.raises(NocoError, match="unknown WTAL config option"):
        make_config("cpu", {"hiden_dim": 3})
    with pytest.raises(NocoError, match="unknown preset"):
        make_config("gpu", {})
    with pytest.raises(NocoError, match="snippet_dropout"):
        make_config("cpu", {"snippet_dropout": 1.0})


# ------------------------------------------------------------------------------- CLI, real loader
def _write_dataset(root: Path, fake: FakeWeakDataset) -> Path:
    (root / "features").mkdir(parents=True)
    db = {}
    for sub, name in (("train", "Validation"), ("test", "Test")):
        for v in fake._weak[sub]:
            np.save(root / "features" / f"{v.id}.npy", fake.features(v.id))
            c, a, b = fake.truth[v.id]
            db[v.id] = {"subset": name, "duration": v.duration, "fps": FPS,
                        "annotations": [{"segment": [sec(a - 0.5), sec(b - 0.5)], "label": fake.classes[c]}]}
    (root / "annotations.json").write_text(json.dumps({"database": db}))
    (root / "dataset.json").write_text(json.dumps({
        "fps": FPS, "feat_stride": STRIDE, "num_frames": NF, "train_subset": "Validation",
        "test_subset": "Test", "classes": fake.classes}))
    return root


def test_cli_train_predict_propose(tmp_path):
    from noco.cli import main

    fake = FakeWeakDataset(n=12, test=4)
    data = _write_dataset(tmp_path / "data", fake)
    ds = load_dataset(data)
    w = tmp_path / "w"
    sets = ["--set", "hidden_dim=16", "--set", "num_segments=32"]
    assert main(["wtal", "train", "--data", str(data), "--out", str(w), "--epochs", "2", "--seed", "1"] + sets) == 0
    assert (w / "wtal.pt").is_file() and (w / "last.pt").is_file()
    assert main(["wtal", "train", "--data", str(data), "--out", str(w), "--epochs", "3", "--seed", "1",
                 "--resume"] + sets) == 0
    assert load_checkpoint(w / "last.pt")["epoch"] == 3
    assert main(["wtal", "predict", "--data", str(data), "--ckpt", str(w / "wtal.pt"),
                 "--out", str(tmp_path / "P.json")]) == 0
    preds = read_instances(tmp_path / "P.json", ds.classes)
    assert set(preds) == {v.id for v in ds.subset("Test")}
    assert main(["wtal", "propose", "--data", str(data), "--ckpt", str(w / "wtal.pt"),
                 "--out", str(tmp_path / "O.json"), "--baseline-out", str(tmp_path / "B.json")]) == 0
    pool = read_instances(tmp_path / "O.json", ds.classes)
    assert set(pool) == {v.id for v in ds.subset("Validation")}
    base = read_instances(tmp_path / "B.json", ds.classes)
    for vid in base:
        assert torch.all(base[vid].scores > 0.5)
    # a checkpoint of another dataset is refused with one clear line
    other = FakeWeakDataset(n=4, test=2, d=7)
    data2 = _write_dataset(tmp_path / "data2", other)
    assert main(["wtal", "predict", "--data", str(data2), "--ckpt", str(w / "wtal.pt"),
                 "--out", str(tmp_path / "P2.json")]) == 2
    assert not (tmp_path / "P2.json").exists()
