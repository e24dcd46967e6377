"""Pseudo-label quality on a labelled set: which kind of noise each stage removes (NOCO.md).

``label_quality(gt, labels, durations, num_classes)`` measures, over the videos of ``gt``:

* ``mIoU`` -- the paper's frame-level metric: GT and labels rasterised at ``frame_rate`` Hz
  (frame ``f`` covers the instant ``(f + 0.5) / frame_rate``; a frame is positive for class c
  when that instant lies in ``[start, end)`` of a class-c instance; multi-label), IoU per class
  over the frames of all videos, background = frames with no class; the mean runs over the
  classes with ground-truth frames plus background;
* ``precision`` / ``recall`` at tIoU 0.5 -- greedy one-to-one matching, labels by score
  (ties: input order), same class, the same rule as detection mAP;
* ``start_error`` / ``end_error`` -- mean absolute boundary errors (s) of the labels matched to
  a same-class GT at tIoU >= 0.3 (same greedy matching);
* ``recall_by_length`` -- recall at tIoU 0.5 of GT shorter than 2 s, 2-6 s, longer than 6 s
  (missed short instances);
* ``merge_rate`` -- fraction of labels covering at least half of each of two or more same-class
  GT instances (merged adjacent instances);
* ``absent_class_labels`` -- labels of a class the video has no instance of (its video-level
  labels rule them out).

Ground-truth duplicates count once (as in detection mAP); labels of videos outside ``gt`` are
ignored (counted in ``ignored_videos``). Metrics without a denominator are ``None``.
Frames are counted from sorted boundary events, never materialised, so long datasets are cheap.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from ..errors import DataError
from ..labels.instances import Instances
from .detection import dedup_ground_truth, flatten, match_greedy, single_thread

__all__ = ["label_quality", "match_labels", "LENGTH_BINS"]

LENGTH_BINS = (("short", 0.0, 2.0), ("medium", 2.0, 6.0), ("long", 6.0, math.inf))  # [lo, hi)


def _frame_counts(key, f0, f1, is_gt, num_keys):
    """Per key: frames covered by GT, by both GT and labels, by either (from [f0, f1) ranges)."""
    out = torch.zeros(3, num_keys, dtype=torch.float64)
    keep = f1 > f0
    key, f0, f1, is_gt = key[keep], f0[keep], f1[keep], is_gt[keep]
    if key.numel() == 0:
        return out
    ev_key = torch.cat([key, key])
    ev_frame = torch.cat([f0, f1])
    delta = torch.cat([torch.ones_like(f0), -torch.ones_like(f1)])
    ev_gt = torch.cat([is_gt, is_gt])
    o = torch.argsort(ev_frame, stable=True)
    o = o[torch.argsort(ev_key[o], stable=True)]
    ev_key, ev_frame, delta, ev_gt = ev_key[o], ev_frame[o], delta[o], ev_gt[o]
    # coverage after each event (each key's events sum to zero, so one global cumsum works)
    cov_gt = torch.cumsum(torch.where(ev_gt, delta, torch.zeros_like(delta)), 0)
    cov_lab = torch.cumsum(torch.where(ev_gt, torch.zeros_like(delta), delta), 0)
    length = torch.zeros_like(ev_frame)
    same = ev_key[1:] == ev_key[:-1]
    length[:-1] = torch.where(same, ev_frame[1:] - ev_frame[:-1], torch.zeros_like(ev_frame[1:]))
    length = length.double()
    g, lb = cov_gt > 0, cov_lab > 0
    out[0].index_add_(0, ev_key, torch.where(g, length, torch.zeros_like(length)))
    out[1].index_add_(0, ev_key, torch.where(g & lb, length, torch.zeros_like(length)))
    out[2].index_add_(0, ev_key, torch.where(g | lb, length, torch.zeros_like(length)))
    return out


def _mean_or_none(x: torch.Tensor):
    return float(x.double().mean()) if x.numel() else None


def match_labels(gt: Mapping[str, Instances], labels: Mapping[str, Instances], num_classes: int,
                 thresholds=(0.5,)):
    """The matching every label metric uses: ground truth (duplicates once) and the labels of its
    videos, flattened in ``gt``'s video order, and their greedy one-to-one matches per threshold
    (labels by descending score, ties in input order; same video and class).

    Returns ``(g_vid, g_seg, g_lab), (l_vid, l_seg, l_lab, l_score, l_weight), (label, threshold
    index, gt)`` (segments and scores float64)."""
    vids = list(gt)
    vid_index = {v: i for i, v in enumerate(vids)}
    g_vid, g_seg, g_lab, _ = flatten(gt, vid_index, num_classes, "ground truth")
    keep = dedup_ground_truth(g_vid, g_seg, g_lab)
    g_vid, g_seg, g_lab = g_vid[keep], g_seg[keep], g_lab[keep]
    ours = {v: labels[v] for v in vids if v in labels}
    l_vid, l_seg, l_lab, l_score = flatten(ours, vid_index, num_classes, "labels")
    l_weight = torch.cat([i.weights.detach().cpu().double().reshape(-1) for i in ours.values()]) if ours \
        else torch.zeros(0, dtype=torch.float64)
    order = torch.argsort(l_score, descending=True, stable=True)
    rank_pos = torch.empty_like(order)
    rank_pos[order] = torch.arange(order.numel())
    matches = match_greedy(g_seg, g_vid * num_classes + g_lab, l_seg, l_vid * num_classes + l_lab, rank_pos,
                           torch.tensor([float(t) for t in thresholds], dtype=torch.float64))
    return (g_vid, g_seg, g_lab), (l_vid, l_seg, l_lab, l_score, l_weight), matches


def label_quality(
    gt: Mapping[str, Instances],
    labels: Mapping[str, Instances],
    durations: Mapping[str, float],
    num_classes: int,
    frame_rate: float = 10.0,
) -> dict:
    """Quality of pseudo-labels ``labels`` against ``gt`` (see the module docstring)."""
    with single_thread():
        return _label_quality(gt, labels, durations, num_classes, frame_rate)


def _label_quality(gt, labels, durations, num_classes, frame_rate):
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
    vids = list(gt)
    problems = []
    dur = []
    for v in vids:
        d = durations.get(v)
        if not isinstance(d, (int, float)) or isinstance(d, bool) or not math.isfinite(d) or d <= 0:
            problems.append(f"video {v}: field 'duration' must be a positive number, found {d!r}")
            d = 0.0
        dur.append(float(d))
    if problems:
        raise DataError(problems, header="cannot measure label quality")
    ignored = sum(1 for v in labels if v not in gt)
    (g_vid, g_seg, g_lab), (l_vid, l_seg, l_lab, l_score, _), (mp, mt, mg) = match_labels(
        gt, labels, num_classes, (0.3, 0.5))
    n_gt, n_lab = g_lab.numel(), l_lab.numel()

    # ---- frame-level IoU (per class, and class-agnostic for the background)
    dur_t = torch.tensor(dur, dtype=torch.float64)
    n_frames = torch.ceil(dur_t * frame_rate - 1e-9).clamp_min(1).long()
    all_vid = torch.cat([g_vid, l_vid])
    all_seg = torch.cat([g_seg, l_seg])
    all_lab = torch.cat([g_lab, l_lab])
    is_gt = torch.cat([torch.ones(n_gt, dtype=torch.bool), torch.zeros(n_lab, dtype=torch.bool)])
    nf = n_frames[all_vid] if all_vid.numel() else torch.zeros(0, dtype=torch.long)
    f0 = torch.minimum(torch.ceil(all_seg[:, 0] * frame_rate - 0.5).clamp_min(0).long(), nf)
    f1 = torch.minimum(torch.ceil(all_seg[:, 1] * frame_rate - 0.5).clamp_min(0).long(), nf)
    per_cls = _frame_counts(all_vid * num_classes + all_lab, f0, f1, is_gt, len(vids) * num_classes)
    per_cls = per_cls.reshape(3, len(vids), num_classes).sum(1)  # [gt, both, either] x C
    anyc = _frame_counts(all_vid, f0, f1, is_gt, len(vids)).sum(1)  # [gt, both, either]
    total = float(n_frames.sum())
    bg_inter = total - float(anyc[2])  # no GT and no label
    bg_union = total - float(anyc[1])  # background in GT or in labels
    with_gt = torch.nonzero(per_cls[0] > 0).reshape(-1)
    cls_iou = {int(c): float(per_cls[1, c] / per_cls[2, c]) for c in with_gt.tolist()}
    ious = list(cls_iou.values())
    bg_iou = bg_inter / bg_union if bg_union > 0 else None
    if bg_iou is not None:
        ious.append(bg_iou)
    m_iou = sum(ious) / len(ious) if ious else None

    # ---- instance matching at tIoU 0.3 (boundary error) and 0.5 (precision / recall)
    g_key = g_vid * num_classes + g_lab
    l_key = l_vid * num_classes + l_lab
    at3, at5 = mt == 0, mt == 1
    tp5 = int(at5.sum())
    err = (l_seg[mp[at3]] - g_seg[mg[at3]]).abs()
    gt_hit = torch.zeros(n_gt, dtype=torch.bool)
    gt_hit[mg[at5]] = True
    g_len = g_seg[:, 1] - g_seg[:, 0]
    by_len, gt_by_len = {}, {}
    for name, lo, hi in LENGTH_BINS:
        inbin = (g_len >= lo) & (g_len < hi)
        n = int(inbin.sum())
        gt_by_len[name] = n
        by_len[name] = float(gt_hit[inbin].sum()) / n if n else None

    # ---- merges: labels covering >= half of each of two or more same-class GT instances
    merged = 0
    if n_lab and n_gt:
        from ..ops.intervals import _StartIndex

        covered = torch.zeros(n_lab, dtype=torch.long)
        index = _StartIndex(g_seg, g_key, 0.0)
        for q, j in index.query(l_seg, l_key):
            inter = (torch.minimum(l_seg[q, 1], g_seg[j, 1]) - torch.maximum(l_seg[q, 0], g_seg[j, 0])).clamp_min(0)
            ok = (l_key[q] == g_key[j]) & (g_len[j] > 0) & (inter >= 0.5 * g_len[j])
            covered.index_add_(0, q[ok], torch.ones_like(q[ok]))
        merged = int((covered >= 2).sum())

    return {
        "num_videos": len(vids),
        "num_gt": n_gt,
        "num_labels": n_lab,
        "ignored_videos": ignored,
        "mIoU": m_iou,
        "frame_iou": cls_iou,
        "background_iou": bg_iou,
        "precision": tp5 / n_lab if n_lab else None,
        "recall": tp5 / n_gt if n_gt else None,
        "boundary_matches": int(at3.sum()),
        "start_error": _mean_or_none(err[:, 0]),
        "end_error": _mean_or_none(err[:, 1]),
        "recall_by_length": by_len,
        "gt_by_length": gt_by_len,
        "merge_rate": merged / n_lab if n_lab else None,
        "merged_labels": merged,
        # labels of a class the video has no instance of (video-level labels rule them out)
        "absent_class_labels": int((~torch.isin(l_key, g_key)).sum()),
    }
