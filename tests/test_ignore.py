"""Uncertain regions (correction.ignore_conf): the interval union, the region set of a proposal
pool, the (point, class) mask, the loss without those focal terms, and the training sample's grid."""

import pytest
import torch

from noco.correction.config import make_config
from noco.detector.assign import assign_labels, ignore_mask
from noco.detector.loss import detection_loss, sigmoid_focal_loss
from noco.detector.train import make_sample
from noco.errors import NocoError
from noco.labels.ignore import interval_union, uncertain_regions
from noco.labels.instances import Instances

from test_detector import _random_outputs, _random_targets, small_cfg  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_root):
    from noco.data.dataset import load_dataset

    return load_dataset(tiny_root)


def test_interval_union_hand_case():
    segs = torch.tensor([[5.0, 7.0], [0.0, 2.0], [1.0, 3.0], [3.0, 4.0], [6.0, 9.0], [0.0, 1.0], [10.0, 11.0]])
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 0])
    u, lab = interval_union(segs, labels)
    # class 0: [0,2] u [1,3] u [3,4] (touching) = [0,4]; [5,7] u [6,9] = [5,9]; [10,11] alone; class 1 apart
    assert u.tolist() == [[0.0, 4.0], [5.0, 9.0], [10.0, 11.0], [0.0, 1.0]]
    assert lab.tolist() == [0, 0, 0, 1]
    e, el = interval_union(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert e.shape == (0, 2) and el.shape == (0,)


def test_interval_union_covers_the_same_points_as_its_inputs():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(40, generator=g) * 50
    segs = torch.stack((s, s + torch.rand(40, generator=g) * 6), dim=1)
    labels = torch.randint(0, 3, (40,), generator=g)
    u, lab = interval_union(segs, labels)
    grid = torch.linspace(-1, 60, 2000)
    for c in range(3):
        a = ((grid[:, None] >= segs[labels == c, 0]) & (grid[:, None] <= segs[labels == c, 1])).any(1)
        b = ((grid[:, None] >= u[lab == c, 0]) & (grid[:, None] <= u[lab == c, 1])).any(1)
        assert torch.equal(a, b)
        mine = u[lab == c]
        assert (mine[1:, 0] > mine[:-1, 1]).all()  # disjoint and sorted


def test_uncertain_regions_keep_the_score_window_and_the_video_classes():
    pool = Instances(torch.tensor([[0.0, 2.0], [1.0, 3.0], [5.0, 6.0], [8.0, 9.0], [10.0, 12.0]]),
                     torch.tensor([0, 0, 0, 1, 0]), torch.tensor([0.15, 0.25, 0.4, 0.2, 0.05]), torch.ones(5))
    r = uncertain_regions(pool, 0.1, 0.3)
    # [5,6] is a label (>= 0.3), [10,12] is below the window; the two class-0 ones merge
    assert r.segments.tolist() == [[0.0, 3.0], [8.0, 9.0]] and r.labels.tolist() == [0, 1]
    assert uncertain_regions(pool, 0.1, 0.3, classes=[1]).segments.tolist() == [[8.0, 9.0]]
    assert len(uncertain_regions(pool, 0.1, 0.3, classes=[])) == 0


def test_ignore_mask_hand_case():
    points = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    m = ignore_mask(points, torch.tensor([[1.0, 2.5], [4.0, 6.0]]), torch.tensor([2, 0]), 3)
    assert m.tolist() == [[False] * 3, [False, False, True], [False, False, True], [False] * 3,
                          [True, False, False]]
    assert not ignore_mask(points, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 3).any()


def test_loss_drops_exactly_the_ignored_negative_focal_terms():
    g = torch.Generator().manual_seed(5)
    out = _random_outputs(g)
    cls_t, reg_t = _random_targets(g, out)
    w = torch.ones(cls_t.shape[:2], dtype=torch.float64)
    f, d, n = detection_loss(out, cls_t, reg_t, w)
    none = torch.zeros_like(cls_t, dtype=torch.bool)
    assert detection_loss(out, cls_t, reg_t, w, ignore_t=none) == (f, d, n)
    ign = torch.rand(cls_t.shape, generator=g) > 0.5
    f2, d2, n2 = detection_loss(out, cls_t, reg_t, w, ignore_t=ign)
    assert float(d2) == float(d) and n2 == n  # regression and positives untouched
    # the difference is the focal terms of the ignored (point, class) pairs that are negatives
    term = sigmoid_focal_loss(out["cls"], cls_t)
    dropped = term[ign & (cls_t <= 0) & out["mask"][..., None]].sum()
    assert float(f - f2) == pytest.approx(float(dropped), rel=1e-9) and float(dropped) > 0
    # a region over a positive pair changes nothing
    pos_only = cls_t > 0
    assert float(detection_loss(out, cls_t, reg_t, w, ignore_t=pos_only)[0]) == pytest.approx(float(f), rel=1e-12)


def test_training_sample_puts_regions_on_the_label_grid(tiny):
    v = tiny.subset(tiny.train_subset)[0]
    ins = tiny.ground_truth(tiny.train_subset)[v.id]
    cfg = small_cfg()
    # a region equal to the instances: on the grid it must coincide with them, whole video or crop
    region = Instances(ins.segments, ins.labels, torch.zeros(len(ins)), torch.zeros(len(ins)))
    _, segs, _, _, (rs, rl) = make_sample(tiny, v, ins, cfg, None, ignore=region)
    assert torch.allclose(rs, segs) and torch.equal(rl, ins.labels)
    crop = small_cfg(max_seq_len=64, input_downsample=1)
    for k in range(3):
        _, segs, labels, _, (rs, rl) = make_sample(tiny, v, ins, crop, torch.Generator().manual_seed(k), ignore=region)
        # kept labels are clipped pieces of their region: each lies inside the same-class region
        inside = (rs[None, :, 0] <= segs[:, None, 0] + 1e-4) & (segs[:, None, 1] <= rs[None, :, 1] + 1e-4) \
            & (rl[None, :] == labels[:, None])
        assert inside.any(1).all()
    assert len(make_sample(tiny, v, ins, cfg, None)) == 4  # no regions: the four items as before


def test_regions_outside_positives_only_mask_negatives():
    points = torch.tensor([[float(t), 0.0, 1e4, 1.0] for t in range(12)])
    cls, _, _ = assign_labels(points, torch.tensor([[2.0, 6.0]]), torch.tensor([1]), torch.ones(1), 2, 1.5)
    ign = ignore_mask(points, torch.tensor([[0.0, 10.0]]), torch.tensor([1]), 2)
    effective = ign & (cls <= 0)
    # the region covers 0..10 for class 1; the positive points of the instance stay trained
    assert effective[:, 1].sum() == 11 - int(cls[:, 1].sum()) and not effective[:, 0].any()
    assert int(cls[:, 1].sum()) > 0


def test_ignore_conf_must_be_below_cala_conf():
    assert make_config(None, {"ignore_conf": 0.1, "cala_conf": 0.3}).validate().ignore_conf == 0.1
    with pytest.raises(NocoError, match="ignore_conf must be below cala_conf"):
        make_config(None, {"ignore_conf": 0.3, "cala_conf": 0.3}).validate()
