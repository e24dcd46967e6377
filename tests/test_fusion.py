"""Classification fusion at test time (issue #8): WTAL video scores x student detections."""

from __future__ import annotations

import json

import pytest
import torch

from noco.detector.fusion import fuse, fuse_all
from noco.errors import DataError, NocoError
from noco.eval.detection import evaluate
from noco.labels.instances import Instances
from noco.wtal.proposals import select_classes
from noco.wtal.train import sample_indices


def dets_of(rows):
    """Instances from ``[(start, end, label, score, weight), ...]``."""
    t = torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)
    return Instances.create(t[:, :2], t[:, 2].long(), t[:, 3], t[:, 4])


def rows_of(d: Instances):
    return [(round(s[0], 4), round(s[1], 4), int(c), round(x, 6), round(w, 6))
            for s, c, x, w in zip(d.segments.tolist(), d.labels.tolist(), d.scores.tolist(), d.weights.tolist())]


def random_dets(g: torch.Generator, n: int, k: int) -> Instances:
    s = torch.rand(n, generator=g) * 50
    e = s + torch.rand(n, generator=g) * 10 + 0.1
    return Instances.create(torch.stack([s, e], 1), torch.randint(0, k, (n,), generator=g),
                            torch.rand(n, generator=g), torch.rand(n, generator=g))


# ------------------------------------------------------------------------------ fuse: hand cases
def test_all_ones_video_scores_equal_no_fusion():
    g = torch.Generator().manual_seed(0)
    d = random_dets(g, 40, 5)
    ref = d.sorted_by_score()
    for power in (1.0, 2.5):
        out = fuse(d, torch.ones(5), "multiply", power=power)
        assert rows_of(out) == rows_of(ref)
    assert fuse(d, torch.zeros(5), "none") is d  # "none": unchanged, whatever the scores


def test_ruled_out_class_drops_below_likely_class():
    # the student prefers class 0 (0.9 vs 0.3) on the same segment; the video says class 1
    d = dets_of([(10, 20, 0, 0.9, 1.0), (10, 20, 1, 0.3, 0.5)])
    vs = torch.tensor([1e-6, 0.8, 0.1])
    out = fuse(d, vs)
    assert out.labels.tolist() == [1, 0]
    assert out.scores.tolist() == pytest.approx([0.3 * 0.8, 0.9 * 1e-6], rel=1e-5)
    assert out.weights.tolist() == [0.5, 1.0]  # weights travel with their detection
    # power sharpens (2) or flattens (0: no change) the video evidence
    assert fuse(d, vs, power=2.0).scores.tolist() == pytest.approx([0.3 * 0.64, 0.9 * 1e-12], rel=1e-5)
    assert fuse(d, vs, power=0.0).scores.tolist() == pytest.approx([0.9, 0.3])


def test_topk_keeps_only_the_top_classes():
    d = dets_of([(0, 5, 0, 0.9, 1), (5, 9, 1, 0.8, 1), (1, 3, 2, 0.7, 1), (2, 8, 1, 0.2, 1)])
    vs = torch.tensor([0.3, 0.6, 0.1])
    out = fuse(d, vs, topk=1)
    assert out.labels.tolist() == [1, 1]
    assert out.scores.tolist() == pytest.approx([0.8 * 0.6, 0.2 * 0.6])
    out = fuse(d, vs, topk=2)
    assert out.labels.tolist() == [1, 0, 1]
    assert out.scores.tolist() == pytest.approx([0.48, 0.27, 0.12])
    assert len(fuse(d, vs, topk=10)) == 4  # topk > K keeps everything
    # tie between classes 0 and 2: the lower index wins the last top-k place
    out = fuse(d, torch.tensor([0.2, 0.6, 0.2]), topk=2)
    assert sorted(set(out.labels.tolist())) == [0, 1]


def test_fuse_matches_brute_force_and_does_not_mutate():
    g = torch.Generator().manual_seed(1)
    k = 7
    for n in (0, 1, 60):
        d = random_dets(g, n, k)
        before = rows_of(d)
        vs = torch.rand(k, generator=g)
        for topk, power in ((0, 1.0), (3, 0.5), (1, 2.0)):
            top = sorted(range(k), key=lambda c: (-float(vs[c]), c))[:topk] if topk else list(range(k))
            ref = []
            for (s, e, c, x, w) in zip(d.segments[:, 0].tolist(), d.segments[:, 1].tolist(), d.labels.tolist(),
                                       d.scores.tolist(), d.weights.tolist()):
                if c in top:
                    ref.append((s, e, c, x * float(vs[c]) ** power, w))
            ref.sort(key=lambda r: -r[3])  # stable: equal scores keep input order
            out = fuse(d, vs, topk=topk, power=power)
            assert len(out) == len(ref)
            if ref:
                assert out.labels.tolist() == [r[2] for r in ref]
                assert torch.allclose(out.scores, torch.tensor([r[3] for r in ref]), rtol=1e-5, atol=1e-7)
                assert torch.allclose(out.segments, torch.tensor([r[:2] for r in ref]))
                assert torch.allclose(out.weights, torch.tensor([r[4] for r in ref]))
            assert rows_of(d) == before


def test_fusion_raises_map_when_student_confuses_classes():
    # gt: A has class 0, B class 1, C class 0. The student localises every action but ranks the
    # wrong class first in A and B; the video scores are right in A and B and uninformative in C.
    gt = {"A": dets_of([(10, 20, 0, 1, 1)]), "B": dets_of([(30, 40, 1, 1, 1)]), "C": dets_of([(5, 15, 0, 1, 1)])}
    preds = {
        "A": dets_of([(10, 20, 1, 0.9, 1), (10, 20, 0, 0.6, 1)]),
        "B": dets_of([(30, 40, 0, 0.8, 1), (30, 40, 1, 0.5, 1)]),
        "C": dets_of([(5, 15, 0, 0.7, 1), (5, 15, 1, 0.2, 1)]),
    }
    scores = {"A": torch.tensor([0.9, 0.1]), "B": torch.tensor([0.2, 0.8]), "C": torch.tensor([0.5, 0.5])}
    # by hand, unfused: class 0 ranks B(FP) C(TP) A(TP) -> AP 2/3; class 1 ranks A(FP) B(TP) C(FP) -> 1/2
    plain = evaluate(gt, preds, 2, [0.5])
    assert plain["average"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert evaluate(gt, fuse_all(preds, None, mode="none"), 2, [0.5])["average"] == pytest.approx(7 / 12)
    # fused: class 0 -> A .54, C .35, B .16 (FP last) ; class 1 -> B .40 first : both AP 1
    fused = fuse_all(preds, scores)
    assert list(fused) == ["A", "B", "C"]
    assert fused["A"].labels.tolist() == [0, 1]
    assert evaluate(gt, fused, 2, [0.5])["average"] == pytest.approx(1.0)
    assert evaluate(gt, fuse_all(preds, scores, topk=1), 2, [0.5])["average"] == pytest.approx(1.0)


def test_errors_are_clear():
    d = dets_of([(0, 1, 2, 0.5, 1)])
    with pytest.raises(NocoError, match="no video-level class scores for 1 video.*vid_b"):
        fuse_all({"vid_a": d, "vid_b": d}, {"vid_a": torch.ones(3)})
    with pytest.raises(NocoError, match="needs video-level class scores"):
        fuse_all({"vid_a": d}, None)
    with pytest.raises(NocoError, match="unknown fusion mode 'add'"):
        fuse(d, torch.ones(3), mode="add")
    with pytest.raises(NocoError, match="topk"):
        fuse(d, torch.ones(3), topk=-1)
    with pytest.raises(NocoError, match="power"):
        fuse(d, torch.ones(3), power=float("nan"))
    with pytest.raises(NocoError, match="video vid_a: a detection has class 2 but the video scores have only 2"):
        fuse_all({"vid_a": d}, {"vid_a": torch.ones(2)})
    with pytest.raises(NocoError, match=r"1-d tensor \[K\]"):
        fuse(d, torch.ones(1, 3))
    with pytest.raises(NocoError, match="finite"):
        fuse(d, torch.tensor([0.1, float("nan"), 0.2]))


# ------------------------------------------------------------------------------ video scores
class WeakOnly:
    """A dataset proxy that lets through only what test-time video scoring may use."""

    ALLOWED = {"weak", "features", "settings", "feat_dim", "num_classes", "classes", "test_subset",
               "train_subset", "root", "fps", "feat_stride", "num_frames"}

    def __init__(self, ds):
        self._ds = ds

    def __getattr__(self, name):
        if name not in self.ALLOWED:
            raise AssertionError(f"video scoring touched dataset.{name}")
        return getattr(self._ds, name)


@pytest.fixture(scope="module")
def tiny_wtal(tmp_path_factory, one_thread):
    from noco.data.dataset import load_dataset
    from noco.data.synth import generate
    from noco.wtal.config import make_config
    from noco.wtal.train import train_wtal

    root = tmp_path_factory.mktemp("fusion") / "tiny"
    generate("tiny", root, seed=0)
    ds = load_dataset(root)
    cfg = make_config("cpu", dict(hidden_dim=32, num_segments=128, batch_size=6, epochs=6, lr=3e-3))
    ckpt = train_wtal(ds, cfg, root.parent / "wtal", seed=0, val_fraction=0.0, progress=False)
    return ds, ckpt


def _reference_scores(model, x):
    """Brute-force ASM-Loc video score: uniform test sampling, top-k mean of CAS * fg attention,
    softmax over K+1, background dropped (every step written out, no model.forward)."""
    cfg, k = model.cfg, model.num_classes
    if x.shape[0] > cfg.num_segments:
        x = x[sample_indices(x.shape[0], cfg.num_segments, None)]
    h = torch.relu(model.embedding(x.t()[None]))[0].t()  # [N, H]
    att = torch.softmax(model.attention(h.t()[None])[0].t(), dim=-1)[:, 0]  # [N]
    cas = model.classifier(h) * att[:, None]  # [N, K+1]
    n_top = max(1, int(x.shape[0] * cfg.topk_fg_ratio))
    pooled = torch.stack([torch.sort(cas[:, c], descending=True).values[:n_top].mean() for c in range(k + 1)])
    return torch.softmax(pooled, dim=0)[:k]


def test_video_scores_of_a_trained_wtal_model(tiny_wtal):
    from noco.wtal.train import load_wtal, predict_wtal
    from noco.wtal.video_scores import video_scores

    ds, ckpt = tiny_wtal
    k = ds.num_classes
    train = video_scores(ckpt, WeakOnly(ds), ds.train_subset)
    test = video_scores(ckpt, WeakOnly(ds), ds.test_subset)
    assert set(train) == {v.id for v in ds.weak(ds.train_subset)}
    assert set(test) == {v.id for v in ds.weak(ds.test_subset)}
    for s in list(train.values()) + list(test.values()):
        assert s.shape == (k,) and s.dtype == torch.float32
        assert bool(((s >= 0) & (s <= 1)).all()) and float(s.sum()) <= 1.0 + 1e-5
    # on training videos the true classes rank high (random ranking: mean rank 9.5 of 0..19)
    ranks = []
    for v in ds.weak(ds.train_subset):
        order = torch.argsort(train[v.id], descending=True).tolist()
        ranks += [order.index(c) for c in v.class_ids]
    assert max(ranks) <= 4 and sum(ranks) / len(ranks) <= 1.0
    # the same numbers as a brute-force recomputation from the weights (uniform test sampling)
    model, cfg, _ = load_wtal(ckpt, ds)
    assert cfg.test_sampling == "uniform" and max(v.num_snippets for v in ds.weak(ds.test_subset)) > cfg.num_segments
    with torch.no_grad():
        for vid, s in test.items():
            ref = _reference_scores(model, ds.features_tensor(vid))
            assert torch.allclose(s, ref, atol=1e-5), vid
    # a model object gives the same scores as its checkpoint
    by_model = video_scores(model, ds, ds.test_subset)
    assert all(torch.equal(by_model[v], test[v]) for v in test)
    # ... and these are the scores predict_wtal selects its classes with
    cfg_thr = cfg.class_threshold
    preds = predict_wtal(ckpt, ds)
    for vid, d in preds.items():
        assert set(d.labels.tolist()) <= set(select_classes(test[vid], cfg_thr).tolist())


def test_video_scores_rejects_a_model_for_another_dataset(tiny_wtal):
    from noco.wtal.config import make_config
    from noco.wtal.model import WtalModel
    from noco.wtal.video_scores import video_scores

    ds, _ = tiny_wtal
    wrong = WtalModel(ds.feat_dim, ds.num_classes + 1, make_config("cpu", {"hidden_dim": 8}))
    with pytest.raises(NocoError, match="classes"):
        video_scores(wrong, ds)


def test_video_score_file_round_trip_and_errors(tmp_path):
    from noco.wtal.video_scores import read_video_scores, write_video_scores

    classes = ["a", "b", "c"]
    scores = {"v1": torch.tensor([0.1, 0.7, 0.2]), "v2": torch.tensor([0.0, 0.0, 1.0])}
    p = write_video_scores(tmp_path / "vs.json", scores, classes)
    back = read_video_scores(p, classes)
    assert set(back) == {"v1", "v2"} and all(torch.allclose(back[v], scores[v]) for v in scores)
    assert set(read_video_scores(p, classes, videos=["v2"])) == {"v2"}
    with pytest.raises(DataError, match="does not match the dataset's class list.*another order"):
        read_video_scores(p, ["b", "a", "c"])
    obj = json.loads(p.read_text())
    obj["scores"]["v1"] = [0.1, 0.2]
    obj["scores"]["v2"] = [0.1, -0.5, "x"]
    p.write_text(json.dumps(obj))
    with pytest.raises(DataError) as e:
        read_video_scores(p, classes)
    msg = str(e.value)
    assert "video v1: field 'scores' must be a list of 3 numbers, found 2" in msg
    assert "video v2: field 'scores': entry 1 (b)" in msg and str(p) in msg
