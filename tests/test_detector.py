"""TriDet detector: Trident decoding, label assignment, losses/HPM, padding invariance, inference,
training (overfit, bit-for-bit resume), configs and the `noco detector` command."""

import json
import math

import pytest
import torch

from noco.cli import main as cli_main
from noco.detector.assign import assign_labels
from noco.detector.config import DetectorConfig, make_config
from noco.detector.infer import decode, detect, downsample_features, effective_grid, predict_detector
from noco.detector.loss import detection_loss, diou_loss_1d
from noco.detector.model import TriDet, trident_offsets
from noco.detector.train import StaticLabels, check_labels, learning_rate, make_sample, train_detector
from noco.errors import DataError, NocoError
from noco.io import load_checkpoint
from noco.labels.instances import Instances, read_instances

# A small config for fast tests: the full architecture (6 levels, 16 bins), narrow.
SMALL = dict(embed_dim=32, head_dim=32, mlp_dim=48, epochs=2, warmup_epochs=1, batch_size=2, lr=2e-3,
             input_downsample=2, max_seq_len=256, drop_path=0.1, ema_decay=0.9, pre_nms_topk=300,
             max_segments=200)
OVERFIT_VIDEOS = ["video_validation_0000053", "video_validation_0000057", "video_validation_0000154",
                  "video_validation_0000174"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tiny_root):
    from noco.data.dataset import load_dataset

    return load_dataset(tiny_root)


def small_cfg(**kw):
    return make_config("cpu", {**SMALL, "input_dim": 128, **kw})


# ---------------------------------------------------------------------- Trident decoding
def test_trident_decoding_hand_example():
    # B = 2 bins, 1 class, 3 positions; point p = 1.
    ln = math.log
    start = torch.tensor([[[ln(3), 0.0, 5.0]]])             # Rs[0]=ln3, Rs[1]=0 (Rs[2] unused)
    end = torch.tensor([[[9.0, ln(4), 0.0]]])                # Re[1]=ln4, Re[2]=0, Re[3]=pad 0
    off = torch.zeros(1, 3, 2, 3)
    off[0, 1, 0] = torch.tensor([0.0, 0.0, ln(2)])           # start window [0(pad), ln3, 0] + -> [0, ln3, ln2]
    off[0, 1, 1] = torch.tensor([0.0, ln(2), 0.0])           # end window [ln4, 0, 0] + -> [ln4, ln2, 0]
    one = torch.tensor([0])
    d = trident_offsets(start, end, off, one, torch.tensor([1]), one)
    # P_start = [1, 3, 2] / 6 -> d_start = (1*2 + 3*1 + 2*0) / 6; P_end = [4, 2, 1] / 7 -> d_end = (2 + 2) / 7
    assert d[0].tolist() == pytest.approx([5 / 6, 4 / 7], abs=1e-6)
    # point 0: start window [0 (pad), 0 (pad), ln3] -> P = [1, 1, 3] / 5 -> d_start = (2 + 1) / 5;
    # end window [Re0, Re1, Re2] = [9, ln4, 0] -> P proportional to [e^9, 4, 1]
    d0 = trident_offsets(start, end, off, one, one, one)
    e = [math.exp(9.0), 4.0, 1.0]
    assert d0[0].tolist() == pytest.approx([3 / 5, (e[1] + 2 * e[2]) / sum(e)], abs=1e-6)


def _trident_ref(start, end, off, b, p, c):
    nb = off.shape[-1] - 1
    length = start.shape[2]
    ws = [float(start[b, c, p - nb + j]) if p - nb + j >= 0 else 0.0 for j in range(nb + 1)]
    we = [float(end[b, c, p + j]) if p + j < length else 0.0 for j in range(nb + 1)]
    ps = torch.softmax(torch.tensor(ws, dtype=torch.float64) + off[b, p, 0].double(), 0)
    pe = torch.softmax(torch.tensor(we, dtype=torch.float64) + off[b, p, 1].double(), 0)
    return float(sum(ps[j] * (nb - j) for j in range(nb + 1))), float(sum(pe[j] * j for j in range(nb + 1)))


def test_trident_decoding_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    n, c, length, nb = 2, 3, 11, 4
    start, end = torch.randn(n, c, length, generator=g), torch.randn(n, c, length, generator=g)
    off = torch.rand(n, length, 2, nb + 1, generator=g) * 3
    b, p, cc = (torch.randint(0, k, (25,), generator=g) for k in (n, length, c))
    got = trident_offsets(start, end, off, b, p, cc)
    for k in range(25):
        assert got[k].tolist() == pytest.approx(_trident_ref(start, end, off, int(b[k]), int(p[k]), int(cc[k])),
                                                abs=1e-5)
    assert (got >= 0).all() and (got <= nb).all()


def test_decode_places_segments_on_the_level_grid():
    cfg = make_config(None, dict(num_levels=2, regression_ranges=[[0, 4], [4, 100]], num_bins=2, num_classes=2,
                                 max_seq_len=64, pre_nms_thresh=0.5))
    ln = math.log
    # packed layout: level 0 has 4 columns + gap 2; level 1 (stride 2) has 2 columns + gap 2
    points = torch.tensor([[0, 0, 4, 1], [1, 0, 4, 1], [2, 0, 4, 1], [3, 0, 4, 1], [-1, 0, 4, 1], [-1, 0, 4, 1],
                           [0, 4, 100, 2], [2, 4, 100, 2], [-1, 4, 100, 2], [-1, 4, 100, 2]], dtype=torch.float32)
    length = points.shape[0]
    cls = torch.full((1, length, 2), -10.0)
    cls[0, 7, 1] = 2.0                                        # level 1, index 1 (t = 2), class 1
    start, end = torch.zeros(1, 2, length), torch.zeros(1, 2, length)
    start[0, 1, 6] = ln(3)                                    # window of point 7: [Rs5=0(gap), Rs6=ln3, Rs7=0]
    end[0, 1, 7] = ln(4)                                      # window: [Re7=ln4, Re8=0, Re9=0]
    off = torch.zeros(1, length, 2, 3)
    off[0, 7, 0, 2] = ln(2)
    off[0, 7, 1, 1] = ln(2)
    mask = (points[:, 0] >= 0)[None]
    segs, scores, labels = decode({"cls": cls, "start": start, "end": end, "offsets": off, "mask": mask,
                                   "points": points}, cfg)
    assert labels.tolist() == [1]
    assert float(scores[0]) == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert segs[0].tolist() == pytest.approx([2 - 5 / 6 * 2, 2 + 4 / 7 * 2], abs=1e-5)


# ---------------------------------------------------------------------- label assignment
def pts(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_assign_centre_sampling():
    p = pts([[t, 0, 100, 1] for t in range(12)])
    cls, reg, w = assign_labels(p, torch.tensor([[2.0, 10.0]]), torch.tensor([1]), torch.tensor([0.5]), 3, 1.5)
    # centre 6, radius 1.5: 4.5 < t < 7.5
    assert torch.nonzero(cls[:, 1]).reshape(-1).tolist() == [5, 6, 7]
    assert cls[:, [0, 2]].sum() == 0
    assert reg[5].tolist() == [3.0, 5.0] and reg[7].tolist() == [5.0, 3.0]
    assert w.tolist() == [0.5 if t in (5, 6, 7) else 0.0 for t in range(12)]
    # a point outside the valid mask is never positive
    valid = torch.ones(12, dtype=torch.bool)
    valid[6] = False
    cls2, _, _ = assign_labels(p, torch.tensor([[2.0, 10.0]]), torch.tensor([1]), torch.ones(1), 3, 1.5, valid)
    assert torch.nonzero(cls2[:, 1]).reshape(-1).tolist() == [5, 7]


def test_assign_regression_ranges_select_the_level():
    lvl0 = [[t, 0, 4, 1] for t in range(12)]
    lvl1 = [[2 * i, 4, 8, 2] for i in range(6)]
    cls, reg, _ = assign_labels(pts(lvl0 + lvl1), torch.tensor([[0.0, 10.0]]), torch.tensor([0]), torch.ones(1), 1,
                                1.5)
    # level 0: centre points 4, 5, 6 reach 6, 5, 6 > 4; level 1: t in (2, 8) -> 4, 6 reach 6 in [4, 8]
    assert torch.nonzero(cls[:, 0]).reshape(-1).tolist() == [12 + 2, 12 + 3]
    assert reg[14].tolist() == [2.0, 3.0] and reg[15].tolist() == [3.0, 2.0]


def test_assign_shortest_wins_and_equal_lengths_are_multi_hot():
    p = pts([[5, 0, 100, 1]])
    big = 100.0
    cls, reg, w = assign_labels(p, torch.tensor([[0.0, 10.0], [3.0, 7.0]]), torch.tensor([0, 1]),
                                torch.tensor([0.9, 0.4]), 4, big)
    assert cls[0].tolist() == [0, 1, 0, 0] and reg[0].tolist() == [2.0, 2.0] and float(w[0]) == pytest.approx(0.4)
    # equal lengths (within 1e-3): classes 1, 2 (same segment) and 3 (other segment, same length)
    segs = torch.tensor([[0.0, 10.0], [3.0, 7.0], [3.0, 7.0], [2.0, 6.0005]])
    cls, reg, _ = assign_labels(p, segs, torch.tensor([0, 1, 2, 3]), torch.ones(4), 4, big)
    assert cls[0].tolist() == [0, 1, 1, 1]
    assert reg[0].tolist() in ([2.0, 2.0], pytest.approx([3.0, 1.0005]))
    # no instances: all negative
    cls, reg, w = assign_labels(p, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0), 4, 1.5)
    assert cls.sum() == 0 and w.sum() == 0


def _assign_ref(points, segs, labels, weights, num_classes, radius):
    out_cls, out_reg, out_w = [], [], []
    for t, lo, hi, s in points.tolist():
        cands = []
        for (a, b), lab, wt in zip(segs.tolist(), labels.tolist(), weights.tolist()):
            c = 0.5 * (a + b)
            if min(t - max(c - radius * s, a), min(c + radius * s, b) - t) <= 0:
                continue
            if not lo <= max(t - a, b - t) <= hi:
                continue
            cands.append((b - a, lab, (t - a) / s, (b - t) / s, wt))
        row = [0.0] * num_classes
        if cands:
            m = min(x[0] for x in cands)
            for x in cands:
                if x[0] <= m + 1e-3:
                    row[x[1]] = 1.0
            best = min(cands, key=lambda x: x[0])
            out_reg.append([best[2], best[3]])
            out_w.append(best[4])
        else:
            out_reg.append([0.0, 0.0])
            out_w.append(0.0)
        out_cls.append(row)
    return torch.tensor(out_cls), torch.tensor(out_reg), torch.tensor(out_w)


def test_assign_matches_brute_force_on_random_cases():
    cfg = make_config(None, dict(max_seq_len=128))
    model_pts = TriDet(make_config(None, dict(embed_dim=16, head_dim=16, mlp_dim=16, input_dim=4))).points(128)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        n = 12
        a = torch.rand(n, generator=g) * 120
        segs = torch.stack((a, a + 1 + torch.rand(n, generator=g).pow(3) * 90), 1).round()  # integer ends -> ties
        labels = torch.randint(0, 5, (n,), generator=g)
        weights = torch.rand(n, generator=g)
        got = assign_labels(model_pts, segs, labels, weights, 5, cfg.center_sample_radius)
        ref = _assign_ref(model_pts, segs, labels, weights, 5, cfg.center_sample_radius)
        assert torch.equal(got[0], ref[0])
        pos = ref[0].sum(1) > 0
        assert pos.any()
        # regression target / weight: those of a shortest candidate (argmin among exact ties may differ)
        assert torch.allclose(got[1][~pos], ref[1][~pos]) and torch.equal(got[2][~pos], ref[2][~pos])
        same = (got[1] - ref[1]).abs().sum(1) < 1e-4
        assert same[pos].float().mean() > 0.95


# ---------------------------------------------------------------------- losses and HPM
def _random_outputs(g, n=2, length=20, c=3, nb=4):
    return {"cls": torch.randn(n, length, c, generator=g, dtype=torch.float64),
            "start": torch.randn(n, c, length, generator=g, dtype=torch.float64),
            "end": torch.randn(n, c, length, generator=g, dtype=torch.float64),
            "offsets": torch.rand(n, length, 2, nb + 1, generator=g, dtype=torch.float64) * 2,
            "mask": torch.rand(n, length, generator=g) > 0.15}


def _loss_ref(out, cls_t, reg_t, w_t, alpha=0.25, gamma=2.0, power=0.2):
    focal_total, diou_total, npos = 0.0, 0.0, 0
    n, length, c = cls_t.shape
    for b in range(n):
        for p in range(length):
            if not out["mask"][b, p]:
                continue
            pos = float(cls_t[b, p].sum()) > 0
            npos += pos
            row = 0.0
            for k in range(c):
                x, t = float(out["cls"][b, p, k]), float(cls_t[b, p, k])
                pr = 1 / (1 + math.exp(-x))
                ce = -(t * math.log(pr) + (1 - t) * math.log(1 - pr))
                pt = pr * t + (1 - pr) * (1 - t)
                f = (alpha * t + (1 - alpha) * (1 - t)) * ce * (1 - pt) ** gamma
                if pos and t > 0:
                    lp, rp = _trident_ref(out["start"], out["end"], out["offsets"], b, p, k)
                    lg, rg = reg_t[b, p].tolist()
                    inter = min(lp, lg) + min(rp, rg)
                    iou = inter / (lp + rp + lg + rg - inter)
                    f *= iou**power
                    rho = 0.5 * (rp - lp - rg + lg)
                    diou_total += float(w_t[b, p]) * (1 - iou + (rho / (max(lp, lg) + max(rp, rg))) ** 2)
                row += f
            focal_total += row * (float(w_t[b, p]) if pos else 1.0)
    return focal_total, diou_total, npos


def _random_targets(g, out, c=3):
    n, length = out["mask"].shape
    cls_t = (torch.rand(n, length, c, generator=g) > 0.8).double()
    cls_t[:, :4] = 0  # some negative rows
    reg_t = torch.rand(n, length, 2, generator=g, dtype=torch.float64) * 4 + 0.1
    return cls_t, reg_t


def test_loss_with_unit_weights_matches_plain_tridet_loss():
    g = torch.Generator().manual_seed(2)
    out = _random_outputs(g)
    cls_t, reg_t = _random_targets(g, out)
    ones = torch.ones(cls_t.shape[:2], dtype=torch.float64)
    focal, diou, npos = detection_loss(out, cls_t, reg_t, ones)
    rf, rd, rn = _loss_ref(out, cls_t, reg_t, ones)
    assert npos == rn > 0
    assert float(focal) == pytest.approx(rf, rel=1e-9) and float(diou) == pytest.approx(rd, rel=1e-9)


def test_hpm_weights_scale_exactly_the_positive_point_terms():
    g = torch.Generator().manual_seed(3)
    out = _random_outputs(g)
    cls_t, reg_t = _random_targets(g, out)
    w = torch.rand(cls_t.shape[:2], generator=g, dtype=torch.float64) * 2
    focal, diou, _ = detection_loss(out, cls_t, reg_t, w)
    rf, rd, _ = _loss_ref(out, cls_t, reg_t, w)
    assert float(focal) == pytest.approx(rf, rel=1e-9) and float(diou) == pytest.approx(rd, rel=1e-9)
    # doubling every weight doubles the positive part and leaves the background part alone
    ones = torch.ones_like(w)
    f1, d1, _ = detection_loss(out, cls_t, reg_t, ones)
    f2, d2, _ = detection_loss(out, cls_t, reg_t, 2 * ones)
    f0, d0, _ = detection_loss(out, cls_t, reg_t, 0 * ones)
    assert float(d0) == 0 and float(d2) == pytest.approx(2 * float(d1))
    assert float(f2 - f0) == pytest.approx(2 * float(f1 - f0)) and float(f1 - f0) > 0 and float(f0) > 0


def test_diou_hand_values():
    loss, iou = diou_loss_1d(torch.tensor([[1.0, 1.0], [2.0, 0.0]]), torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
    assert iou.tolist() == pytest.approx([1.0, 0.0])
    # second: pred [t-2, t], gt [t, t+2]: enclosing 4, centre distance 2 -> 1 - 0 + (2/4)^2
    assert loss.tolist() == pytest.approx([0.0, 1.25])


def test_training_sample_weights_follow_hpm_switch(tiny):
    v = tiny.subset(tiny.train_subset)[0]
    ins = Instances.create(torch.tensor(v.segments, dtype=torch.float32), torch.tensor(v.labels),
                           weights=torch.linspace(0.2, 0.8, len(v.labels)))
    cfg = small_cfg()
    _, segs, labels, w = make_sample(tiny, v, ins, cfg, None, hpm=True)
    assert torch.equal(w, ins.weights) and torch.equal(labels, ins.labels)
    _, _, _, w1 = make_sample(tiny, v, ins, cfg, None, hpm=False)
    assert torch.equal(w1, torch.ones(len(ins)))
    # seconds -> grid of the down-sampled features: (t * fps - 0.5 * frames') / stride'
    stride, frames = effective_grid(tiny.feat_stride, tiny.num_frames, 2)
    assert (stride, frames) == (8, 20)
    assert segs[0].tolist() == pytest.approx([(s * v.fps - 10) / 8 for s in v.segments[0].tolist()], abs=1e-4)


# ---------------------------------------------------------------------- model
def test_padding_does_not_change_outputs():
    cfg = make_config(None, dict(input_dim=8, num_classes=3, embed_dim=32, head_dim=32, mlp_dim=32,
                                 init_conv_vars=0.1, max_seq_len=256))
    torch.manual_seed(0)
    model = TriDet(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # make norms and biases non-trivial
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(1, 8, 70)
    outs = []
    for length in (96, 160):
        inp = torch.zeros(1, 8, length)
        inp[0, :, :70] = x
        mask = torch.zeros(1, length, dtype=torch.bool)
        mask[0, :70] = True
        with torch.no_grad():
            o = model(inp, mask)
        v = o["mask"][0]
        outs.append({k: o[k][0][v] for k in ("cls", "offsets")} | {k: o[k][0][:, v] for k in ("start", "end")}
                    | {"points": o["points"][v]})
    for k in outs[0]:
        assert torch.allclose(outs[0][k], outs[1][k], atol=1e-5), k
    # valid points: ceil(70 / s) per level
    assert outs[0]["points"].shape[0] == sum(math.ceil(70 / s) for s in cfg.strides)


def test_tridet_padding_rule_without_pad_invariance():
    from noco.detector.infer import padded_length

    inv = make_config(None, dict(max_seq_len=256))
    raw = make_config(None, dict(max_seq_len=256, pad_invariant=False))
    assert [padded_length(t, inv) for t in (1, 32, 33, 300)] == [32, 32, 64, 320]
    assert [padded_length(t, raw) for t in (1, 33, 300)] == [256, 256, 320]  # TriDet: max_seq_len at least
    assert padded_length(100, raw, training=True) == 256 and padded_length(100, inv, training=True) == 128
    # statistics over the padded length: the output depends on the amount of padding
    cfg = make_config(None, dict(input_dim=8, num_classes=3, embed_dim=16, head_dim=16, mlp_dim=16,
                                 init_conv_vars=0.1, max_seq_len=256, pad_invariant=False))
    torch.manual_seed(0)
    model = TriDet(cfg).eval()
    x = torch.randn(1, 8, 40)
    outs = []
    for length in (64, 128):
        inp = torch.nn.functional.pad(x, (0, length - 40))
        with torch.no_grad():
            outs.append(model(inp, torch.arange(length)[None] < 40)["cls"][0, :40])
    assert not torch.allclose(outs[0], outs[1], atol=1e-4)


def test_zero_init_conv_vars_keeps_sgp_mixing_at_zero():
    cfg = make_config(None, dict(input_dim=8, num_classes=3, embed_dim=16, head_dim=16, mlp_dim=16,
                                 max_seq_len=64, drop_path=0.0))
    torch.manual_seed(0)
    model = TriDet(cfg)
    x, mask = torch.randn(2, 8, 64), torch.ones(2, 64, dtype=torch.bool)
    out = model(x, mask)
    (out["cls"].sum() + out["offsets"].sum()).backward()
    for blk in list(model.stem) + list(model.branch):
        for conv in (blk.psi, blk.fc, blk.convw, blk.convkw, blk.global_fc):
            assert conv.weight.abs().sum() == 0 and conv.weight.grad.abs().sum() == 0
    assert model.stem[0].mlp[0].weight.grad.abs().sum() > 0


def test_paper_preset_matches_published_size():
    cfg = make_config("paper", {"num_classes": 20})
    assert cfg.long_kernel == 11 and cfg.strides == [1, 2, 4, 8, 16, 32]
    n = sum(p.numel() for p in TriDet(cfg).parameters())
    assert abs(n - 16.0e6) / 16.0e6 < 0.01  # published ~16.0 M


def test_config_validation():
    with pytest.raises(NocoError, match="unknown detector config option"):
        make_config("cpu", {"nope": 1})
    with pytest.raises(NocoError, match="max_seq_len"):
        make_config("cpu", {"max_seq_len": 1000})
    with pytest.raises(NocoError, match="sgp_w"):
        make_config("cpu", {"sgp_w": 2})
    assert DetectorConfig.from_dict(make_config("paper").to_dict()) == make_config("paper")
    assert make_config("paper").embed_dim == 512 and make_config("cpu").embed_dim == 128


def test_learning_rate_schedule():
    cfg = make_config(None, dict(epochs=4, warmup_epochs=2, lr=1.0, eta_min=0.0))
    lrs = [learning_rate(cfg, s, 10) for s in range(40)]
    assert lrs[0] == pytest.approx(0.05) and lrs[19] == pytest.approx(1.0) and lrs[20] == pytest.approx(1.0)
    assert lrs[30] == pytest.approx(0.5) and all(a >= b for a, b in zip(lrs[20:], lrs[21:]))


def test_downsample_features_averages_windows():
    x = torch.arange(10.0)[:, None].repeat(1, 2)
    y = downsample_features(x, 4)
    assert y[:, 0].tolist() == [1.5, 5.5, 8.5]


# ---------------------------------------------------------------------- data checks
def test_bad_training_labels_name_the_video_and_field():
    bad = Instances.create(torch.tensor([[1.0, 2.0]]), torch.tensor([25]))
    with pytest.raises(DataError, match="video v1: field 'label'"):
        check_labels(bad, "v1", 20)
    bad = Instances.create(torch.tensor([[1.0, float("nan")]]), torch.tensor([1]))
    with pytest.raises(DataError, match="video v2: field 'segment'"):
        check_labels(bad, "v2", 20)
    bad = Instances.create(torch.tensor([[1.0, 2.0]]), torch.tensor([1]), weights=torch.tensor([-1.0]))
    with pytest.raises(DataError, match="field 'weight'"):
        check_labels(bad, "v3", 20)


def test_truncation_keeps_well_covered_instances(tiny):
    v = tiny.subset(tiny.train_subset)[0]
    ins = tiny.ground_truth(tiny.train_subset)[v.id]
    cfg = small_cfg(max_seq_len=64, input_downsample=1)
    stride, frames = effective_grid(tiny.feat_stride, tiny.num_frames, 1)
    full = (torch.tensor(v.segments) * v.fps - 0.5 * frames) / stride
    for k in range(5):
        x, segs, labels, _ = make_sample(tiny, v, ins, cfg, torch.Generator().manual_seed(k))
        assert x.shape == (128, 64)
        assert len(segs) >= 1 and (segs[:, 0] >= -2 - 1e-5).all() and (segs[:, 1] <= 66 + 1e-5).all()
        # every kept segment is a clipped piece of an original covering >= half of it
        lens = full[:, 1] - full[:, 0]
        for s in segs:
            ok = [(s[1] - s[0]) >= 0.5 * float(lens[i]) - 1e-4 and float(s[1] - s[0]) <= float(lens[i]) + 1e-4
                  for i in range(len(full))]
            assert any(ok)


# ---------------------------------------------------------------------- training and inference
def _ap50(gt: dict, preds: dict, num_classes: int) -> float:
    from noco.eval.detection import evaluate

    return evaluate(gt, preds, num_classes, [0.5])["average"]


def test_overfits_a_few_videos_and_detects_in_seconds(tiny, tmp_path):
    gt = {k: v for k, v in tiny.ground_truth(tiny.train_subset).items() if k in OVERFIT_VIDEOS}
    cfg = small_cfg(epochs=25, warmup_epochs=2, drop_path=0.0, input_noise=0.0, crop_ratio=[], lr=5e-3,
                    embed_dim=48, head_dim=48, ema_decay=0.8)
    sub = _Restricted(tiny, OVERFIT_VIDEOS)
    ckpt = train_detector(sub, StaticLabels(gt), cfg, tmp_path / "w", seed=0, log_every=0)
    preds = predict_detector(ckpt, sub, tiny.train_subset)
    assert set(preds) == set(OVERFIT_VIDEOS)
    for vid, p in preds.items():
        dur = tiny.videos[vid].duration
        assert len(p) <= cfg.max_segments and (p.segments >= 0).all() and (p.segments <= dur).all()
        assert (p.segments[:, 1] >= p.segments[:, 0]).all() and (p.scores[:-1] >= p.scores[1:]).all()
    assert _ap50(gt, preds, tiny.num_classes) >= 0.95


from conftest import Restricted as _Restricted  # noqa: E402


class _Interrupt(StaticLabels):
    def __init__(self, labels, at):
        super().__init__(labels)
        self.at = at

    def labels_for(self, video_ids, step):
        if step == self.at:
            raise KeyboardInterrupt
        return super().labels_for(video_ids, step)


def test_resume_continues_bit_for_bit(tiny, tmp_path):
    gt = tiny.ground_truth(tiny.train_subset)
    sub = _Restricted(tiny, OVERFIT_VIDEOS)
    cfg = small_cfg(epochs=2, batch_size=2)  # 2 steps per epoch, drop-path, noise, crops all on
    straight = load_checkpoint(train_detector(sub, StaticLabels(gt), cfg, tmp_path / "a", seed=3, log_every=0))
    with pytest.raises(KeyboardInterrupt):
        train_detector(sub, _Interrupt(gt, at=2), cfg, tmp_path / "b", seed=3, log_every=0)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    resumed = load_checkpoint(train_detector(sub, StaticLabels(gt), cfg, tmp_path / "b", seed=3, resume=True,
                                             log_every=0))
    assert resumed["step"] == straight["step"] == 4
    for key in ("model", "ema"):
        for name, t in straight[key].items():
            assert torch.equal(t, resumed[key][name]), (key, name)
    for k, st in straight["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg_sq"], resumed["optimizer"]["state"][k]["exp_avg_sq"])
    assert straight["loss_norm"] == resumed["loss_norm"]
    # a different config refuses to resume
    with pytest.raises(NocoError, match="different config"):
        train_detector(sub, StaticLabels(gt), small_cfg(epochs=2, lr=1e-2), tmp_path / "b", seed=3, resume=True)


def test_prefetching_changes_nothing(tiny, tmp_path):
    """Features read ahead in a thread (the default) train the very same model as reading at use."""
    gt = tiny.ground_truth(tiny.train_subset)
    sub = _Restricted(tiny, OVERFIT_VIDEOS)
    cfg = small_cfg(epochs=2, batch_size=2)
    ahead = load_checkpoint(train_detector(sub, StaticLabels(gt), cfg, tmp_path / "a", seed=1, log_every=0))
    at_use = load_checkpoint(train_detector(sub, StaticLabels(gt), cfg, tmp_path / "b", seed=1, log_every=0,
                                            prefetch=0))
    for name, t in ahead["model"].items():
        assert torch.equal(t, at_use["model"][name]), name


def test_init_from_checkpoint_and_detect_api(tiny, tmp_path):
    gt = tiny.ground_truth(tiny.train_subset)
    sub = _Restricted(tiny, OVERFIT_VIDEOS[:2])
    cfg = small_cfg(epochs=1)
    ck = train_detector(sub, StaticLabels(gt), cfg, tmp_path / "t", log_every=0)
    teacher = load_checkpoint(ck)
    assert any(not torch.equal(t, teacher["ema"][k]) for k, t in teacher["model"].items())
    from noco.detector.infer import load_detector

    model, _ = load_detector(ck)
    assert all(torch.equal(a, teacher["ema"][k]) for k, a in model.state_dict().items())
    v = tiny.videos[OVERFIT_VIDEOS[0]]
    meta = {"fps": v.fps, "duration": v.duration, "feat_stride": 4, "num_frames": 16}
    dets = detect(model, tiny.features_tensor(v.id), meta)
    assert isinstance(dets, Instances) and len(dets) > 0 and float(dets.segments.max()) <= v.duration
    with pytest.raises(NocoError, match="do not fit"):
        detect(model, torch.zeros(10, 7), meta)
    student = train_detector(sub, StaticLabels(gt), small_cfg(epochs=1, lr=1e-12, eta_min=0.0), tmp_path / "s",
                             init=ck, log_every=0)
    st = load_checkpoint(student)["model"]  # lr ~0: the student stays where it started, at the teacher's EMA
    assert max(float((st[k] - teacher["ema"][k]).abs().max()) for k in st) < 1e-6


def test_validation_split_logs_map_on_held_out_videos(tiny, tmp_path):
    gt = tiny.ground_truth(tiny.train_subset)
    sub = _Restricted(tiny, OVERFIT_VIDEOS)
    ck = load_checkpoint(train_detector(sub, StaticLabels(gt), small_cfg(epochs=1), tmp_path / "v",
                                        val_fraction=0.5, log_every=0))
    assert ck["step"] == 1  # 2 of the 4 videos train, batch 2
    # the checkpoint names the held-out videos (noco.eval.missed reads them): 2 of the 4
    assert len(ck["val_videos"]) == 2 and set(ck["val_videos"]) <= set(OVERFIT_VIDEOS)
    assert len(ck["history"]) == 1 and 0.0 <= ck["history"][0]["val_map"] <= 1.0
    with pytest.raises(NocoError, match="val_fraction"):
        train_detector(sub, StaticLabels(gt), small_cfg(epochs=1), tmp_path / "v", val_fraction=0.0, resume=True)


# ---------------------------------------------------------------------- command line
def test_cli_train_and_predict(tiny, tmp_path, capsys):
    labels = tmp_path / "labels.json"
    vids = OVERFIT_VIDEOS[:2]
    gt = tiny.ground_truth(tiny.train_subset)
    labels.write_text(json.dumps({"results": {
        vid: [{"segment": s, "label": tiny.classes[c], "weight": 0.5}
              for s, c in zip(gt[vid].segments.tolist(), gt[vid].labels.tolist())] for vid in vids}}))
    sets = [a for k, v in SMALL.items() if k not in ("epochs",)
            for a in ("--set", f"{k}={json.dumps(v)}")]
    rc = cli_main(["detector", "train", "--data", str(tiny.root), "--out", str(tmp_path / "w"), "--labels",
                   str(labels), "--epochs", "1", *sets])
    assert rc == 0
    ckpt = tmp_path / "w" / "checkpoint.pt"
    assert capsys.readouterr().out.strip() == str(ckpt)
    ck = load_checkpoint(ckpt)
    assert ck["epoch"] == 1 and ck["config"]["embed_dim"] == 32 and ck["classes"] == tiny.classes
    rc = cli_main(["detector", "predict", "--ckpt", str(ckpt), "--data", str(tiny.root), "--out",
                   str(tmp_path / "p.json")])
    assert rc == 0
    preds = read_instances(tmp_path / "p.json", tiny.classes)
    assert set(preds) == {v.id for v in tiny.subset(tiny.test_subset)}
    # errors are one line, exit code 2
    (tmp_path / "bad.json").write_text(json.dumps({"results": {vids[0]: [{"segment": [3, 1], "label": "Billiards"}]}}))
    rc = cli_main(["detector", "train", "--data", str(tiny.root), "--out", str(tmp_path / "w2"), "--labels",
                   str(tmp_path / "bad.json")])
    assert rc == 2 and "ends before it starts" in capsys.readouterr().err
    rc = cli_main(["detector", "predict", "--ckpt", str(tmp_path / "missing.pt"), "--data", str(tiny.root),
                   "--out", str(tmp_path / "q.json")])
    assert rc == 2 and "checkpoint not found" in capsys.readouterr().err
