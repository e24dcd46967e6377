"""Can a detector find what the labels missed? (a diagnostic of MIC's source)

MIC adds the teacher's confident detections that no label covers. It can only add an instance the
teacher detects. ``missed_recall(gt, labels, detections, ...)`` splits the training ground truth
into the instances the labels match (greedy one-to-one, same class, tIoU >= ``iou``: the
label-quality matching) and those they miss, and gives, per score threshold, the fraction of each
that a same-class detection with at least that score overlaps at tIoU >= ``iou``.

``label_support`` gives, for the same labels, how well the detections' support (the best
same-class score overlapping a label) tells right labels from wrong ones, beside the labels' own
weights (HPM's); the command prints both.

``mic_precision`` gives what MIC would add from these detections at each score threshold (its
candidates, exactly as the online loop forms them) and how many of them are right, i.e. match an
instance the labels miss; with ``--pool`` also when the base model's pool must confirm each candidate
(``correction.mic_pool_conf``).

Run on the teacher's detections of the training videos, and on those of a detector that never saw
the videos' labels (``noco detector train --val-fraction 0.5`` holds half of them out; its
checkpoint lists them), it tells whether the teacher misses the missed instances because it was
trained to call them background (memorisation) or because they are hard (``TRAINING_SUBSET``:
the dataset's training subset, e.g. ``Validation`` on THUMOS14)::

    noco detector predict --ckpt W/seed0/rows/b/model.pt --data DATA --subset TRAINING_SUBSET --out T.json
    python -m noco.eval.missed --data DATA --labels W/seed0/labels/b.json --detections T.json \\
        [--videos-held-out-by X/checkpoint.pt]
"""

from __future__ import annotations

import sys
from typing import Iterable, Mapping

import torch

from ..labels.instances import Instances
from .labels import match_labels

__all__ = ["missed_recall", "label_support", "mic_precision"]


def _covered(gt: Instances, dets: Instances, thresholds: torch.Tensor, iou: float) -> torch.Tensor:
    """[G, T] bool: a same-class detection with score >= thresholds[t] and tIoU >= iou."""
    from ..ops.intervals import pairwise_tiou

    if len(gt) == 0 or len(dets) == 0:
        return torch.zeros(len(gt), len(thresholds), dtype=torch.bool)
    ok = (pairwise_tiou(gt.segments.double(), dets.segments.double()) >= iou) & \
        (gt.labels[:, None] == dets.labels[None, :])                                      # [G, D]
    best = torch.where(ok, dets.scores.double()[None, :], torch.full((), -1.0, dtype=torch.float64)).amax(1)
    return best[:, None] >= thresholds[None, :]


def missed_recall(gt: Mapping[str, Instances], labels: Mapping[str, Instances], detections: Mapping[str, Instances],
                  num_classes: int, thresholds: Iterable[float] = (0.1, 0.2, 0.3), *, iou: float = 0.5,
                  videos: Iterable[str] | None = None) -> dict:
    """Recall of the missed and of the labelled instances by ``detections`` (see the module docstring).

    ``videos``: only these videos (default: every video of ``gt``). Returns ``{"thresholds",
    "missed": count, "labelled": count, "recall_missed": [...], "recall_labelled": [...]}``
    (``None`` where a group is empty).
    """
    keep = list(gt) if videos is None else [v for v in gt if v in set(videos)]
    gt = {v: gt[v] for v in keep}
    thr = torch.tensor([float(t) for t in thresholds], dtype=torch.float64)
    (g_vid, g_seg, g_lab), _, (_, _, mg) = match_labels(gt, labels, num_classes, (iou,))
    matched = torch.zeros(g_lab.numel(), dtype=torch.bool)
    matched[mg] = True
    cov = torch.zeros(g_lab.numel(), len(thr), dtype=torch.bool)
    for i, v in enumerate(keep):  # per video: the pairwise tIoU is within a video
        idx = (g_vid == i).nonzero().flatten()
        if idx.numel():
            ins = Instances.create(g_seg[idx].float(), g_lab[idx])
            cov[idx] = _covered(ins, detections.get(v, Instances.empty()), thr, iou)

    def rate(mask):
        n = int(mask.sum())
        return n, [float(cov[mask, t].double().mean()) if n else None for t in range(len(thr))]

    n_miss, r_miss = rate(~matched)
    n_lab, r_lab = rate(matched)
    return {"thresholds": thr.tolist(), "missed": n_miss, "labelled": n_lab, "recall_missed": r_miss,
            "recall_labelled": r_lab}


def label_support(gt: Mapping[str, Instances], labels: Mapping[str, Instances], detections: Mapping[str, Instances],
                  num_classes: int, *, iou: float = 0.5, videos: Iterable[str] | None = None) -> dict:
    """How well a detector's support tells right labels from wrong ones, beside the labels' weights
    (what HPM, or a weight from the teacher, relies on).

    A label is right when the label-quality matching (tIoU >= ``iou``) matches it; its support is
    the best score of a same-class detection overlapping it at tIoU > ``iou`` (0 without one).
    Returns ``{"labels": count, "mean_weight", "auc_weight", "auc_support"}`` (AUCs: the probability
    that a right label scores above a wrong one; ``None`` without both kinds).
    """
    from ..ops.intervals import pairwise_tiou
    from .repair import right_label_auc

    keep = list(gt) if videos is None else [v for v in gt if v in set(videos)]
    gt = {v: gt[v] for v in keep}
    _, (l_vid, l_seg, l_lab, _, l_w), (mp, _, _) = match_labels(gt, labels, num_classes, (iou,))
    right = torch.zeros(l_lab.numel(), dtype=torch.bool)
    right[mp] = True
    support = torch.zeros(l_lab.numel(), dtype=torch.float64)
    for i, v in enumerate(keep):  # per video: the pairwise tIoU is within a video
        idx = (l_vid == i).nonzero().flatten()
        dets = detections.get(v, Instances.empty())
        if idx.numel() and len(dets):
            ok = (pairwise_tiou(l_seg[idx], dets.segments.double()) > iou) & (l_lab[idx, None] == dets.labels[None, :])
            support[idx] = torch.where(ok, dets.scores.double()[None, :], torch.zeros((), dtype=torch.float64)).amax(1)
    return {"labels": int(l_lab.numel()), "mean_weight": float(l_w.mean()) if l_w.numel() else None,
            "auc_weight": right_label_auc(l_w, right), "auc_support": right_label_auc(support, right)}


def mic_precision(gt: Mapping[str, Instances], labels: Mapping[str, Instances], detections: Mapping[str, Instances],
                  num_classes: int, thresholds: Iterable[float] = (0.1, 0.2, 0.3), *, iou: float = 0.5,
                  mic_nms: float = 0.4, mic_iou: float = 0.2, pool: Mapping[str, Instances] | None = None,
                  pool_conf: float = 0.1, pool_iou: float = 0.5, videos: Iterable[str] | None = None) -> dict:
    """MIC's candidates from ``detections`` at each threshold (``mic_candidates`` with ``mic_nms``,
    ``mic_iou``; with ``pool``, only those a pool proposal scoring >= ``pool_conf`` confirms at tIoU
    >= ``pool_iou``), and how many are right: a same-class instance the labels miss (label-quality
    matching at ``iou``) overlaps them at tIoU >= ``iou``. Returns ``{"thresholds", "candidates": [...],
    "right": [...], "mic_nms", "mic_iou"}``."""
    from ..correction.mic import mic_candidates, pool_support
    from ..ops.intervals import pairwise_tiou

    keep = list(gt) if videos is None else [v for v in gt if v in set(videos)]
    gt = {v: gt[v] for v in keep}
    thr = [float(t) for t in thresholds]
    (g_vid, g_seg, g_lab), _, (_, _, mg) = match_labels(gt, labels, num_classes, (iou,))
    missed = torch.ones(g_lab.numel(), dtype=torch.bool)
    missed[mg] = False
    n_cand, n_right = [0] * len(thr), [0] * len(thr)
    for i, v in enumerate(keep):  # per video: MIC works per video
        dets = detections.get(v, Instances.empty())
        lab = labels.get(v, Instances.empty())
        support = None if pool is None else pool_support(pool.get(v, Instances.empty()), pool_conf)
        idx = ((g_vid == i) & missed).nonzero().flatten()
        for j, t in enumerate(thr):
            c = mic_candidates(lab, dets, t, mic_nms, mic_iou, support=support, support_iou=pool_iou,
                               what=f"video {v}: labels")
            n_cand[j] += len(c)
            if len(c) and idx.numel():
                ok = (pairwise_tiou(c.segments.double(), g_seg[idx]) >= iou) & (c.labels[:, None] == g_lab[idx][None, :])
                n_right[j] += int(ok.any(1).sum())
    return {"thresholds": thr, "candidates": n_cand, "right": n_right, "mic_nms": mic_nms, "mic_iou": mic_iou}


def main(argv: list[str] | None = None) -> int:
    from ..errors import NocoError
    from ..io import load_checkpoint
    from ..labels.instances import read_instances
    from .repair import diagnostic_parser, load_diagnostic_inputs

    p = diagnostic_parser("noco.eval.missed", __doc__)
    p.add_argument("--detections", required=True, help="a detector's detections of the training videos")
    p.add_argument("--thresholds", default="0.1,0.2,0.3", help="detection score thresholds, comma-separated")
    p.add_argument("--pool", metavar="POOL", help="the base model's proposal pool (W/seedS/wtal/pool.json): also "
                   "MIC's candidates that a pool proposal confirms (correction.mic_pool_conf)")
    p.add_argument("--pool-conf", type=float, default=0.1, help="with --pool: the proposals' least score (default 0.1)")
    p.add_argument("--videos-held-out-by", metavar="CKPT",
                   help="only the videos this detector checkpoint held out (noco detector train --val-fraction)")
    args = p.parse_args(argv)
    try:
        try:
            thresholds = [float(t) for t in args.thresholds.split(",")]
        except ValueError:
            raise NocoError(f"--thresholds must be numbers separated by commas, found {args.thresholds!r}") from None
        ds, gt, labels = load_diagnostic_inputs(args)
        videos = None
        if args.videos_held_out_by:
            videos = load_checkpoint(args.videos_held_out_by).get("val_videos")
            if not videos:
                raise NocoError(f"{args.videos_held_out_by}: the checkpoint lists no held-out videos "
                                f"(train with --val-fraction; checkpoints before this option do not list them)")
        dets = read_instances(args.detections, ds.classes)
        r = missed_recall(gt, labels, dets, ds.num_classes, thresholds, iou=args.iou, videos=videos)
        where = f"{len(videos)} held-out videos" if videos else f"{len(gt)} training videos"
        print(f"{where}: {r['missed']} instances missed by the labels, {r['labelled']} matched (tIoU {args.iou})")
        for t, m, lab in zip(r["thresholds"], r["recall_missed"], r["recall_labelled"]):
            fmt = lambda x: "-" if x is None else f"{100 * x:.1f} %"  # noqa: E731
            print(f"detections with score >= {t:g}: recall of the missed {fmt(m)}, of the labelled {fmt(lab)}")
        sup = label_support(gt, labels, dets, ds.num_classes, iou=args.iou, videos=videos)
        auc = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        mean_w = "-" if sup["mean_weight"] is None else f"{sup['mean_weight']:.3f}"
        print(f"{sup['labels']} labels, mean weight {mean_w}; AUC for a right label (matched at tIoU "
              f"{args.iou:g}): of the label weight {auc(sup['auc_weight'])}, of the detections' support "
              f"{auc(sup['auc_support'])} (best same-class score at tIoU > {args.iou:g})")
        pool = read_instances(args.pool, ds.classes) if args.pool else None
        runs = [("MIC's candidates", None)] + ([(f"MIC's candidates that a pool proposal of score >= "
                                                 f"{args.pool_conf:g} confirms", pool)] if pool is not None else [])
        for name, pl in runs:
            m = mic_precision(gt, labels, dets, ds.num_classes, thresholds, iou=args.iou, pool=pl,
                              pool_conf=args.pool_conf, videos=videos)
            cells = [f">= {t:g}: {n} ({'-' if n == 0 else f'{100 * r / n:.1f} %'} right)"
                     for t, n, r in zip(m["thresholds"], m["candidates"], m["right"])]
            print(f"{name} (NMS {m['mic_nms']:g}, IoU with the labels < {m['mic_iou']:g}), by score: "
                  + "; ".join(cells))
    except NocoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
