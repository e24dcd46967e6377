"""Detection mAP with the ActivityNet protocol (TRIDET.md, "Evaluation protocol"), vectorized.

Protocol, per class and per tIoU threshold:
  * predictions are ranked by score, descending. Ties: a stable sort on the input order, i.e.
    videos in the iteration order of the ``preds`` dict, then entry order within a video;
  * each prediction, in rank order, takes the not-yet-matched ground truth of its video and class
    with the highest tIoU among those with ``tIoU >= threshold`` (a TP), else it is a FP (so a
    duplicate detection is a FP). Ties in tIoU: the ground truth listed first in its video;
  * AP is the all-point interpolated area: precision made monotone from the right, summed over
    the recall steps; a class with ground truth but no predictions has AP 0;
  * mAP averages the classes present in the ground truth; ``average`` is the mean over thresholds;
  * ground-truth duplicates (same video and class, both boundaries within 1e-3 s of an instance
    listed earlier) count once; every prediction counts (no score threshold). Predictions of
    videos absent from ``gt`` are false positives (the CLI drops them beforehand, with a warning).

Speed: matching is sequential only inside a (video, class) group. Predictions whose group has no
ground truth, or whose best tIoU in the group is below the smallest threshold, are FPs that
cannot change any state, so they skip matching. The rest are processed as "the k-th relevant
prediction of every group at once", groups ordered by how many they hold so the active ones are
always a prefix, with all thresholds in the same tensor ops.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Mapping, Sequence

import torch

from ..errors import DataError, NocoError
from ..labels.instances import Instances

__all__ = ["evaluate", "match_greedy", "average_precision", "dedup_ground_truth", "flatten", "parse_thresholds",
           "single_thread"]

GT_DUPLICATE_TOL = 1e-3  # seconds
_PHASE_STEPS = 48  # matching steps between two removals of rows that can no longer match


@contextmanager
def single_thread():
    """Run a block with one intra-op thread, restoring the setting afterwards.

    The evaluator issues many small tensor ops; on a shared 2-core machine, intra-op threads
    spinning at every op made it 10-20x slower than one thread, and it gains little from them.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ----------------------------------------------------------------------------- inputs
def flatten(dets: Mapping[str, Instances], vid_index: Mapping[str, int], num_classes: int, what: str):
    """Concatenate per-video instances into float64/long tensors and validate them.

    Returns ``(video [N] long, -1 for videos not in vid_index), segs [N, 2] float64,
    labels [N] long, scores [N] float64``. Invalid values raise one DataError naming the video
    and field of every problem.
    """
    items = list(dets.items())
    if not items:
        z = torch.zeros(0, dtype=torch.long)
        return z, torch.zeros(0, 2, dtype=torch.float64), z.clone(), torch.zeros(0, dtype=torch.float64)
    for vid, ins in items:
        if not isinstance(ins, Instances):
            raise DataError(f"{what}: video {vid}: expected Instances, found {type(ins).__name__}")
    sizes = torch.tensor([len(ins) for _, ins in items], dtype=torch.long)
    vids = torch.tensor([vid_index.get(v, -1) for v, _ in items], dtype=torch.long)
    segs = torch.cat([ins.segments.detach().cpu().reshape(-1, 2) for _, ins in items]).double()
    labels = torch.cat([ins.labels.detach().cpu().reshape(-1) for _, ins in items]).long()
    scores = torch.cat([ins.scores.detach().cpu().reshape(-1) for _, ins in items]).double()
    owner = torch.repeat_interleave(torch.arange(len(items)), sizes)
    bad_seg = ~torch.isfinite(segs).all(1)
    bad_order = ~bad_seg & (segs[:, 1] < segs[:, 0])
    bad_label = (labels < 0) | (labels >= num_classes)
    bad_score = ~torch.isfinite(scores)
    if bool((bad_seg | bad_order | bad_label | bad_score).any()):
        problems = []
        first = torch.cumsum(sizes, 0) - sizes
        for mask, field, text in (
            (bad_seg, "segment", "is not finite"),
            (bad_order, "segment", "ends before it starts"),
            (bad_label, "label", f"is not a class index in [0, {num_classes})"),
            (bad_score, "score", "is not finite"),
        ):
            for i in torch.nonzero(mask).reshape(-1)[:20].tolist():
                o = int(owner[i])
                problems.append(f"{what}: video {items[o][0]}, entry {i - int(first[o])}: field '{field}' {text}")
        raise DataError(problems, header=f"invalid {what}")
    return vids[owner], segs, labels, scores


def parse_thresholds(tiou_thresholds) -> torch.Tensor:
    """Validate tIoU thresholds (a number or a sequence of numbers in (0, 1]) -> float64 tensor."""
    if isinstance(tiou_thresholds, (int, float)):
        tiou_thresholds = [tiou_thresholds]
    vals = [float(t) for t in torch.as_tensor(tiou_thresholds, dtype=torch.float64).reshape(-1).tolist()]
    if not vals:
        raise NocoError("no tIoU thresholds given")
    for t in vals:
        if not (math.isfinite(t) and 0.0 < t <= 1.0):
            raise NocoError(f"tIoU threshold {t} is not in (0, 1]")
    return torch.tensor(vals, dtype=torch.float64)


def dedup_ground_truth(video: torch.Tensor, segs: torch.Tensor, labels: torch.Tensor, tol: float = GT_DUPLICATE_TOL):
    """Bool mask of ground truths to keep: an instance is a duplicate (dropped) when an instance
    listed before it in the same video and class has both boundaries within ``tol`` seconds."""
    n = segs.shape[0]
    keep = torch.ones(n, dtype=torch.bool)
    if n < 2:
        return keep
    # sort by (video, class, start); duplicates are then neighbours within a short run
    o = torch.argsort(segs[:, 0], stable=True)
    o = o[torch.argsort(labels[o], stable=True)]
    o = o[torch.argsort(video[o], stable=True)]
    v, c, s = video[o], labels[o], segs[o]
    k = 1
    while k < n:  # a loop over neighbour offsets, ends after the longest run of equal starts
        same = (v[k:] == v[:-k]) & (c[k:] == c[:-k]) & ((s[k:, 0] - s[:-k, 0]) <= tol)
        if not bool(same.any()):
            break
        near = same & ((s[k:, 1] - s[:-k, 1]).abs() <= tol)
        a, b = o[:-k][near], o[k:][near]
        keep[torch.maximum(a, b)] = False  # the one listed later is the duplicate
        k += 1
    return keep


# ----------------------------------------------------------------------------- matching
def _paired_tiou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """tIoU of a[i] with b[i] (float64, same formula as the reference: 0 where the union is 0)."""
    inter = (torch.minimum(a[:, 1], b[:, 1]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    union = (a[:, 1] - a[:, 0]) + (b[:, 1] - b[:, 0]) - inter
    pos = union > 0
    return torch.where(pos, inter / torch.where(pos, union, torch.ones_like(union)), torch.zeros_like(union))


def match_greedy(gt_segs, gt_keys, pred_segs, pred_keys, pred_rank_pos, thresholds):
    """Greedy one-to-one matching of predictions to ground truth, ActivityNet style.

    ``*_keys`` are group ids (same id = same video and class; ``-1`` never matches); predictions
    are processed in increasing ``pred_rank_pos`` (distinct integers: the position of each
    prediction in the processing order). Each takes, per threshold, the unmatched ground truth
    of its group with the highest tIoU ``>= threshold`` (ties: lowest ground-truth index).
    Returns the matches as three LongTensors ``(pred, threshold index, gt)``.

    Only (prediction, ground truth) pairs of one group with tIoU >= the smallest threshold can
    ever match; they are found with a sorted index (no P x G scan). Predictions without such a
    pair are FPs that change nothing. The others are matched in steps: step k handles the k-th
    such prediction of every group at once (groups sorted by their count, so the active ones are
    a prefix), each against its few candidate ground truths sorted by tIoU, all thresholds at once.
    """
    from ..ops.intervals import _StartIndex

    thr = thresholds.to(torch.float64)
    nt = thr.numel()
    empty = (torch.zeros(0, dtype=torch.long),) * 3
    ngt = gt_segs.shape[0]
    if pred_segs.shape[0] == 0 or ngt == 0:
        return empty
    gsegs, psegs = gt_segs.double(), pred_segs.double()
    tmin = float(thr.min())
    # candidate pairs (pred, gt, tIoU >= tmin) of the same group
    index = _StartIndex(gsegs, gt_keys, tmin)
    cand = torch.nonzero(pred_keys >= 0).reshape(-1)
    qs, js, ious = [], [], []
    for q, j in index.query(psegs[cand], pred_keys[cand]):
        q = cand[q]
        iou = _paired_tiou(psegs[q], gsegs[j])
        ok = (pred_keys[q] == gt_keys[j]) & (iou >= tmin)
        qs.append(q[ok])
        js.append(j[ok])
        ious.append(iou[ok])
    if not qs or sum(x.numel() for x in qs) == 0:
        return empty
    q, j, iou = torch.cat(qs), torch.cat(js), torch.cat(ious)
    # order pairs by (group, prediction rank) and, per prediction, by (tIoU desc, gt index asc)
    o = torch.argsort(j, stable=True)
    o = o[torch.argsort(iou[o], descending=True, stable=True)]
    span = int(pred_rank_pos.max()) + 1
    o = o[torch.argsort(pred_keys[q[o]] * span + pred_rank_pos[q[o]], stable=True)]
    q, j, iou = q[o], j[o], iou[o]
    # relevant predictions (rows) and their candidate runs in the flat pair arrays
    new_row = torch.ones(q.numel(), dtype=torch.bool)
    new_row[1:] = q[1:] != q[:-1]
    row_of = torch.cumsum(new_row.long(), 0) - 1
    rel = q[new_row]  # relevant predictions, by (group, rank)
    ncand = torch.bincount(row_of, minlength=rel.numel())
    c_off = torch.cumsum(ncand, 0) - ncand
    last = q.numel() - 1
    ar_w = torch.arange(int(ncand.max()))
    t_all = torch.arange(nt)
    matched = torch.zeros(ngt, nt, dtype=torch.bool)
    out_r, out_hit, out_g = [], [], []
    todo = torch.arange(rel.numel())  # rows still to process, by (group, rank)
    while todo.numel():
        # groups of the remaining rows, largest first; step k takes the k-th row of every group
        # with more than k rows (a prefix of the groups)
        _, cnt = torch.unique_consecutive(pred_keys[rel[todo]], return_counts=True)
        first = torch.cumsum(cnt, 0) - cnt
        step_of = torch.arange(todo.numel()) - torch.repeat_interleave(first, cnt)
        by_count = torch.argsort(cnt, descending=True, stable=True)
        cnt, first = cnt[by_count], first[by_count]
        steps = min(int(cnt[0]), _PHASE_STEPS)
        active = torch.searchsorted(-cnt, -torch.arange(steps), side="left").tolist()
        nc = ncand[todo]
        widths = torch.zeros(steps + 1, dtype=torch.long).scatter_reduce(
            0, step_of.clamp_max(steps), nc, "amax")[:steps].tolist()
        t_idx = t_all.expand(active[0], nt)
        for k in range(steps):  # the k-th remaining row of every active group, all at once
            a, w = active[k], widths[k]
            r = todo[first[:a] + k]
            cols = ar_w[:w]
            idx = (c_off[r][:, None] + cols).clamp_max(last)  # [A, W] into the flat pairs
            ok = cols < ncand[r][:, None]
            g = j[idx]
            elig = (iou[idx][:, :, None] >= thr) & ok[:, :, None] & ~matched[g]  # [A, W, T]
            hit, jj = elig.max(1)  # first eligible = highest tIoU (ties: lowest index); bool max
            gsel = g.gather(1, jj)  # [A, T]
            matched[gsel, t_idx[:a]] |= hit  # distinct groups never share a ground truth
            out_r.append(r)
            out_hit.append(hit)
            out_g.append(gsel)
        # rows left: drop those whose every candidate is matched at every threshold it reaches
        # (they are FPs whatever happens next); keep the (group, rank) order
        todo = todo[step_of >= steps]
        if todo.numel():
            nc = ncand[todo]
            pr = torch.repeat_interleave(torch.arange(todo.numel()), nc)
            pp = torch.repeat_interleave(c_off[todo], nc) + (torch.arange(pr.numel()) - torch.repeat_interleave(torch.cumsum(nc, 0) - nc, nc))
            live = ((iou[pp][:, None] >= thr) & ~matched[j[pp]]).any(1)
            alive = torch.zeros(todo.numel(), dtype=torch.bool)
            alive[pr[live]] = True
            todo = todo[alive]
    if not out_hit:
        return empty
    hit = torch.cat(out_hit)
    rr, tt = torch.nonzero(hit, as_tuple=True)
    return rel[torch.cat(out_r)[rr]], tt, torch.cat(out_g)[rr, tt]


def average_precision(match_rank: torch.Tensor, match_cls: torch.Tensor, match_t: torch.Tensor,
                      npos: torch.Tensor, num_thresholds: int) -> torch.Tensor:
    """All-point interpolated AP per class and threshold from the true positives alone.

    ``match_rank`` is each TP's 1-based rank among its class's predictions, ``match_cls`` its
    class, ``match_t`` its threshold index; ``npos [C]`` counts ground truth per class. Returns
    ``[C, T]`` float64 (0 for classes without ground truth or TPs).

    The precision made monotone from the right, read at a TP, is the largest precision at any TP
    at or after it (precision only falls at a FP), so AP = sum over TPs of that value / npos.
    """
    num_classes = npos.numel()
    ap = torch.zeros(num_classes * num_thresholds, dtype=torch.float64)
    if match_rank.numel() == 0:
        return ap.reshape(num_classes, num_thresholds)
    seg = match_t * num_classes + match_cls  # one segment per (threshold, class)
    o = torch.argsort(match_rank, stable=True)
    o = o[torch.argsort(seg[o], stable=True)]
    seg, rank = seg[o], match_rank[o].double()
    counts = torch.bincount(seg, minlength=num_classes * num_thresholds)
    start = torch.cumsum(counts, 0) - counts
    ctp = (torch.arange(seg.numel()) - start[seg] + 1).double()
    prec = ctp / rank
    off = 2.0 * seg.double()  # segments later in the flipped order get larger offsets
    smax = torch.cummax((prec - off).flip(0), 0).values.flip(0) + off
    n = npos.double()[seg % num_classes]
    ap.index_add_(0, seg, smax / n)
    return ap.reshape(num_thresholds, num_classes).T.contiguous()


# ----------------------------------------------------------------------------- evaluate
def evaluate(
    gt: Mapping[str, Instances],
    preds: Mapping[str, Instances],
    num_classes: int,
    tiou_thresholds: Sequence[float],
) -> dict:
    """Detection mAP (ActivityNet protocol, see the module docstring).

    Returns ``{"tiou": [...], "mAP": [...], "average": float, "per_class": {class: [AP per
    threshold]}, "num_gt": int, "num_predictions": int}``; mAP/AP are fractions, ``per_class``
    lists the classes present in the ground truth.
    """
    with single_thread():
        return _evaluate(gt, preds, num_classes, tiou_thresholds)


def _evaluate(gt, preds, num_classes, tiou_thresholds) -> dict:
    thr = parse_thresholds(tiou_thresholds)
    vid_index = {v: i for i, v in enumerate(gt)}
    g_vid, g_seg, g_lab, _ = flatten(gt, vid_index, num_classes, "ground truth")
    keep = dedup_ground_truth(g_vid, g_seg, g_lab)
    g_vid, g_seg, g_lab = g_vid[keep], g_seg[keep], g_lab[keep]
    npos = torch.bincount(g_lab, minlength=num_classes)
    present = torch.nonzero(npos > 0).reshape(-1)
    if present.numel() == 0:
        raise NocoError("the ground truth holds no action instance: mAP is undefined")
    p_vid, p_seg, p_lab, p_score = flatten(preds, vid_index, num_classes, "predictions")
    # rank order: per class, score descending; ties by input order (stable sorts)
    order = torch.argsort(p_score, descending=True, stable=True)
    order = order[torch.argsort(p_lab[order], stable=True)]
    rank_pos = torch.empty_like(order)
    rank_pos[order] = torch.arange(order.numel())
    class_start = torch.cumsum(torch.bincount(p_lab, minlength=num_classes), 0) - torch.bincount(p_lab, minlength=num_classes)
    g_key = g_vid * num_classes + g_lab
    p_key = torch.where(p_vid >= 0, p_vid * num_classes + p_lab, torch.full_like(p_vid, -1))
    mp, mt, _ = match_greedy(g_seg, g_key, p_seg, p_key, rank_pos, thr)
    mc = p_lab[mp]
    ap = average_precision(rank_pos[mp] - class_start[mc] + 1, mc, mt, npos, thr.numel())
    m_ap = ap[present].mean(0)
    return {
        "tiou": [round(float(t), 6) for t in thr.tolist()],
        "mAP": [float(x) for x in m_ap.tolist()],
        "average": float(m_ap.mean()),
        "per_class": {int(c): [float(x) for x in ap[c].tolist()] for c in present.tolist()},
        "num_gt": int(g_lab.numel()),
        "num_predictions": int(p_lab.numel()),
    }


# The papers' averages: name -> the thresholds that must all have been evaluated.
NAMED_AVERAGES = {
    "0.1:0.5": [0.1, 0.2, 0.3, 0.4, 0.5],
    "0.3:0.7": [0.3, 0.4, 0.5, 0.6, 0.7],
    "0.1:0.7": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    "0.5:0.95": [round(0.5 + 0.05 * i, 2) for i in range(10)],
}


def named_averages(tiou: list[float], maps: list[float]) -> dict[str, float]:
    """The papers' averages whose exact thresholds were all evaluated (THUMOS14: 0.1:0.5, 0.3:0.7,
    0.1:0.7; ActivityNet: 0.5:0.95)."""
    at = {round(float(t), 6): m for t, m in zip(tiou, maps)}
    out = {}
    for name, ts in NAMED_AVERAGES.items():
        if all(round(t, 6) in at for t in ts):
            out[name] = sum(at[round(t, 6)] for t in ts) / len(ts)
    return out
