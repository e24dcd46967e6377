"""AIC (Eqs. 4-6), MIC (Eq. 7), the EMA teacher, the correction config and OnlineCorrection."""

import io
import random

import pytest
import torch
from torch import nn

from noco.correction.aic import aic, aic_detailed
from noco.correction.config import CorrectionConfig, make_config
from noco.correction.loop import OnlineCorrection
from noco.correction.mic import mic, mic_candidates
from noco.correction.teacher import EMATeacher
from noco.errors import DataError, NocoError
from noco.labels.instances import Instances


def mk(rows):
    """rows: (start, end, label, score[, weight])"""
    if not rows:
        return Instances.empty()
    return Instances.create(torch.tensor([[r[0], r[1]] for r in rows], dtype=torch.float32),
                            torch.tensor([r[2] for r in rows]), torch.tensor([r[3] for r in rows]),
                            torch.tensor([r[4] if len(r) > 4 else 1.0 for r in rows]))


# labels: a merged label [10,30] (w .8), an isolated one [50,60] (w .5), a class-1 one [100,110] (w 1)
LABELS = mk([(10, 30, 0, 0.9, 0.8), (50, 60, 0, 0.7, 0.5), (100, 110, 1, 0.6, 1.0)])
# teacher: q1 [12,27] s .9 (IoU .75), q2 [11,29] s .5 (IoU .9), q3 [10,26] s .3 (not confident),
# q4 [12,27] class 1 (other class), q5 [25,40] (IoU 1/6), q6 [50,60] s .35 (not confident),
# q7 [101,110] class 0 s .9 (IoU .9 with the class-1 label)
TEACHER = mk([(12, 27, 0, 0.9), (11, 29, 0, 0.5), (10, 26, 0, 0.3), (12, 27, 1, 0.95), (25, 40, 0, 0.9),
              (50, 60, 0, 0.35), (101, 110, 0, 0.9)])


def test_aic_shrinks_merged_label_exactly():
    res = aic_detailed(LABELS, TEACHER)
    out = res.labels
    # w1 = .9*.75 = .675, w2 = .5*.9 = .45; inertia = 1 * 2 * .8 = 1.6; den = 2.725
    assert out.segments[0].tolist() == pytest.approx([29.05 / 2.725, 79.275 / 2.725], abs=1e-5)
    assert float(out.weights[0]) == pytest.approx(0.7 * 0.8 + 0.3 * 1.125 / 2, abs=1e-6)  # Eq. 6: .72875
    # no confident same-class match: unchanged (segments, weights, scores, classes)
    assert out.segments[1:].tolist() == LABELS.segments[1:].tolist()
    assert out.weights[1:].tolist() == LABELS.weights[1:].tolist()
    assert out.scores.tolist() == LABELS.scores.tolist() and out.labels.tolist() == LABELS.labels.tolist()
    assert res.corrected.tolist() == [True, False, False]
    assert res.num_assoc.tolist() == [2, 0, 0]
    # the plain function returns the same instances
    assert torch.equal(aic(LABELS, TEACHER).segments, out.segments)


def test_aic_options():
    # lam = 0: the label moves to the weighted mean of its teacher set
    out = aic(LABELS, TEACHER, lam=0.0)
    assert out.segments[0].tolist() == pytest.approx([13.05 / 1.125, (0.675 * 27 + 0.45 * 29) / 1.125], abs=1e-5)
    # beta = 1: weight unchanged
    assert float(aic(LABELS, TEACHER, beta=1.0).weights[0]) == pytest.approx(0.8)
    # class-agnostic: the class-1 label is pulled by q7 ([101,110], w .81), and q4 (class 1, s .95,
    # IoU .75) now joins the merged label's set
    out = aic(LABELS, TEACHER, same_class=False)
    assert out.segments[2].tolist() == pytest.approx([(100 + 0.81 * 101) / 1.81, 110.0], abs=1e-5)
    assert float(out.weights[2]) == pytest.approx(0.7 + 0.3 * 0.81, abs=1e-6)
    w = [0.675, 0.45, 0.95 * 0.75]
    den = 1 * 3 * 0.8 + sum(w)
    assert float(out.segments[0, 0]) == pytest.approx((2.4 * 10 + w[0] * 12 + w[1] * 11 + w[2] * 12) / den, abs=1e-5)
    # conf threshold is strict: q6 (s .35) joins with conf .3
    out = aic(LABELS, TEACHER, conf_thresh=0.3)
    assert float(out.weights[1]) == pytest.approx(0.7 * 0.5 + 0.3 * 0.35, abs=1e-6)
    # score-vote weights: w = .9/1.4, .5/1.4
    out = aic(LABELS, TEACHER, weight="vote")
    wv = [0.9 / 1.4, 0.5 / 1.4]
    assert float(out.segments[0, 0]) == pytest.approx((1.6 * 10 + wv[0] * 12 + wv[1] * 11) / 2.6, abs=1e-5)
    assert float(out.weights[0]) == pytest.approx(0.7 * 0.8 + 0.3 * 0.5, abs=1e-6)


def test_aic_decay_unsupported_fades_labels_the_teacher_does_not_confirm():
    res = aic_detailed(LABELS, TEACHER, decay_unsupported=True)
    out = res.labels
    # the supported (merged) label: exactly Eq. 6 as without the option
    assert float(out.weights[0]) == pytest.approx(float(aic(LABELS, TEACHER).weights[0]), abs=1e-7)
    # no confident same-class teacher detection: the teacher's vote counts 0 -> beta * w, boundaries kept
    assert out.weights[1:].tolist() == pytest.approx([0.7 * 0.5, 0.7 * 1.0])
    assert out.segments[1:].tolist() == LABELS.segments[1:].tolist()
    assert res.corrected.tolist() == [True, False, False]
    # a video the teacher detects nothing in: every label fades
    assert aic(LABELS, Instances.empty(), decay_unsupported=True).weights.tolist() == \
        pytest.approx([0.7 * 0.8, 0.7 * 0.5, 0.7 * 1.0])
    assert aic(LABELS, Instances.empty()).weights.tolist() == pytest.approx([0.8, 0.5, 1.0])  # off: kept
    # through the config
    cfg = make_config("cpu", {"aic_decay_unsupported": True})
    assert cfg.aic_kwargs()["decay_unsupported"] is True and not CorrectionConfig().aic_decay_unsupported
    with pytest.raises(NocoError, match="aic_decay_unsupported"):
        CorrectionConfig(aic_decay_unsupported="yes").validate()


def test_aic_empty_inputs():
    assert torch.equal(aic(LABELS, Instances.empty()).segments, LABELS.segments)
    assert len(aic(Instances.empty(), TEACHER)) == 0


def _tiou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def test_aic_matches_brute_force():
    rng = random.Random(3)
    for _ in range(20):
        def rand_set(n):
            rows = []
            for _ in range(n):
                s = rng.uniform(0, 60)
                rows.append((s, s + rng.uniform(1, 12), rng.randint(0, 1), rng.random(), rng.uniform(0.1, 1)))
            return mk(rows)
        lab, tea = rand_set(rng.randint(0, 12)), rand_set(rng.randint(0, 30))
        got = aic(lab, tea, iou_thresh=0.5, conf_thresh=0.3, lam=1.5, beta=0.6)
        L = list(zip(lab.segments.tolist(), lab.labels.tolist(), lab.weights.tolist()))
        T = list(zip(tea.segments.tolist(), tea.labels.tolist(), tea.scores.tolist()))
        for i, (p, c, wi) in enumerate(L):
            A = [(q, s * _tiou(p, q)) for q, cq, s in T if cq == c and _tiou(p, q) > 0.5 and s > 0.3]
            if not A:
                exp, ew = p, wi
            else:
                inert = 1.5 * len(A) * wi
                den = inert + sum(w for _, w in A)
                exp = [(inert * p[j] + sum(w * q[j] for q, w in A)) / den for j in (0, 1)]
                ew = 0.6 * wi + 0.4 * sum(w for _, w in A) / len(A)
            assert got.segments[i].tolist() == pytest.approx(exp, abs=1e-4)
            assert float(got.weights[i]) == pytest.approx(ew, abs=1e-5)


# MIC: labels [10,30] class 0 and [50,60] class 1
MIC_LABELS = mk([(10, 30, 0, 0.9, 0.8), (50, 60, 1, 0.9, 0.6)])
# q1 [32,34] s .8: short, missed -> added; q2 [32.2,34.2] s .7: suppressed by q1's NMS;
# q3 [12,28] s .9 and q4 [20,31] s .85: overlap the same-class label; q5 [52,58] class 0 s .9:
# only overlaps the class-1 label; q6 [70,72] s .55: not confident
MIC_TEACHER = mk([(32, 34, 0, 0.8), (32.2, 34.2, 0, 0.7), (12, 28, 0, 0.9), (20, 31, 0, 0.85),
                  (52, 58, 0, 0.9), (70, 72, 0, 0.55)])


def test_mic_adds_missed_short_instance_only():
    out = mic(MIC_LABELS, MIC_TEACHER)
    assert len(out) - len(MIC_LABELS) == 2
    assert torch.equal(out.segments[:2], MIC_LABELS.segments) and torch.equal(out.weights[:2], MIC_LABELS.weights)
    added = out.select(slice(2, None))
    assert added.segments.flatten().tolist() == pytest.approx([52, 58, 32, 34])
    assert added.labels.tolist() == [0, 0]
    assert added.weights.tolist() == pytest.approx([0.9, 0.8])   # Eq. 7: weight = score
    assert added.scores.tolist() == pytest.approx([0.9, 0.8])
    # class-agnostic overlap: q5 (IoU .6 with the class-1 label) is no longer added
    c = mic_candidates(MIC_LABELS, MIC_TEACHER, same_class=False)
    assert c.segments.flatten().tolist() == pytest.approx([32, 34])
    # nothing overlapping an existing same-class label, whatever its score
    for seg in out.select(slice(2, None)).segments.tolist():
        assert _tiou(seg, [10, 30]) < 0.2



def test_mic_support_keeps_only_candidates_the_pool_confirms():
    """``support``: MIC adds q1 [32,34] and q5 [52,58] (class 0) without it; with a class-0 pool
    proposal [32,34.5] (tIoU 2/2.5 = .8 with q1) only q1 is confirmed; a class-1 proposal on q5's
    place does not confirm a class-0 candidate; tIoU exactly at the threshold confirms."""
    pool = mk([(32, 34.5, 0, 0.2), (52, 58, 1, 0.9), (80, 90, 0, 0.9)])
    c = mic_candidates(MIC_LABELS, MIC_TEACHER, support=pool)
    assert c.segments.flatten().tolist() == pytest.approx([32, 34]) and c.weights.tolist() == pytest.approx([0.8])
    assert len(mic_candidates(MIC_LABELS, MIC_TEACHER, support=pool, support_iou=0.81)) == 0  # .8 < .81
    assert len(mic_candidates(MIC_LABELS, MIC_TEACHER, support=pool, support_iou=0.8)) == 1
    assert len(mic_candidates(MIC_LABELS, MIC_TEACHER, support=Instances.empty())) == 0
    # without support: both, as in the test above
    assert len(mic_candidates(MIC_LABELS, MIC_TEACHER)) == 2

def test_mic_thresholds():
    lab = mk([(10, 30, 0, 0.9)])
    # IoU 4/23 = .174 < .2 -> added; IoU 5/23 = .217 -> not
    assert len(mic_candidates(lab, mk([(26, 33, 0, 0.9)]))) == 1
    assert len(mic_candidates(lab, mk([(25, 33, 0, 0.9)]))) == 0
    assert len(mic_candidates(mk([(0, 10, 0, 0.9)]), mk([(0, 2, 0, 0.9)]))) == 0   # IoU exactly .2: not below
    # conf is inclusive: s = .6 qualifies
    assert len(mic_candidates(lab, mk([(40, 42, 0, 0.6)]))) == 1
    assert len(mic_candidates(lab, mk([(40, 42, 0, 0.59)]))) == 0
    # empty label set: every confident NMS survivor is added; empty teacher adds nothing
    # survivors of NMS(.4) among s >= .6: q3, q5, q1 (q4 has IoU 8/19 > .4 with q3, q2 9/11 with q1)
    alone = mic(Instances.empty(), MIC_TEACHER)
    assert alone.segments.flatten().tolist() == pytest.approx([12, 28, 52, 58, 32, 34])
    assert len(mic(lab, Instances.empty())) == 1
    # a second pass adds nothing more
    once = mic(MIC_LABELS, MIC_TEACHER)
    assert len(mic(once, MIC_TEACHER)) == len(once)


def test_bad_teacher_detections_are_reported():
    bad = mk([(5, 3, 0, 0.9)])
    with pytest.raises(DataError, match="teacher detections.*ends before it starts"):
        aic(LABELS, bad)
    with pytest.raises(DataError, match="teacher detections"):
        mic(LABELS, bad)


# ---------------------------------------------------------------------------- teacher
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.lin(x))


def _net(seed):
    torch.manual_seed(seed)
    n = Net()
    n.train()
    n(torch.randn(8, 3))  # move BN running stats and the counter
    return n


def test_ema_teacher_alpha_limits():
    student = _net(1)
    for a, exp_src in ((0.0, "student"), (1.0, "teacher")):
        t = EMATeacher(_net(0), alpha=a)
        before = {k: v.clone() for k, v in t.module.state_dict().items()}
        t.update(student)
        for k, v in t.module.state_dict().items():
            ref = student.state_dict()[k] if exp_src == "student" else before[k]
            if not v.is_floating_point():
                ref = student.state_dict()[k]  # integer counters are copied
            assert torch.equal(v, ref), (a, k)
    # alpha 1 never moves float tensors, even after many steps
    t = EMATeacher(_net(0), alpha=1.0)
    w0 = t.module.lin.weight.clone()
    for _ in range(3):
        t.update(student)
    assert torch.equal(t.module.lin.weight, w0)


def test_ema_teacher_half_step_and_isolation():
    init, student = _net(0), _net(1)
    t = EMATeacher(init, alpha=0.75)
    assert not any(p.requires_grad for p in t.module.parameters()) and not t.module.training
    t.update(student)
    exp = 0.75 * init.lin.weight.detach() + 0.25 * student.lin.weight.detach()
    assert torch.allclose(t.module.lin.weight, exp, atol=1e-7)
    assert torch.allclose(t.module.bn.running_mean, 0.75 * init.bn.running_mean + 0.25 * student.bn.running_mean)
    # deep copy: changing the original model does not touch the teacher
    with torch.no_grad():
        init.lin.weight.add_(100.0)
    assert torch.allclose(t.module.lin.weight, exp, atol=1e-7)
    assert t.num_updates == 1
    # state dict round trip through weights_only loading
    buf = io.BytesIO()
    torch.save(t.state_dict(), buf)
    buf.seek(0)
    t2 = EMATeacher(_net(5), alpha=0.75)
    t2.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(t2.module.lin.weight, t.module.lin.weight) and t2.num_updates == 1
    with pytest.raises(NocoError, match="different structures"):
        t.update(nn.Linear(3, 2))


# ---------------------------------------------------------------------------- config
def test_config_defaults_and_validation():
    c = CorrectionConfig()
    assert (c.cala_conf, c.cala_nms, c.cala_iou) == (0.5, 0.45, 0.6)
    assert (c.aic_iou, c.aic_conf, c.aic_lam, c.aic_beta) == (0.6, 0.2, 1.0, 0.7)
    assert (c.mic_conf, c.mic_nms, c.mic_iou, c.alpha) == (0.3, 0.4, 0.2, 0.999)
    assert make_config("paper").alpha == 0.999
    c = make_config("cpu", {"refresh": "5", "use_mic": "false", "aic_lam": 2, "mode": "replace"})
    assert c.refresh_every == 5 and c.use_mic is False and c.aic_lam == 2.0 and c.mode == "replace"
    assert CorrectionConfig.from_dict(c.to_dict()) == c
    for bad in ({"refresh": 0}, {"mode": "offline"}, {"aic_iou": 1.5}, {"aic_weight": "mean"}, {"nope": 1}):
        with pytest.raises(NocoError):
            make_config("cpu", bad)
    with pytest.raises(NocoError, match="unknown preset"):
        make_config("gpu")


# ---------------------------------------------------------------------------- online loop
class FakeDetector:
    """Teacher detections per video, shifted by the teacher's single weight (to see the EMA)."""

    def __init__(self, table):
        self.table = table
        self.calls = []

    def __call__(self, model, vid):
        assert not model.training and not torch.is_grad_enabled()
        self.calls.append(vid)
        q = self.table[vid]
        shift = float(model.weight.reshape(-1)[0])
        return Instances(q.segments + shift, q.labels, q.scores, q.weights)


def _teacher_model(value=0.0):
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


INITIAL = {"v1": LABELS, "v2": MIC_LABELS, "v3": mk([(1, 2, 0, 0.9)])}
ALL = {v: [0, 1] for v in INITIAL}  # video-level labels admitting every class of the hand-made cases
TABLE = {"v1": TEACHER, "v2": MIC_TEACHER, "v3": mk([(1, 2, 0, 0.99), (5, 9, 0, 0.99)])}


def test_online_correction_corrects_the_batch_videos():
    det = FakeDetector(TABLE)
    cfg = CorrectionConfig(alpha=0.5, aic_conf=0.4, mic_conf=0.6)  # the hand-computed case uses NOCO.md's values
    oc = OnlineCorrection(INITIAL, _teacher_model(), det, cfg=cfg, video_classes=ALL)
    out = oc.labels_for(["v1", "v2"], step=0)
    assert det.calls == ["v1", "v2"]
    exp1 = mic(aic(LABELS, TEACHER, **cfg.aic_kwargs()), TEACHER, **cfg.mic_kwargs())
    assert torch.allclose(out[0].segments, exp1.segments) and torch.allclose(out[0].weights, exp1.weights)
    assert out[0].segments[0].tolist() == pytest.approx([29.05 / 2.725, 79.275 / 2.725], abs=1e-5)
    assert len(out[1]) == 4  # MIC added two
    assert oc.last_stats["aic_corrected"] == 1 + int(aic_detailed(MIC_LABELS, MIC_TEACHER).corrected.sum())
    assert oc.last_stats["corrections"] == 2
    final = oc.final_labels()
    assert final["v3"] is INITIAL["v3"] or torch.equal(final["v3"].segments, INITIAL["v3"].segments)
    assert torch.equal(final["v1"].segments, out[0].segments)
    # the stored set is what the next correction starts from
    out2 = oc.labels_for(["v2"], step=1)
    assert len(out2[0]) == 4 and oc.last_stats["mic_added"] == 0
    # v1 gained q4 (class 1, no class-1 label near), q5 (IoU .14 with the corrected label), q7 (class 0)
    assert len(exp1) - len(LABELS) == 3
    assert oc.summary()["mic_added"] == 3 + 2
    with pytest.raises(NocoError, match="no pseudo-labels for video"):
        oc.labels_for(["v9"], step=2)


def test_online_correction_ema_refresh_and_state_roundtrip():
    det = FakeDetector(TABLE)
    cfg = make_config("cpu", {"alpha": 0.5, "refresh": 3, "use_aic": False, "mic_pool_conf": 0.0})
    oc = OnlineCorrection(INITIAL, _teacher_model(0.0), det, cfg=cfg, video_classes=ALL)
    oc.labels_for(["v3"], step=0)
    assert det.calls == ["v3"]
    assert oc.final_labels()["v3"].segments.tolist() == [[1, 2], [5, 9]]
    # student with weight 4: EMA .5 -> teacher weight 2, detections shift by 2
    oc.after_step(_teacher_model(4.0), step=0)
    assert float(oc.teacher.module.weight) == pytest.approx(2.0)
    oc.labels_for(["v3"], step=2)           # not due (refresh every 3 steps)
    assert det.calls == ["v3"]
    oc.labels_for(["v3"], step=3)
    assert det.calls == ["v3", "v3"]
    # shifted teacher: [3,4] overlaps nothing -> added; [7,11] overlaps [5,9] (IoU 1/3) -> not
    assert oc.final_labels()["v3"].segments.tolist() == [[1, 2], [5, 9], [3, 4]]

    buf = io.BytesIO()
    torch.save(oc.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = OnlineCorrection(INITIAL, _teacher_model(0.0), FakeDetector(TABLE), cfg=cfg, video_classes=ALL)
    fresh.load_state_dict(state)
    assert float(fresh.teacher.module.weight) == pytest.approx(2.0)
    for vid in INITIAL:
        a, b = fresh.final_labels()[vid], oc.final_labels()[vid]
        for k in ("segments", "labels", "scores", "weights"):
            assert torch.equal(getattr(a, k), getattr(b, k))
    assert fresh.summary() == oc.summary()
    fresh.labels_for(["v3"], step=4)        # refresh schedule restored: not due
    assert fresh.detect_fn.calls == []
    with pytest.raises(NocoError, match="missing 'labels'"):
        fresh.load_state_dict({"teacher": state["teacher"]})
    with pytest.raises(NocoError, match="outside the training set"):
        fresh.load_state_dict({"labels": {"zz": INITIAL["v1"].state()}, "teacher": state["teacher"]})


def test_replace_mode_and_features_fn():
    seen = []

    def detect(model, feats, vid):
        seen.append((vid, feats.dtype, tuple(feats.shape)))
        return TABLE[vid] if vid != "v2" else mk([(3, 4, 0, 0.2)])

    cfg = make_config("cpu", {"mode": "replace", "replace_conf": 0.5, "hpm_power": 1.0, "hpm_normalize": False})
    oc = OnlineCorrection(INITIAL, _teacher_model(), detect, features_fn=lambda v: torch.zeros(7, 5, dtype=torch.float64), cfg=cfg,
                          video_classes=ALL)
    out = oc.labels_for(["v1", "v2"], step=0)
    assert seen == [("v1", torch.float32, (7, 5)), ("v2", torch.float32, (7, 5))]
    # v1: teacher detections with score >= .5 after per-class NMS (.45): q1 suppresses q2 (IoU 15/18)
    # and q4 is class 1; q5 and q7 survive; by descending score (ties: input order); weights = scores
    assert out[0].segments.tolist() == [[12, 27], [12, 27], [25, 40], [101, 110]]
    assert out[0].labels.tolist() == [1, 0, 0, 0]
    assert out[0].weights.tolist() == pytest.approx(out[0].scores.tolist())
    # v2: nothing confident -> the initial labels
    assert torch.equal(out[1].segments, MIC_LABELS.segments)
    assert oc.last_stats["replace_fallbacks"] == 1

    def broken(model, feats, vid):
        return [1, 2]

    oc = OnlineCorrection(INITIAL, _teacher_model(), broken, features_fn=lambda v: torch.zeros(2, 2), cfg=cfg,
                          video_classes=ALL)
    with pytest.raises(NocoError, match="video v1: teacher detection returned list"):
        oc.labels_for(["v1"], step=0)


def test_replace_fallback_per_class_keeps_the_labels_of_classes_the_teacher_is_not_sure_of():
    # v1's teacher is confident about class 0 only (q1, q5, q7; q4 of class 1 is dropped by the
    # video-level filter): "video" replaces every label, "class" keeps the initial class-1 label
    classes = {"v1": [0, 1], "v2": [0], "v3": [0]}
    teach = {"v1": TABLE["v1"].select(TABLE["v1"].labels == 0), "v2": TABLE["v2"], "v3": TABLE["v3"]}

    def run(fallback):
        cfg = make_config("cpu", {"mode": "replace", "replace_conf": 0.5, "replace_fallback": fallback,
                                  "hpm_normalize": False})
        oc = OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(teach), cfg=cfg, video_classes=classes)
        return oc, oc.labels_for(["v1"], step=0)[0]

    _, per_video = run("video")
    assert per_video.labels.tolist() == [0, 0, 0]
    oc, per_class = run("class")
    assert len(per_class) == 4 and per_class.labels.tolist() == [0, 0, 0, 1]
    assert per_class.segments[:3].tolist() == per_video.segments.tolist()
    assert per_class.segments[3].tolist() == [100.0, 110.0] and float(per_class.weights[3]) == pytest.approx(1.0)
    assert oc.last_stats["replace_fallbacks"] == 1
    with pytest.raises(NocoError, match="replace_fallback"):
        CorrectionConfig(replace_fallback="frame").validate()


def test_video_level_classes_filter_the_teachers_detections():
    """The weak labels are known for training videos: with correction.video_classes, a detection of a
    class the video does not contain is never added (MIC) nor used as a replacement (row c)."""
    classes = {"v1": [0], "v2": [0], "v3": [0]}
    cfg = CorrectionConfig(alpha=0.5, aic_conf=0.4, mic_conf=0.6, video_classes=True)
    oc = OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), cfg=cfg, video_classes=classes)
    out = oc.labels_for(["v1"], step=0)[0]
    # without the filter MIC adds q4 (class 1), q5 and q7 (see above); with it only q5 and q7
    assert len(out) == len(LABELS) + 2 and out.labels.tolist().count(1) == 1  # the initial class-1 label stays
    plain = OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), video_classes=classes,
                             cfg=CorrectionConfig(alpha=0.5, aic_conf=0.4, mic_conf=0.6, video_classes=False))
    assert len(plain.labels_for(["v1"], step=0)[0]) == len(LABELS) + 3  # off: the class-1 detection added
    assert CorrectionConfig().video_classes  # on by default
    rep = OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), video_classes=classes,
                           cfg=make_config("cpu", {"mode": "replace", "replace_conf": 0.5, "video_classes": True}))
    assert rep.labels_for(["v1"], step=0)[0].labels.tolist() == [0, 0, 0]  # q4 (class 1) is gone
    with pytest.raises(NocoError, match="video-level labels"):
        OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), cfg=cfg)
    with pytest.raises(NocoError, match="no video-level labels for video"):
        OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), cfg=cfg, video_classes={"v1": [0]})


def test_hpm_power_sharpens_the_loss_weights_only():
    cfg = CorrectionConfig(hpm_power=2.0, use_aic=False, use_mic=False)
    oc = OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), cfg=cfg, video_classes=ALL)
    out = oc.labels_for(["v1"], step=0)[0]
    assert out.weights.tolist() == pytest.approx([0.64, 0.25, 1.0])  # LABELS' weights .8, .5, 1 squared
    assert oc.final_labels()["v1"].weights.tolist() == pytest.approx([0.8, 0.5, 1.0])  # stored as they are
    with pytest.raises(NocoError, match="hpm_power"):
        CorrectionConfig(hpm_power=-1.0).validate()


def test_hpm_normalize_keeps_the_mean_loss_weight_at_one():
    cfg = CorrectionConfig(hpm_normalize=True, use_aic=False, use_mic=False)
    oc = OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), cfg=cfg, video_classes=ALL)
    every = torch.cat([ins.weights for ins in INITIAL.values()]).double()
    out = oc.labels_for(["v1", "v3"], step=0)
    assert out[0].weights.tolist() == pytest.approx((LABELS.weights.double() / every.mean()).tolist())
    assert out[1].weights.tolist() == pytest.approx([1.0 / float(every.mean())])
    # over the whole online set the loss weights average 1, and their ratios are the labels' ratios
    loss_w = torch.cat([oc._loss_weights(ins).weights for ins in oc.final_labels().values()])
    assert float(loss_w.double().mean()) == pytest.approx(1.0)
    assert oc.final_labels()["v1"].weights.tolist() == pytest.approx([0.8, 0.5, 1.0])  # stored as they are
    # with hpm_power the mean of w ** p is the divisor
    sq = OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), video_classes=ALL,
                          cfg=CorrectionConfig(hpm_normalize=True, hpm_power=2.0, use_aic=False, use_mic=False))
    w = sq.labels_for(["v1"], step=0)[0].weights
    assert w.tolist() == pytest.approx((LABELS.weights.double() ** 2 / (every ** 2).mean()).tolist())
    with pytest.raises(NocoError, match="hpm_normalize"):
        CorrectionConfig(hpm_normalize=1).validate()


def test_hpm_normalize_divides_by_the_initial_labels_mean_throughout():
    """The normaliser is a constant of the run (the same on every rank and after a resume): the mean
    weight of the initial labels, also once MIC has added labels of other weights."""
    cfg = CorrectionConfig(alpha=0.5, aic_conf=0.4, mic_conf=0.6, hpm_normalize=True, video_classes=False)
    oc = OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), cfg=cfg)
    m0 = float(torch.cat([ins.weights for ins in INITIAL.values()]).double().mean())
    out = oc.labels_for(["v1"], step=0)[0]
    stored = oc.final_labels()["v1"]
    now = float(torch.cat([ins.weights for ins in oc.final_labels().values()]).double().mean())
    assert len(stored) > len(LABELS) and now != pytest.approx(m0)  # MIC added labels: the set's mean moved
    assert out.weights.tolist() == pytest.approx((stored.weights.double() / m0).tolist())
    # a resumed run rebuilds the same normaliser from the same initial labels
    again = OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), cfg=cfg)
    again.load_state_dict(oc.state_dict())
    assert again.labels_for(["v1"], step=5)[0].weights.tolist() == pytest.approx(
        (again.final_labels()["v1"].weights.double() / m0).tolist())


def test_without_aic_mic_or_replacement_the_labels_stay_and_the_teacher_is_not_asked():
    """Row s (the student on uncorrected labels): the online set stays the initial one, the teacher
    still follows the student (EMA), and no teacher detection is computed for nothing."""
    det = FakeDetector(TABLE)
    oc = OnlineCorrection(INITIAL, _teacher_model(), det, video_classes=ALL,
                          cfg=CorrectionConfig(alpha=0.5, use_aic=False, use_mic=False))
    out = oc.labels_for(["v1", "v2"], step=0)
    assert det.calls == []
    for got, v in zip(out, ("v1", "v2")):
        assert torch.equal(got.segments, INITIAL[v].segments) and torch.equal(got.weights, INITIAL[v].weights)
    oc.after_step(_teacher_model(1.0), step=1)
    assert float(oc.teacher.module.weight) == pytest.approx(0.5)


def test_hpm_normalize_without_initial_labels_keeps_the_weights():
    empty = {"v1": Instances.empty(), "v2": mk([(1, 2, 0, 0.9, 0.0)])}  # no label of positive weight
    oc = OnlineCorrection(empty, _teacher_model(), FakeDetector(TABLE), video_classes=ALL,
                          cfg=CorrectionConfig(hpm_normalize=True, use_aic=False, use_mic=False))
    out = oc.labels_for(["v1", "v2"], step=0)
    assert len(out[0]) == 0 and out[1].weights.tolist() == [0.0]


def test_online_mic_support_comes_from_the_pool_above_mic_pool_conf():
    """``correction.mic_pool_conf``: the pool proposals scoring at least it confirm MIC's candidates
    (v2: q1 is confirmed by a proposal of score .2, q5 only by one of .05, below the threshold)."""
    pool = {"v2": mk([(32, 34, 0, 0.2), (52, 58, 0, 0.05)])}
    cfg = CorrectionConfig(aic_conf=0.4, mic_conf=0.6, mic_pool_conf=0.1, use_aic=False)
    oc = OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), cfg=cfg, video_classes=ALL, mic_pool=pool)
    out = oc.labels_for(["v1", "v2"], step=0)
    assert len(out[0]) == len(LABELS)  # v1 has no pool proposal: its 3 MIC candidates stay unconfirmed
    added = out[1].select(slice(len(MIC_LABELS), None))
    assert added.segments.flatten().tolist() == pytest.approx([32, 34])
    assert oc.stats["mic_added"] == 1
    with pytest.raises(NocoError, match="mic_pool_conf"):
        OnlineCorrection(INITIAL, _teacher_model(), FakeDetector(TABLE), cfg=cfg, video_classes=ALL)
