"""Oracle label repair (noco.eval.repair): each kind of noise removed against the ground truth."""

import torch

from noco.eval.repair import main, repair_labels
from noco.labels.instances import Instances


def _gt():
    return {"v": Instances.create([[0, 10], [20, 22], [30, 40]], [0, 0, 1]),
            "w": Instances.create([[5, 9]], [1])}


def _labels():
    # [1, 11] c0 matches GT [0, 10] (tIoU 9/11); [29, 41] c1 matches [30, 40] (10/12);
    # [50, 60] c0 matches nothing; [30, 40] c0 has the wrong class; [20, 22] c0 is missed
    return {"v": Instances([[1, 11], [50, 60], [29, 41], [30, 40]], [0, 0, 1, 0], [0.9, 0.8, 0.7, 0.6],
                           [0.5, 0.4, 0.3, 0.2]),
            "x": Instances.create([[1, 2]], [0])}  # a video without ground truth


def _rows(ins):
    return sorted(zip(ins.segments.tolist(), ins.labels.tolist(), [round(w, 4) for w in ins.weights.tolist()]))


def test_snap_moves_matched_boundaries_only():
    out = repair_labels(_gt(), _labels(), 2, snap=True)
    assert _rows(out["v"]) == sorted([([0, 10], 0, 0.5), ([50, 60], 0, 0.4), ([30, 40], 1, 0.3), ([30, 40], 0, 0.2)])
    assert "w" not in out and _rows(out["x"]) == [([1, 2], 0, 1.0)]


def test_drop_false_keeps_the_matched_labels_with_their_weights():
    out = repair_labels(_gt(), _labels(), 2, drop_false=True)
    assert [r[:2] for r in _rows(out["v"])] == [([1, 11], 0), ([29, 41], 1)]
    assert torch.allclose(out["v"].weights.sort().values, torch.tensor([0.3, 0.5]))


def test_add_missed_adds_exactly_the_unmatched_ground_truth():
    out = repair_labels(_gt(), _labels(), 2, add_missed=True)
    assert len(out["v"]) == 5 and ([20, 22], 0, 1.0) in _rows(out["v"])
    assert _rows(out["w"]) == [([5, 9], 1, 1.0)]  # a ground-truth video that had no label


def test_all_three_give_the_ground_truth_back():
    gt = _gt()
    out = repair_labels(gt, _labels(), 2, snap=True, drop_false=True, add_missed=True)
    for v in gt:
        assert [r[:2] for r in _rows(out[v])] == [r[:2] for r in _rows(gt[v])]


def test_matching_threshold_decides_what_is_false():
    # at tIoU 0.85 neither label matches: drop_false leaves nothing, add_missed adds all three
    out = repair_labels(_gt(), _labels(), 2, drop_false=True, add_missed=True, iou=0.85)
    assert [r[:2] for r in _rows(out["v"])] == [r[:2] for r in _rows(_gt()["v"])]


def test_cli_writes_a_label_file_and_reports_quality(tiny_root, tmp_path, capsys):
    from noco.data.dataset import load_dataset
    from noco.labels.instances import read_instances, write_instances

    ds = load_dataset(tiny_root)
    gt = ds.ground_truth(ds.train_subset)
    # labels: the ground truth shifted by 1 s (every one still matched at tIoU 0.5 when long enough)
    shifted = {v: Instances(i.segments + 1.0, i.labels, i.scores, i.weights) for v, i in gt.items()}
    src = tmp_path / "L.json"
    write_instances(src, shifted, ds.classes)
    assert main(["--data", str(tiny_root), "--labels", str(src), "--out", str(tmp_path / "R.json"),
                 "--snap", "--drop-false", "--add-missed"]) == 0
    text = capsys.readouterr().out
    assert "after:" in text and "frame mIoU 100.0" in text
    fixed = read_instances(tmp_path / "R.json", ds.classes)
    assert sum(len(i) for i in fixed.values()) == sum(len(i) for i in gt.values())
    assert main(["--data", str(tiny_root), "--labels", str(src), "--out", str(tmp_path / "R2.json"),
                 "--iou", "0"]) == 2


def test_precision_by_weight_hand_computed():
    from noco.eval.repair import precision_by_weight

    # right labels ([1, 11] w .5, [29, 41] w .3), wrong ones (w .4, .2): pairs right > wrong: .5>.4,
    # .5>.2, .3>.2 (3 of 4) -> AUC .75; two bins: weights {.2, .3} (1 right of 2), {.4, .5} (1 of 2)
    res = precision_by_weight(_gt(), _labels(), 2, bins=2)
    assert res["auc"] == 0.75 and res["precision"] == [0.5, 0.5]
    res = precision_by_weight(_gt(), _labels(), 2, bins=4)
    assert res["precision"] == [0.0, 1.0, 0.0, 1.0]  # .2 wrong, .3 right, .4 wrong, .5 right
