"""Does CALA's aggregation have errors to cancel? A diagnosis on a labelled training set.

For every CALA seed that matches a ground-truth instance (same class, tIoU >= 0.3) it compares the
signed boundary errors of the seed, of the mean of its associated proposals and of the CALA
aggregate, and how strongly the associated proposals' errors follow the seed's. Aggregation can
only help when the associated proposals err independently of the seed; with a correlation near 1
they share its error and averaging moves little (or away, when the seed is the best of them).

    python -m noco.labels.cala_diagnosis --data DIR --pool W/seed0/wtal/pool.json

``pool_coverage`` (always printed) tells whether the pool holds what the labels miss: per length
bin of the ground truth, the fraction with a same-class proposal at tIoU >= 0.5 (any score), and
the median score of the best-scoring such proposal.

``--conf-sweep 0.5,0.3,0.2`` adds, for each seed threshold θ_conf, the quality of CALA's labels
(count, frame mIoU, precision / recall at tIoU 0.5, recall of short instances, merge rate): what a
lower threshold buys in recall and costs in precision.

(needs ground truth: a simulated benchmark, or a labelled training set; never used for training).
"""

from __future__ import annotations

import argparse
import json

import torch

from ..ops.intervals import batched_nms, pairwise_tiou


def diagnose(pool: dict, gt: dict, conf: float = 0.5, nms: float = 0.45, iou: float = 0.6,
             match: float = 0.3) -> dict:
    seed_e, assoc_e, cala_e, n_assoc = [], [], [], []
    for vid, p in pool.items():
        g = gt.get(vid)
        if g is None or len(g) == 0 or len(p) == 0:
            continue
        idx = torch.nonzero(p.scores >= conf).flatten()
        if len(idx) == 0:
            continue
        keep = idx[batched_nms(p.segments[idx], p.scores[idx], p.labels[idx], nms)]
        s, sl = p.segments[keep], p.labels[keep]
        iou_sp = pairwise_tiou(s, p.segments) * (sl[:, None] == p.labels[None, :])
        iou_sg = pairwise_tiou(s, g.segments) * (sl[:, None] == g.labels[None, :])
        best = iou_sg.max(1)
        ok = best.values >= match
        assoc = (iou_sp > iou) & ok[:, None]                      # [S, P], seed included
        w = p.scores[None, :] * iou_sp * assoc                    # Eq. 1 weights (s_j * IoU)
        agg = (w @ p.segments) / w.sum(1, keepdim=True).clamp(min=1e-12)
        mean = (assoc.float() @ p.segments) / assoc.sum(1, keepdim=True).clamp(min=1)
        tgt = g.segments[best.indices]
        seed_e.append((s - tgt)[ok])
        assoc_e.append((mean - tgt)[ok])
        cala_e.append((agg - tgt)[ok])
        n_assoc.append(assoc.sum(1)[ok])
    if not seed_e:
        return {"seeds": 0}
    se, ae, ce = torch.cat(seed_e).double(), torch.cat(assoc_e).double(), torch.cat(cala_e).double()
    out = {"seeds": len(se), "mean_associated": float(torch.cat(n_assoc).float().mean())}
    for name, e in (("seed", se), ("associated_mean", ae), ("cala", ce)):
        out[name] = {"signed_start": float(e[:, 0].mean()), "signed_end": float(e[:, 1].mean()),
                     "abs_start": float(e[:, 0].abs().mean()), "abs_end": float(e[:, 1].abs().mean())}
    out["seed_closer_than_cala"] = float((se.abs().sum(1) < ce.abs().sum(1)).double().mean())
    out["corr_start"] = float(torch.corrcoef(torch.stack([se[:, 0], ae[:, 0]]))[0, 1])
    out["corr_end"] = float(torch.corrcoef(torch.stack([se[:, 1], ae[:, 1]]))[0, 1])
    return out


def pool_coverage(pool: dict, gt: dict, match: float = 0.5) -> dict:
    """Per ground-truth length bin (``eval.labels.LENGTH_BINS``): instances, the fraction covered by
    a same-class proposal at tIoU >= ``match``, and the median of the best covering proposal's score."""
    from ..eval.labels import LENGTH_BINS

    lengths, best = [], []
    for vid, g in gt.items():
        if len(g) == 0:
            continue
        p = pool.get(vid)
        lengths.append(g.segments[:, 1] - g.segments[:, 0])
        if p is None or len(p) == 0:
            best.append(torch.full((len(g),), -1.0))
            continue
        iou = pairwise_tiou(g.segments, p.segments) * (g.labels[:, None] == p.labels[None, :])
        score = torch.where(iou >= match, p.scores[None, :].to(torch.float32), torch.tensor(-1.0))
        best.append(score.max(1).values)
    if not lengths:
        return {}
    length, best = torch.cat(lengths), torch.cat(best)
    out = {}
    for name, lo, hi in LENGTH_BINS:
        m = (length >= lo) & (length < hi)
        hit = best[m][best[m] >= 0]
        out[name] = {"instances": int(m.sum()), "covered": float((best[m] >= 0).double().mean()) if m.any() else None,
                     "median_best_score": float(hit.median()) if len(hit) else None}
    return out


def conf_sweep(pool: dict, gt: dict, durations: dict, num_classes: int, confs) -> list[dict]:
    """Quality of ``cala_all(pool, conf_thresh=c)`` against ``gt`` for each ``c`` in ``confs``."""
    from ..eval.labels import label_quality
    from .cala import cala_all

    rows = []
    for c in confs:
        q = label_quality(gt, cala_all(pool, conf_thresh=float(c)), durations, num_classes)
        rows.append({"cala_conf": float(c), "labels": q["num_labels"], "mIoU": q["mIoU"],
                     "precision": q["precision"], "recall": q["recall"],
                     "recall_short": q["recall_by_length"]["short"], "merge_rate": q["merge_rate"]})
    return rows


def main(argv=None) -> int:
    from ..data.dataset import load_dataset
    from .instances import read_instances

    ap = argparse.ArgumentParser(prog="python -m noco.labels.cala_diagnosis", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--pool", required=True, help="proposal pool (W/seed<S>/wtal/pool.json)")
    ap.add_argument("--conf-sweep", help="comma-separated seed thresholds: label quality of CALA at each")
    args = ap.parse_args(argv)
    ds = load_dataset(args.data)
    train = ds.subset(ds.train_subset)
    pool = read_instances(args.pool, ds.classes, videos=[v.id for v in train])
    gt = ds.ground_truth(ds.train_subset)
    res = diagnose(pool, gt)
    res["pool_coverage"] = pool_coverage(pool, gt)
    if args.conf_sweep:
        confs = [float(c) for c in args.conf_sweep.split(",") if c.strip()]
        res["conf_sweep"] = conf_sweep(pool, gt, {v.id: v.duration for v in train}, ds.num_classes, confs)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
