"""Oracle label repair: what each kind of pseudo-label noise costs the detector.

A diagnostic, never part of training. ``repair_labels(gt, labels, ...)`` matches a label set to the
ground truth with :func:`noco.eval.labels.match_labels`, as the label-quality metrics do (greedy
one-to-one, labels by score, same class, tIoU >= ``iou``) and removes one kind of noise at a time:

* ``snap``       -- every matched label takes its ground truth's boundaries (boundary noise);
* ``drop_false`` -- unmatched labels are removed (false positives, duplicates, and merged labels,
  which cover two instances and match neither at tIoU 0.5);
* ``add_missed`` -- unmatched ground-truth instances are added, weight 1 and score 1 (missed
  instances, short ones above all).

All three together give the ground truth back (its duplicates once). Training the same detector on
each repaired set says how much of the gap between a label set and the oracle each kind of noise
accounts for, and so how far a correction method could go by removing it::

    python -m noco.eval.repair --data DATA --labels W/seed0/rows/b/labels.json --out R.json --snap
    noco detector train --data DATA --labels R.json --out X --no-hpm && noco detector predict ...

(``tools/label_repair_study.sh`` runs the whole grid.)
"""

from __future__ import annotations

import argparse
import sys
from typing import Mapping

import torch

from ..labels.instances import Instances
from .labels import match_labels

__all__ = ["repair_labels", "precision_by_weight"]


def repair_labels(gt: Mapping[str, Instances], labels: Mapping[str, Instances], num_classes: int, *,
                  snap: bool = False, drop_false: bool = False, add_missed: bool = False,
                  iou: float = 0.5) -> dict[str, Instances]:
    """The label set ``labels`` with the chosen kinds of noise removed (see the module docstring).

    Videos of ``labels`` without ground truth are kept as they are (nothing to match them to);
    ``add_missed`` also gives labels to ground-truth videos that had none.
    """
    vids = list(gt)
    (g_vid, g_seg, g_lab), (l_vid, l_seg, l_lab, l_score, l_weight), (mp, _, mg) = match_labels(
        gt, labels, num_classes, (iou,))
    seg = l_seg.clone()
    if snap:
        seg[mp] = g_seg[mg]
    kept = torch.ones(l_lab.numel(), dtype=torch.bool)
    if drop_false:
        kept[:] = False
        kept[mp] = True
    parts_vid, parts = [l_vid[kept]], [(seg[kept], l_lab[kept], l_score[kept], l_weight[kept])]
    if add_missed:
        hit = torch.zeros(g_lab.numel(), dtype=torch.bool)
        hit[mg] = True
        miss = ~hit
        n = int(miss.sum())
        parts_vid.append(g_vid[miss])
        parts.append((g_seg[miss], g_lab[miss], torch.ones(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)))
    a_vid = torch.cat(parts_vid)
    a_seg, a_lab, a_score, a_w = (torch.cat(x) for x in zip(*parts))
    out: dict[str, Instances] = {v: ins for v, ins in labels.items() if v not in gt}
    order = torch.argsort(a_vid, stable=True)
    for v, idx in zip(vids, torch.split(order, torch.bincount(a_vid, minlength=len(vids)).tolist())):
        if len(idx) or v in labels:
            out[v] = Instances(a_seg[idx].float(), a_lab[idx], a_score[idx].float(), a_w[idx].float())
    return out


def precision_by_weight(gt: Mapping[str, Instances], labels: Mapping[str, Instances], num_classes: int, *,
                        bins: int = 5, iou: float = 0.5) -> dict:
    """How well a label set's weights tell right labels from wrong ones (what HPM relies on).

    A label is right when it is matched as in :func:`repair_labels`. Returns ``precision`` per
    weight quantile bin, lowest weights first (ties may leave a bin empty: ``None``), and ``auc``:
    the probability that a right label outweighs a wrong one (ties count one half).
    """
    _, (_, _, l_lab, _, w), (mp, _, _) = match_labels(gt, labels, num_classes, (iou,))
    right = torch.zeros(l_lab.numel(), dtype=torch.bool)
    right[mp] = True
    out: dict = {"precision": [None] * bins, "auc": None}
    if w.numel() == 0:
        return out
    edges = torch.quantile(w, torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1])
    b = torch.bucketize(w, edges, right=True)
    out["precision"] = [float(right[b == i].double().mean()) if bool((b == i).any()) else None for i in range(bins)]
    out["auc"] = right_label_auc(w, right)
    return out


def right_label_auc(score: torch.Tensor, right: torch.Tensor) -> float | None:
    """The probability that a right label scores above a wrong one (ties count one half); None
    without both kinds."""
    pos, neg = score[right].sort().values, score[~right]
    if not (pos.numel() and neg.numel()):
        return None
    below = torch.searchsorted(pos, neg, right=False)     # right labels scoring below each wrong one
    equal = torch.searchsorted(pos, neg, right=True) - below
    return float(((pos.numel() - below - equal) + 0.5 * equal).sum() / (pos.numel() * neg.numel()))


def diagnostic_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The command line shared by the label diagnostics: ``--data``, ``--labels``, ``--iou``."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset directory (its training subset's ground truth)")
    p.add_argument("--labels", required=True, help="pseudo-labels of the training subset (ActivityNet result format)")
    p.add_argument("--iou", type=float, default=0.5, help="matching tIoU")
    return p


def load_diagnostic_inputs(args: argparse.Namespace):
    """``(dataset, training ground truth, labels)`` of a diagnostic's arguments (NocoError if bad)."""
    from ..data.dataset import load_dataset
    from ..errors import NocoError
    from ..labels.instances import read_instances

    if not 0.0 < args.iou <= 1.0:
        raise NocoError(f"--iou must be in (0, 1], found {args.iou}")
    ds = load_dataset(args.data)
    return ds, ds.ground_truth(ds.train_subset), read_instances(args.labels, ds.classes)


def main(argv: list[str] | None = None) -> int:
    from ..errors import NocoError
    from ..labels.instances import write_instances
    from .labels import label_quality

    p = diagnostic_parser("noco.eval.repair", __doc__)
    p.add_argument("--out", required=True, help="repaired label file to write")
    p.add_argument("--snap", action="store_true", help="matched labels take their ground truth's boundaries")
    p.add_argument("--drop-false", action="store_true", help="remove labels that match no ground truth")
    p.add_argument("--add-missed", action="store_true", help="add the ground truth no label matches")
    args = p.parse_args(argv)
    try:
        ds, gt, labels = load_diagnostic_inputs(args)
        fixed = repair_labels(gt, labels, ds.num_classes, snap=args.snap, drop_false=args.drop_false,
                              add_missed=args.add_missed, iou=args.iou)
        write_instances(args.out, fixed, ds.classes)
        durations = {v.id: v.duration for v in ds.subset(ds.train_subset)}
        pw = precision_by_weight(gt, labels, ds.num_classes, iou=args.iou)
        print("before: precision (%) by weight quintile, lowest first: "
              + " / ".join("-" if x is None else f"{100 * x:.0f}" for x in pw["precision"])
              + (f"; AUC of the weight for a right label {pw['auc']:.3f}" if pw["auc"] is not None else ""))
        for name, ls in (("before", labels), ("after", fixed)):
            q = label_quality(gt, ls, durations, ds.num_classes)
            print(f"{name}: {q['num_labels']} labels, frame mIoU {100 * q['mIoU']:.1f}, precision "
                  f"{100 * (q['precision'] or 0):.1f}, recall {100 * (q['recall'] or 0):.1f} (tIoU 0.5), "
                  f"recall < 2 s {100 * (q['recall_by_length']['short'] or 0):.1f}, merge rate "
                  f"{100 * (q['merge_rate'] or 0):.1f}")
    except NocoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
