"""CALA (Algorithm 1) and the row-a confidence filter: hand-computed cases and a brute-force reference."""

import math
import random

import pytest
import torch

from noco.errors import DataError, NocoError
from noco.labels.cala import baseline_filter, baseline_filter_all, cala, cala_all
from noco.labels.instances import Instances


def mk(rows):
    """rows: (start, end, label, score[, weight])"""
    segs = [[r[0], r[1]] for r in rows]
    labs = [r[2] for r in rows]
    scs = [r[3] for r in rows]
    wts = [r[4] if len(r) > 4 else 1.0 for r in rows]
    return Instances.create(torch.tensor(segs, dtype=torch.float32).reshape(-1, 2), torch.tensor(labs),
                            torch.tensor(scs), torch.tensor(wts))


# A seed [10,20] s .9; B [11,21] s .6 (suppressed by A, votes); C [9,19] s .3 (low confidence, votes);
# E [15,30] s .4 (IoU .25 with A: not associated); F [40,45] s .7 (isolated seed); G [60,62] s .45
# (low confidence, alone); H [10,20] class 1 s .55 (seed of its own class despite overlapping A);
# D [12,20] class 1 s .4 (votes for H only).
POOL = mk([
    (11, 21, 0, 0.6), (10, 20, 0, 0.9), (9, 19, 0, 0.3), (15, 30, 0, 0.4),
    (40, 45, 0, 0.7), (60, 62, 0, 0.45), (10, 20, 1, 0.55), (12, 20, 1, 0.4),
])


def test_cala_hand_computed_iou_weights():
    out = cala(POOL)
    assert len(out) == 3
    # seeds in descending score order: A, F, H
    assert out.labels.tolist() == [0, 0, 1]
    assert out.scores.tolist() == pytest.approx([0.9, 0.7, 0.55])
    # A: w = .9*1, .6*9/11, .3*9/11; sum 18/11; starts (10, 11, 9), ends (20, 21, 19)
    assert out.segments[0].tolist() == pytest.approx([182.7 / 18, 362.7 / 18], abs=1e-5)  # 10.15, 20.15
    assert float(out.weights[0]) == pytest.approx(6 / 11, abs=1e-6)                        # mean of 3 weights
    # F isolated: unchanged, weight = its own s * IoU = .7
    assert out.segments[1].tolist() == pytest.approx([40.0, 45.0])
    assert float(out.weights[1]) == pytest.approx(0.7)
    # H: w = .55, .4*.8 = .32; start (5.5 + 3.84)/.87, end 20, weight .87/2
    assert out.segments[2].tolist() == pytest.approx([9.34 / 0.87, 20.0], abs=1e-5)
    assert float(out.weights[2]) == pytest.approx(0.435, abs=1e-6)
    # instance_weight "max": the largest Eq. 1 weight of each set (A .9, F .7, H .55); same boundaries
    mx = cala(POOL, instance_weight="max")
    assert mx.weights.tolist() == pytest.approx([0.9, 0.7, 0.55])
    assert torch.equal(mx.segments, out.segments)
    # without the seed in its set, A's largest weight is B's .6 * 9/11
    assert float(cala(POOL, instance_weight="max", include_seed=False).weights[0]) == pytest.approx(5.4 / 11)
    with pytest.raises(NocoError, match="instance weight"):
        cala(POOL, instance_weight="median")


def test_cala_score_vote():
    out = cala(POOL, weight="vote")
    # A: w = .9/1.8, .6/1.8, .3/1.8 -> start 5 + 11/3 + 9/6, end 10 + 7 + 19/6, weight mean = 1/3
    assert out.segments[0].tolist() == pytest.approx([5 + 11 / 3 + 1.5, 17 + 19 / 6], abs=1e-5)
    assert float(out.weights[0]) == pytest.approx(1 / 3, abs=1e-6)
    assert out.segments[1].tolist() == pytest.approx([40.0, 45.0])
    assert float(out.weights[1]) == pytest.approx(1.0)


def test_cala_without_seed_in_its_set():
    out = cala(POOL, include_seed=False)
    # A's set = {B, C}: w = 5.4/11, 2.7/11
    assert out.segments[0].tolist() == pytest.approx([83.7 / 8.1, 164.7 / 8.1], abs=1e-5)
    assert float(out.weights[0]) == pytest.approx(8.1 / 11 / 2, abs=1e-6)
    # F has an empty set: kept unchanged, weight = its score
    assert out.segments[1].tolist() == pytest.approx([40.0, 45.0])
    assert float(out.weights[1]) == pytest.approx(0.7)


def test_low_confidence_never_seeds_but_votes():
    low = mk([(0, 10, 0, 0.49), (1, 11, 0, 0.3)])
    assert len(cala(low)) == 0
    # the same proposals move a confident seed
    seeded = Instances.cat([low, mk([(0.5, 10.5, 0, 0.8)])])
    out = cala(seeded)
    assert len(out) == 1
    assert float(out.segments[0, 0]) != pytest.approx(0.5)
    # thresholds are inclusive for the seed: score exactly .5 seeds
    assert len(cala(mk([(0, 10, 0, 0.5)]))) == 1


def test_cala_thresholds_are_options():
    # with iou_thresh .9, A's neighbours (IoU 9/11) no longer vote -> A unchanged with weight .9
    out = cala(POOL, iou_thresh=0.9)
    assert out.segments[0].tolist() == pytest.approx([10.0, 20.0])
    assert float(out.weights[0]) == pytest.approx(0.9)
    # with nms .9, B (IoU 9/11 with A) becomes a seed too
    assert len(cala(POOL, nms_thresh=0.9)) == 4
    # conf .8: only A seeds
    assert len(cala(POOL, conf_thresh=0.8)) == 1
    # association is strict: IoU exactly .6 does not vote
    edge = cala(mk([(0, 10, 0, 0.9), (0, 6, 0, 0.3)]))
    assert edge.segments.tolist() == [[0.0, 10.0]] and float(edge.weights[0]) == pytest.approx(0.9)
    assert cala(mk([(0, 10, 0, 0.9), (0, 6.5, 0, 0.3)])).segments[0, 1] < 10


def _tiou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def _ref_cala(rows, conf, nms, iou_thr, weight):
    cand = sorted([r for r in rows if r[3] >= conf], key=lambda r: -r[3])
    seeds = []
    for r in cand:
        if all(not (s[2] == r[2] and _tiou(s, r) > nms) for s in seeds):
            seeds.append(r)
    out = []
    for s in seeds:
        assoc = [o for o in rows if o[2] == s[2] and (_tiou(s, o) > iou_thr or o is s)]
        if weight == "iou":
            w = [o[3] * _tiou(s, o) for o in assoc]
        else:
            tot = sum(o[3] for o in assoc)
            w = [o[3] / tot for o in assoc]
        sw = sum(w)
        out.append((sum(wi * o[0] for wi, o in zip(w, assoc)) / sw,
                    sum(wi * o[1] for wi, o in zip(w, assoc)) / sw, s[2], s[3], sw / len(assoc)))
    return out


@pytest.mark.parametrize("weight", ["iou", "vote"])
def test_cala_matches_brute_force(weight):
    rng = random.Random(7)
    for _ in range(20):
        rows = []
        for _ in range(rng.randint(0, 40)):
            s = rng.uniform(0, 100)
            rows.append((s, s + rng.uniform(0.5, 15), rng.randint(0, 2), rng.random()))
        ins = mk(rows) if rows else Instances.empty()
        # reference on the float32-rounded values the function sees
        rows32 = [(float(a), float(b), int(c), float(d)) for (a, b), c, d in
                  zip(ins.segments.tolist(), ins.labels.tolist(), ins.scores.tolist())]
        got = cala(ins, conf_thresh=0.5, nms_thresh=0.45, iou_thresh=0.6, weight=weight)
        ref = _ref_cala(rows32, 0.5, 0.45, 0.6, weight)
        assert len(got) == len(ref)
        for g, r in zip(range(len(got)), ref):
            assert got.segments[g].tolist() == pytest.approx([r[0], r[1]], abs=1e-4)
            assert int(got.labels[g]) == r[2]
            assert float(got.scores[g]) == pytest.approx(r[3])
            assert float(got.weights[g]) == pytest.approx(r[4], abs=1e-5)


def test_baseline_filter():
    pool = mk([(10, 20, 0, 0.9, 0.2), (11, 21, 0, 0.8), (30, 40, 0, 0.5), (30, 40, 1, 0.51), (50, 60, 0, 0.6)])
    out = baseline_filter(pool)
    # .8 suppressed by .9 (IoU 9/11), .5 is not > .5; class 1 kept; weights all 1
    assert out.segments.tolist() == [[10, 20], [50, 60], [30, 40]]
    assert out.scores.tolist() == pytest.approx([0.9, 0.6, 0.51])
    assert out.weights.tolist() == [1.0, 1.0, 1.0]
    assert out.labels.tolist() == [0, 0, 1]
    assert len(baseline_filter(Instances.empty())) == 0
    both = baseline_filter_all({"a": pool, "b": Instances.empty()})
    assert set(both) == {"a", "b"} and len(both["a"]) == 3


def test_cala_all_and_bad_input_names_the_video():
    res = cala_all({"v1": POOL, "v2": Instances.empty()}, conf_thresh=0.8)
    assert len(res["v1"]) == 1 and len(res["v2"]) == 0
    bad = mk([(10, 20, 0, 0.9), (5, 3, 0, 0.8)])
    with pytest.raises(DataError, match="video v7.*segment.*ends before it starts"):
        cala_all({"v7": bad})
    nan = mk([(10, 20, 0, float("nan"))])
    with pytest.raises(DataError, match="video v8.*score"):
        cala_all({"v8": nan})
    with pytest.raises(NocoError, match="unknown association weight"):
        cala(POOL, weight="mean")


def test_zero_length_proposals_are_ignored():
    pool = Instances.cat([POOL, mk([(10, 10, 0, 0.95)])])
    out = cala(pool)
    assert all(math.isfinite(v) for v in out.segments.flatten().tolist())
    assert out.segments[0].tolist() == pytest.approx([182.7 / 18, 362.7 / 18], abs=1e-5)


def test_cala_diagnosis_separates_shared_from_independent_errors():
    """Neighbours that err on both sides of the truth: CALA lands closer than the seed; neighbours
    that share the seed's error: correlation 1 and no gain."""
    from noco.labels.cala_diagnosis import diagnose
    from noco.labels.instances import Instances

    gt = {}
    pool_ind, pool_shared = {}, {}
    for k, off in enumerate([0.4, -0.3, 0.5, -0.6]):
        vid = f"v{k}"
        gt[vid] = Instances.create(torch.tensor([[10.0, 20.0]]), torch.tensor([0]))
        seed = [10.0 + off, 20.0 + off]
        # independent: two neighbours on either side of the truth, centred on it
        ind = [seed, [10.0 - off, 20.0 - off], [10.0, 20.0]]
        # shared: neighbours with the seed's error, slightly wider
        shared = [seed, [10.0 + off - 0.1, 20.0 + off + 0.1], [10.0 + off + 0.1, 20.0 + off - 0.1]]
        for pool, segs in ((pool_ind, ind), (pool_shared, shared)):
            pool[vid] = Instances.create(torch.tensor(segs), torch.zeros(3, dtype=torch.long),
                                         torch.tensor([0.9, 0.6, 0.6]))
    a = diagnose(pool_ind, gt)
    b = diagnose(pool_shared, gt)
    assert a["seeds"] == b["seeds"] == 4
    assert a["cala"]["abs_start"] < a["seed"]["abs_start"] and a["seed_closer_than_cala"] == 0.0
    assert b["corr_start"] > 0.99
    assert abs(b["cala"]["abs_start"] - b["seed"]["abs_start"]) < 0.02


def test_cala_conf_sweep_trades_precision_for_recall():
    """A correct low-scoring proposal joins the labels only below its score; a wrong one costs
    precision. Hand-made: 2 instances, a confident correct proposal, a 0.35 correct one, a 0.25 wrong one."""
    from noco.labels.cala_diagnosis import conf_sweep

    gt = {"v": Instances.create(torch.tensor([[10.0, 20.0], [40.0, 41.5]]), torch.tensor([0, 0]))}
    pool = {"v": Instances.create(torch.tensor([[10.0, 20.0], [40.0, 41.5], [60.0, 70.0]]),
                                  torch.zeros(3, dtype=torch.long), torch.tensor([0.9, 0.35, 0.25]))}
    rows = conf_sweep(pool, gt, {"v": 100.0}, 1, [0.5, 0.3, 0.2])
    assert [r["labels"] for r in rows] == [1, 2, 3]
    assert [r["recall"] for r in rows] == [0.5, 1.0, 1.0]
    assert [r["precision"] for r in rows] == pytest.approx([1.0, 1.0, 2 / 3])
    assert rows[0]["recall_short"] == 0.0 and rows[1]["recall_short"] == 1.0  # the 1.5 s instance


def test_pool_coverage_by_length():
    """A 1 s instance covered only by a 0.2 proposal, a 10 s one by 0.9 and 0.4 proposals, a 3 s
    one by a proposal of another class (not covered)."""
    from noco.labels.cala_diagnosis import pool_coverage

    gt = {"v": Instances.create(torch.tensor([[5.0, 6.0], [20.0, 30.0], [40.0, 43.0]]), torch.tensor([0, 0, 0]))}
    pool = {"v": Instances.create(torch.tensor([[5.0, 6.1], [20.0, 30.0], [21.0, 30.0], [40.0, 43.0]]),
                                  torch.tensor([0, 0, 0, 1]), torch.tensor([0.2, 0.9, 0.4, 0.8]))}
    c = pool_coverage(pool, gt)
    assert c["short"] == {"instances": 1, "covered": 1.0, "median_best_score": pytest.approx(0.2)}
    assert c["long"] == {"instances": 1, "covered": 1.0, "median_best_score": pytest.approx(0.9)}
    assert c["medium"] == {"instances": 1, "covered": 0.0, "median_best_score": None}
