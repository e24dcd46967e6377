"""The MIC-source diagnostic (noco.eval.missed): recall of the instances the labels miss."""

import json

import pytest
import torch

from noco.eval.missed import label_support, main, mic_precision, missed_recall
from noco.labels.instances import Instances

from test_repair import _gt, _labels  # noqa: E402


def _dets():
    # v: [20, 22] c0 (missed by the labels) found at 0.25; [0, 10] c0 (labelled) at 0.5;
    #    [30, 40] c1 (labelled) only by a wrong-class detection; w: [5, 9] c1 (missed) at tIoU 0.4 only
    return {"v": Instances.create([[20, 22], [0.5, 10], [30, 40]], [0, 0, 0], scores=torch.tensor([0.25, 0.5, 0.9])),
            "w": Instances.create([[5, 15]], [1], scores=torch.tensor([0.9]))}


def test_missed_recall_hand_case():
    r = missed_recall(_gt(), _labels(), _dets(), 2, (0.2, 0.3))
    assert r["missed"] == 2 and r["labelled"] == 2
    assert r["recall_missed"] == [0.5, 0.0]      # [20, 22] at >= 0.2 only; [5, 9] never (tIoU 0.4)
    assert r["recall_labelled"] == [0.5, 0.5]    # [0, 10] yes; [30, 40] c1: wrong class
    only_w = missed_recall(_gt(), _labels(), _dets(), 2, (0.2,), videos=["w"])
    assert only_w["missed"] == 1 and only_w["labelled"] == 0 and only_w["recall_labelled"] == [None]
    assert missed_recall(_gt(), _labels(), _dets(), 2, (0.2,), iou=0.4, videos=["w"])["recall_missed"] == [1.0]
    # no detections at all: nothing is recalled
    assert missed_recall(_gt(), _labels(), {}, 2, (0.1,))["recall_missed"] == [0.0]


def test_label_support_hand_case():
    # labels of v: [1, 11] c0 (right, w .5), [50, 60] c0 (wrong, .4), [29, 41] c1 (right, .3), [30, 40] c0
    # (wrong class, .2); video x has no ground truth and does not count. Support: .5 ([0.5, 10]), 0, 0
    # (only class-0 detections), .9 ([30, 40] c0, tIoU 1)
    r = label_support(_gt(), _labels(), _dets(), 2)
    assert r["labels"] == 4 and r["mean_weight"] == pytest.approx(0.35)
    assert r["auc_weight"] == pytest.approx(0.75)    # .5 > .4, .5 > .2, .3 > .2, .3 < .4
    assert r["auc_support"] == pytest.approx(0.375)  # .5 > 0, .5 < .9, 0 = 0 (a half), 0 < .9
    none = label_support(_gt(), _labels(), _dets(), 2, videos=["w"])
    assert none == {"labels": 0, "mean_weight": None, "auc_weight": None, "auc_support": None}


def test_mic_precision_hand_case():
    # MIC's candidates: v [20, 22] c0 (.25; the missed instance: right); w [5, 15] c1 (.9; the missed
    # [5, 9] only at tIoU .4: wrong). [0.5, 10] and [30, 40] c0 overlap same-class labels: not candidates
    r = mic_precision(_gt(), _labels(), _dets(), 2, (0.2, 0.3))
    assert r["candidates"] == [2, 1] and r["right"] == [1, 0]
    pool = {"v": Instances.create([[19, 22]], [0], scores=torch.tensor([0.2]))}  # confirms [20, 22] (tIoU 2/3)
    r = mic_precision(_gt(), _labels(), _dets(), 2, (0.2, 0.3), pool=pool, pool_conf=0.1)
    assert r["candidates"] == [1, 0] and r["right"] == [1, 0]
    assert mic_precision(_gt(), _labels(), _dets(), 2, (0.2,), pool=pool, pool_conf=0.3)["candidates"] == [0]


def test_missed_cli_and_held_out_videos(tiny_root, tmp_path, capsys):
    from noco.data.dataset import load_dataset
    from noco.io import atomic_save_torch
    from noco.labels.instances import write_instances

    ds = load_dataset(tiny_root)
    gt = ds.ground_truth(ds.train_subset)
    vids = sorted(gt)
    labels = {v: gt[v] for v in vids[:2]}           # the other videos' instances are all missed
    write_instances(tmp_path / "l.json", labels, ds.classes)
    write_instances(tmp_path / "d.json", gt, ds.classes)  # a perfect detector, score 1
    assert main(["--data", str(tiny_root), "--labels", str(tmp_path / "l.json"),
                 "--detections", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "recall of the missed 100.0 %, of the labelled 100.0 %" in out
    assert "MIC's candidates (NMS 0.4, IoU with the labels < 0.2), by score: >= 0.1: " in out
    assert out.count("% right") == 3 and out.count("(100.0 % right)") == 3  # the missed instances, all right
    assert "mean weight 1.000; AUC for a right label (matched at tIoU 0.5): of the label weight -," in out  # all right
    atomic_save_torch(tmp_path / "ck.pt", {"val_videos": vids[:1]})
    assert main(["--data", str(tiny_root), "--labels", str(tmp_path / "l.json"), "--detections",
                 str(tmp_path / "d.json"), "--videos-held-out-by", str(tmp_path / "ck.pt")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 held-out videos: 0 instances missed") and "of the missed -," in out
    atomic_save_torch(tmp_path / "old.pt", {"model": {}})
    assert main(["--data", str(tiny_root), "--labels", str(tmp_path / "l.json"), "--detections",
                 str(tmp_path / "d.json"), "--videos-held-out-by", str(tmp_path / "old.pt")]) == 2
    assert "lists no held-out videos" in capsys.readouterr().err
