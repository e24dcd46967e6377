"""noco.eval: detection mAP against a plain-Python ActivityNet reference and hand-computed cases;
pseudo-label quality metrics on hand-computed cases; the `noco eval` command."""

import json
import math

import pytest
import torch

from noco.errors import DataError, NocoError
from noco.eval.detection import evaluate, parse_thresholds
from noco.labels.instances import Instances


def ins(rows, scores=None):
    """rows: [(start, end, label)]"""
    if not rows:
        return Instances.empty()
    segs = [[s, e] for s, e, _ in rows]
    labels = [c for _, _, c in rows]
    return Instances.create(segs, labels, None if scores is None else torch.tensor(scores, dtype=torch.float32))


# ----------------------------------------------------------------------------- reference
def ref_iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def ref_evaluate(gt, preds, num_classes, thresholds):
    """Straightforward ActivityNet detection AP, one prediction at a time."""
    gts = []  # (video, class, seg), duplicates removed
    for v, g in gt.items():
        for seg, c in zip(g.segments.double().tolist(), g.labels.tolist()):
            if any(v2 == v and c2 == c and abs(s2[0] - seg[0]) <= 1e-3 and abs(s2[1] - seg[1]) <= 1e-3
                   for v2, c2, s2 in gts):
                continue
            gts.append((v, c, seg))
    ps = []
    for v, p in preds.items():
        for seg, c, s in zip(p.segments.double().tolist(), p.labels.tolist(), p.scores.double().tolist()):
            ps.append((v, c, seg, s))
    out = {}
    for c in range(num_classes):
        cg = [(i, v, seg) for i, (v, cc, seg) in enumerate(gts) if cc == c]
        if not cg:
            continue
        cp = sorted([p for p in ps if p[1] == c], key=lambda p: -p[3])  # stable
        aps = []
        for t in thresholds:
            used = set()
            tp = []
            for v, _, seg, _ in cp:
                cand = sorted([(ref_iou(seg, gseg), i) for i, gv, gseg in cg if gv == v], key=lambda x: -x[0])
                hit = 0
                for iou, i in cand:
                    if iou < t:
                        break
                    if i in used:
                        continue
                    used.add(i)
                    hit = 1
                    break
                tp.append(hit)
            npos = len(cg)
            prec, rec, ctp = [], [], 0
            for k, h in enumerate(tp):
                ctp += h
                prec.append(ctp / (k + 1))
                rec.append(ctp / npos)
            mprec = [0.0] + prec + [0.0]
            mrec = [0.0] + rec + [1.0]
            for i in range(len(mprec) - 2, -1, -1):
                mprec[i] = max(mprec[i], mprec[i + 1])
            aps.append(sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]))
        out[c] = aps
    m = [sum(out[c][k] for c in out) / len(out) for k in range(len(thresholds))]
    return m, out


def random_case(seed, num_videos=6, num_classes=4, preds_per_video=60):
    g = torch.Generator().manual_seed(seed)
    gt, preds = {}, {}
    for v in range(num_videos):
        ng = int(torch.randint(0, 7, (1,), generator=g))
        start = torch.rand(ng, generator=g) * 80
        length = torch.rand(ng, generator=g) * 15 + 0.5
        lab = torch.randint(0, num_classes, (ng,), generator=g)
        gsegs = torch.stack([start, start + length], 1)
        if ng >= 2 and seed % 2 == 0:  # a near-duplicate ground truth (within 1e-3 s)
            gsegs = torch.cat([gsegs, gsegs[:1] + 0.0005])
            lab = torch.cat([lab, lab[:1]])
        gt[f"v{v}"] = Instances.create(gsegs, lab)
        n = preds_per_video
        near = torch.randint(0, max(ng, 1), (n,), generator=g)
        jitter = torch.randn(n, 2, generator=g) * 2.0
        psegs = gsegs[near] + jitter if ng else torch.rand(n, 2, generator=g) * 80
        rnd = torch.rand(n, generator=g) < 0.3
        psegs = torch.where(rnd[:, None], torch.rand(n, 2, generator=g) * 80, psegs)
        psegs = torch.sort(psegs, 1).values
        plab = torch.where(torch.rand(n, generator=g) < 0.8, lab[near] if ng else torch.zeros(n, dtype=torch.long),
                           torch.randint(0, num_classes, (n,), generator=g))
        scores = torch.round(torch.rand(n, generator=g) * 20) / 20  # ties on purpose
        preds[f"v{v}"] = Instances.create(psegs, plab, scores)
    return gt, preds


# ----------------------------------------------------------------------------- detection
THR = [0.1, 0.3, 0.5, 0.7]


@pytest.mark.parametrize("seed", range(8))
def test_evaluate_matches_reference(seed):
    gt, preds = random_case(seed)
    res = evaluate(gt, preds, 4, THR)
    m, per = ref_evaluate(gt, preds, 4, THR)
    assert res["tiou"] == THR
    assert set(res["per_class"]) == set(per)
    for c in per:
        assert res["per_class"][c] == pytest.approx(per[c], abs=1e-6)
    assert res["mAP"] == pytest.approx(m, abs=1e-6)
    assert res["average"] == pytest.approx(sum(m) / len(m), abs=1e-6)


def test_perfect_predictions_give_one():
    gt = {"a": ins([(0, 10, 0), (20, 30, 1)]), "b": ins([(5, 6, 1)])}
    preds = {"a": ins([(0, 10, 0), (20, 30, 1)], [0.9, 0.8]), "b": ins([(5, 6, 1)], [0.7])}
    res = evaluate(gt, preds, 3, [0.5, 0.95])
    assert res["mAP"] == [1.0, 1.0] and res["average"] == 1.0
    assert set(res["per_class"]) == {0, 1}  # class 2 has no ground truth: not averaged


def test_duplicate_detection_is_false_positive():
    gt = {"a": ins([(0, 10, 0)])}
    # same segment twice: second is FP. Ranked: TP (p=1, r=1), FP -> AP 1.0
    assert evaluate(gt, {"a": ins([(0, 10, 0), (0, 10, 0)], [0.9, 0.8])}, 1, [0.5])["mAP"] == [1.0]
    # duplicate ranked first is impossible; put an FP before the TP: precision 1/2 at recall 1
    res = evaluate(gt, {"a": ins([(50, 60, 0), (0, 10, 0), (0, 10, 0)], [0.9, 0.8, 0.7])}, 1, [0.5])
    assert res["mAP"] == [pytest.approx(0.5)]


def test_all_point_interpolation_hand_example():
    # 3 GT; ranked predictions: TP, FP, TP, FP, TP -> precisions 1, 1/2, 2/3, 2/4, 3/5
    # monotone from the right at the TPs: 1, 2/3, 3/5 -> AP = (1 + 2/3 + 3/5) / 3
    gt = {"a": ins([(0, 10, 0), (20, 30, 0), (40, 50, 0)])}
    preds = {"a": ins([(0, 10, 0), (100, 110, 0), (20, 30, 0), (120, 130, 0), (40, 50, 0)],
                      [0.9, 0.8, 0.7, 0.6, 0.5])}
    res = evaluate(gt, preds, 1, [0.5])
    assert res["mAP"][0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-12)
    # interpolation matters: TP, FP, FP, TP, TP -> precisions at TPs 1, 2/4, 3/5 -> 3/5 lifts 2/4
    preds = {"a": ins([(0, 10, 0), (100, 110, 0), (120, 130, 0), (20, 30, 0), (40, 50, 0)],
                      [0.9, 0.8, 0.7, 0.6, 0.5])}
    assert evaluate(gt, preds, 1, [0.5])["mAP"][0] == pytest.approx((1 + 3 / 5 + 3 / 5) / 3, abs=1e-12)


def test_class_never_predicted_has_ap_zero():
    gt = {"a": ins([(0, 10, 0), (20, 30, 1)])}
    res = evaluate(gt, {"a": ins([(0, 10, 0)], [0.9])}, 2, [0.5])
    assert res["per_class"] == {0: [1.0], 1: [0.0]}
    assert res["mAP"] == [0.5]
    res = evaluate(gt, {}, 2, [0.5])
    assert res["mAP"] == [0.0]


def test_ground_truth_duplicates_count_once():
    gt = {"a": ins([(0, 10, 0), (0.0005, 10.0008, 0), (0, 10, 1)])}
    res = evaluate(gt, {"a": ins([(0, 10, 0)], [0.9])}, 2, [0.5])
    assert res["per_class"][0] == [1.0]  # recall 1 with one detection: the duplicate is gone
    assert res["num_gt"] == 2
    # 2e-3 apart: two distinct instances, one detection -> recall 1/2
    gt = {"a": ins([(0, 10, 0), (0.002, 10, 0)])}
    assert evaluate(gt, {"a": ins([(0, 10, 0)], [0.9])}, 1, [0.5])["mAP"] == [0.5]


def test_tiou_threshold_is_inclusive_and_best_gt_is_taken():
    # prediction [0, 10] vs GT [0, 20]: tIoU exactly 0.5 -> TP at 0.5, FP at 0.55
    gt = {"a": ins([(0, 20, 0)])}
    res = evaluate(gt, {"a": ins([(0, 10, 0)], [1.0])}, 1, [0.5, 0.55])
    assert res["mAP"] == [1.0, 0.0]
    # the first prediction takes the GT it overlaps most (B), leaving A to the second prediction
    gt = {"a": ins([(0, 10, 0), (2, 12, 0)])}
    preds = {"a": ins([(2, 11, 0), (0, 9, 0)], [0.9, 0.8])}
    assert evaluate(gt, preds, 1, [0.5])["mAP"] == [1.0]


def test_ties_follow_input_order_and_other_videos():
    gt = {"a": ins([(0, 10, 0)]), "b": ins([(0, 10, 0)])}
    # equal scores: the FP of video a (listed first) ranks before b's TP
    preds = {"a": ins([(50, 60, 0)], [0.5]), "b": ins([(0, 10, 0)], [0.5])}
    assert evaluate(gt, preds, 1, [0.5])["mAP"] == [pytest.approx(0.25)]  # prec 1/2 at recall 1/2
    preds = {"b": ins([(0, 10, 0)], [0.5]), "a": ins([(50, 60, 0)], [0.5])}
    assert evaluate(gt, preds, 1, [0.5])["mAP"] == [pytest.approx(0.5)]
    # predictions of a video without ground truth are false positives
    preds = {"x": ins([(0, 10, 0)], [0.9]), "a": ins([(0, 10, 0)], [0.5])}
    assert evaluate(gt, preds, 1, [0.5])["mAP"] == [pytest.approx(0.25)]


def test_bad_inputs_are_clear_errors():
    gt = {"a": ins([(0, 10, 0)])}
    with pytest.raises(DataError, match="video a, entry 0: field 'label'"):
        evaluate(gt, {"a": ins([(0, 10, 3)], [0.9])}, 2, [0.5])
    bad = Instances.create([[5.0, 1.0]], [0], torch.tensor([0.5]))
    with pytest.raises(DataError, match="ends before it starts"):
        evaluate(gt, {"a": bad}, 1, [0.5])
    nan = Instances.create([[0.0, 1.0]], [0], torch.tensor([float("nan")]))
    with pytest.raises(DataError, match="field 'score'"):
        evaluate(gt, {"a": nan}, 1, [0.5])
    with pytest.raises(NocoError, match="no action instance"):
        evaluate({"a": Instances.empty()}, {}, 1, [0.5])
    for t in ([0.0], [1.5], [], [float("nan")]):
        with pytest.raises(NocoError):
            parse_thresholds(t)


def test_bench_case_matches_reference_subset():
    """The synthetic benchmark generator produces a valid case; a small slice agrees with the reference."""
    from noco.eval.bench import make_case

    gt, preds = make_case(num_videos=4, preds_per_video=150, num_classes=5, seed=3)
    assert len(gt) == 4 and all(len(p) == 150 for p in preds.values())
    res = evaluate(gt, preds, 5, [0.3, 0.5, 0.7])
    m, _ = ref_evaluate(gt, preds, 5, [0.3, 0.5, 0.7])
    assert res["mAP"] == pytest.approx(m, abs=1e-6)
    assert 0.0 < res["average"] < 1.0


@pytest.mark.parametrize("seed", range(3))
def test_matching_in_short_phases_agrees(seed, monkeypatch):
    """Rows that can no longer match are dropped between phases; tiny phases exercise that."""
    import noco.eval.detection as det

    gt, preds = random_case(50 + seed, num_videos=4, num_classes=2, preds_per_video=120)
    want = evaluate(gt, preds, 2, THR)
    monkeypatch.setattr(det, "_PHASE_STEPS", 2)
    got = evaluate(gt, preds, 2, THR)
    m, _ = ref_evaluate(gt, preds, 2, THR)
    assert got["mAP"] == pytest.approx(m, abs=1e-6)
    assert got["per_class"] == pytest.approx(want["per_class"])


def test_evaluate_restores_thread_setting():
    n = torch.get_num_threads()
    evaluate({"a": ins([(0, 10, 0)])}, {"a": ins([(0, 10, 0)], [0.9])}, 1, [0.5])
    assert torch.get_num_threads() == n


# ----------------------------------------------------------------------------- label quality
from noco.eval.labels import label_quality  # noqa: E402


def test_label_quality_perfect_labels():
    gt = {"a": ins([(1, 3, 0), (5, 12, 1)]), "b": ins([(0.5, 1.5, 0)])}
    q = label_quality(gt, gt, {"a": 20.0, "b": 4.0}, 2)
    assert q["mIoU"] == 1.0 and q["background_iou"] == 1.0 and q["frame_iou"] == {0: 1.0, 1: 1.0}
    assert q["precision"] == 1.0 and q["recall"] == 1.0
    assert q["start_error"] == 0.0 and q["end_error"] == 0.0 and q["boundary_matches"] == 3
    assert q["merge_rate"] == 0.0 and q["merged_labels"] == 0 and q["absent_class_labels"] == 0
    assert q["recall_by_length"] == {"short": 1.0, "medium": 1.0, "long": 1.0}
    # video b has no class-1 instance: a class-1 label there is ruled out by its video-level labels,
    # wherever it lies; a class-1 label in video a is not (a has a class-1 instance elsewhere)
    lab = {"a": ins([(1, 3, 0), (30, 31, 1)]), "b": ins([(0.5, 1.5, 1), (2, 3, 1), (0.5, 1.5, 0)])}
    assert label_quality(gt, lab, {"a": 40.0, "b": 4.0}, 2)["absent_class_labels"] == 2
    assert q["gt_by_length"] == {"short": 1, "medium": 1, "long": 1}


def test_label_quality_frame_iou_hand_case():
    # 10 s at 10 Hz = 100 frames. GT class 0 [2, 4) -> frames 20..39; label [3, 5) -> 30..49.
    # class 0: 10 / 30. background: neither = 100 - 30 = 70, GT-bg or label-bg = 100 - 10 = 90.
    gt = {"a": ins([(2, 4, 0)])}
    lab = {"a": ins([(3, 5, 0)])}
    q = label_quality(gt, lab, {"a": 10.0}, 3)
    assert q["frame_iou"] == {0: pytest.approx(1 / 3)}
    assert q["background_iou"] == pytest.approx(7 / 9)
    assert q["mIoU"] == pytest.approx((1 / 3 + 7 / 9) / 2)
    # multi-label frames: class 1 on top of class 0 does not change class 0's IoU
    lab2 = {"a": ins([(3, 5, 0), (0, 10, 1)])}
    q2 = label_quality(gt, lab2, {"a": 10.0}, 3)
    assert q2["frame_iou"] == {0: pytest.approx(1 / 3)}  # class 1 has no GT: not in the mean
    assert q2["background_iou"] == 0.0  # every frame is labelled
    assert q2["mIoU"] == pytest.approx((1 / 3 + 0.0) / 2)


def ref_frame_miou(gt, labels, durations, num_classes, fr=10.0):
    """Rasterise every frame in plain Python."""
    inter = [0] * num_classes
    union = [0] * num_classes
    has_gt = [0] * num_classes
    bi = bu = 0
    for v, d in durations.items():
        for f in range(max(1, math.ceil(d * fr - 1e-9))):
            t = (f + 0.5) / fr
            g = {c for (s, e), c in zip(gt[v].segments.double().tolist(), gt[v].labels.tolist()) if s <= t < e}
            lv = labels.get(v, Instances.empty())
            lb = {c for (s, e), c in zip(lv.segments.double().tolist(), lv.labels.tolist()) if s <= t < e}
            for c in range(num_classes):
                inter[c] += (c in g) and (c in lb)
                union[c] += (c in g) or (c in lb)
                has_gt[c] += c in g
            bi += (not g) and (not lb)
            bu += (not g) or (not lb)
    ious = [inter[c] / union[c] for c in range(num_classes) if has_gt[c]]
    ious.append(bi / bu)
    return sum(ious) / len(ious)


@pytest.mark.parametrize("seed", range(3))
def test_label_quality_frame_miou_matches_raster_reference(seed):
    gt, preds = random_case(200 + seed, num_videos=4, num_classes=3, preds_per_video=12)
    durations = {v: 90.0 + 7 * i for i, v in enumerate(gt)}
    q = label_quality(gt, preds, durations, 3)
    assert q["mIoU"] == pytest.approx(ref_frame_miou(gt, preds, durations, 3), abs=1e-12)


def test_label_quality_merge_boundary_recall_by_length():
    gt = {"a": ins([(0, 4, 0), (6, 10, 0), (20, 21, 0), (30, 33, 1), (40, 50, 1)])}
    lab = {"a": ins([
        (0, 10, 0),        # covers both class-0 GTs fully: a merge (tIoU 0.4 with each)
        (20.1, 21.2, 0),   # short GT matched: tIoU 0.9/1.2 = 0.75; errors 0.1, 0.2
        (41, 50, 1),       # long GT: tIoU 0.9; errors 1.0, 0.0
        (60, 70, 1),       # false positive
    ], [0.9, 0.8, 0.7, 0.6])}
    q = label_quality(gt, lab, {"a": 80.0}, 2)
    assert q["merged_labels"] == 1 and q["merge_rate"] == pytest.approx(1 / 4)
    assert q["precision"] == pytest.approx(2 / 4) and q["recall"] == pytest.approx(2 / 5)
    # at tIoU 0.3 the merged label also matches (GT [0, 4], the first of two equal tIoUs): errors 0, 6
    assert q["boundary_matches"] == 3
    assert q["start_error"] == pytest.approx((0.0 + 0.1 + 1.0) / 3)
    assert q["end_error"] == pytest.approx((6.0 + 0.2 + 0.0) / 3)
    # GT lengths 4, 4, 1, 3, 10 s: the 1 s and the 10 s ones are found
    assert q["recall_by_length"] == {"short": 1.0, "medium": 0.0, "long": 1.0}
    assert q["gt_by_length"] == {"short": 1, "medium": 3, "long": 1}
    # half coverage is enough; just under half is not
    q = label_quality(gt, {"a": ins([(2, 8, 0)])}, {"a": 80.0}, 2)
    assert q["merged_labels"] == 1
    q = label_quality(gt, {"a": ins([(2.01, 8, 0)])}, {"a": 80.0}, 2)
    assert q["merged_labels"] == 0


def test_label_quality_edge_cases():
    gt = {"a": ins([(1, 2, 0)]), "b": ins([])}
    q = label_quality(gt, {"zzz": ins([(1, 2, 0)])}, {"a": 5.0, "b": 3.0}, 1)
    assert q["ignored_videos"] == 1 and q["num_labels"] == 0
    assert q["precision"] is None and q["recall"] == 0.0 and q["merge_rate"] is None
    assert q["start_error"] is None
    with pytest.raises(DataError, match="video b: field 'duration'"):
        label_quality(gt, {}, {"a": 5.0}, 1)
    with pytest.raises(DataError, match="duration"):
        label_quality(gt, {}, {"a": 5.0, "b": float("nan")}, 1)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from noco.data.synth import generate

    root = tmp_path_factory.mktemp("tiny")
    generate("tiny", root, seed=0, dim=8, force=True, progress=False)
    return root


def test_parse_tiou():
    from noco.commands.eval import parse_tiou

    assert parse_tiou("0.1:0.7:0.1") == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert parse_tiou("0.5:0.95:0.05") == [round(0.5 + 0.05 * i, 2) for i in range(10)]
    assert parse_tiou(" 0.3, 0.5 ,0.7") == [0.3, 0.5, 0.7]
    assert parse_tiou("0.5") == [0.5]
    for bad in ("", "a", "0.1:0.7", "0.7:0.1:0.1", "0.1:0.7:0", "0.1:0.7:-0.1", "0,0.5", "0.5,,0.7",
                "1.5", "0.5,0.5", "nan", "0.1:1:1e-9"):
        with pytest.raises(NocoError, match="--tiou"):
            parse_tiou(bad)


def test_cli_predictions_and_labels(tiny, tmp_path, capsys):
    from noco.cli import main
    from noco.data.dataset import load_dataset
    from noco.labels.instances import write_instances

    ds = load_dataset(tiny)
    gt = ds.ground_truth(ds.test_subset)
    preds = {v: Instances.create(i.segments, i.labels, torch.linspace(1, 0.5, len(i))) for v, i in gt.items()}
    preds["not_a_video"] = ins([(0, 1, 0)], [0.9])
    write_instances(tmp_path / "p.json", preds, ds.classes)
    out = tmp_path / "res.json"
    assert main(["eval", "--data", str(tiny), "--predictions", str(tmp_path / "p.json"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "100.00" in text and "0.1:0.5" in text
    res = json.loads(out.read_text())
    assert res["mAP"] == [1.0] * 7 and res["averages"] == {"0.1:0.5": 1.0, "0.3:0.7": 1.0, "0.1:0.7": 1.0}
    assert set(res["per_class"]) <= set(ds.classes) and res["subset"] == ds.test_subset
    assert res["num_predictions"] == sum(len(i) for i in gt.values())  # the foreign video is dropped

    # ActivityNet thresholds; a labels file (no scores) on the train subset
    assert main(["eval", "--data", str(tiny), "--predictions", str(tmp_path / "p.json"),
                 "--tiou", "0.5:0.95:0.05", "--json", str(out)]) == 0
    assert "0.5:0.95" in json.loads(out.read_text())["averages"]
    tr = ds.ground_truth(ds.train_subset)
    write_instances(tmp_path / "l.json", tr, ds.classes, with_weight=False)
    assert main(["eval", "--data", str(tiny), "--labels", str(tmp_path / "l.json"), "--json", str(out)]) == 0
    q = json.loads(out.read_text())
    assert q["mIoU"] == 1.0 and q["subset"] == ds.train_subset and q["merge_rate"] == 0.0
    assert set(q["frame_iou"]) <= set(ds.classes)


def test_cli_errors_are_one_line(tiny, tmp_path, capsys):
    from noco.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text('{"results": {"v": [{"segment": [1, 0], "label": "Billiards", "score": 1}]}}')
    p = str(tmp_path / "missing.json")
    cases = [
        (["--predictions", p], "not found"),
        (["--predictions", str(bad), "--subset", "Test"], "another dataset"),  # foreign video only
        (["--predictions", p, "--tiou", "0.1:x"], "--tiou"),
        (["--labels", p, "--tiou", "0.5"], "--predictions only"),
        (["--predictions", p, "--subset", "nope"], "no subset"),
    ]
    for extra, msg in cases:
        rc = main(["eval", "--data", str(tiny)] + extra)
        err = capsys.readouterr().err
        if msg is None:
            assert rc == 0
        else:
            assert rc == 2 and msg in err and "Traceback" not in err
    bad.write_text('{"results": {"video_test_0000004": [{"segment": [1, 0], "label": "Billiards", "score": 1}]}}')
    assert main(["eval", "--data", str(tiny), "--predictions", str(bad)]) == 2
    assert "ends before it starts" in capsys.readouterr().err
