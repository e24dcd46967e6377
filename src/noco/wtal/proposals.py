"""Test-time proposals of CAS/attention-based WTAL models (WTAL.md), vectorized.

Pipeline for one video: class selection -> linear up-sampling of the CAS and the foreground
attention -> thresholds at many levels -> every connected run of >= ``min_points`` points is a
proposal -> outer-inner contrastive (OIC) score -> seconds. The dense set is the proposal pool O;
``nms_detections`` turns it into detections. No Python loop runs over proposals: all runs of all
thresholds and classes are found at once from a [rows, points] mask.

Time mapping. The model sees ``N`` positions of a video with ``T`` snippets (``N = T`` when the
whole video is used, ``N < T`` after uniform sampling); position ``j`` stands for the grid cell
``[j*w - 0.5, (j+1)*w - 0.5]`` with ``w = T / N`` (snippet ``i`` is centred on grid ``i``). After
up-sampling by ``s`` (linear, centre-aligned), point ``u`` stands for
``[u*w/s - 0.5, (u+1)*w/s - 0.5]``. A run of points ``[a, b)`` therefore spans grid
``[a*w/s - 0.5, b*w/s - 0.5]``, converted with ``noco.data.grid.grid_to_sec`` at the video's fps;
a run touching the first (last) point starts at 0 s (ends at the video's duration); all times are
clipped to ``[0, duration]``.

Scores. ``oic = mean(inside) - mean(flanks) + gamma * video_score`` where each flank is
``ceil(flank_ratio * run length)`` points long (clipped at the video's ends; no flank -> outer
mean 0). OIC is not a probability; ``score_to_confidence`` maps it monotonically to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.grid import grid_to_sec
from ..labels.instances import Instances


def select_classes(video_scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Classes whose video score exceeds ``threshold``; if none, the best class. Returns long [C]."""
    keep = torch.nonzero(video_scores > threshold).flatten()
    if keep.numel() == 0:
        keep = torch.argmax(video_scores).reshape(1)
    return keep


def upsample(seq: torch.Tensor, factor: int) -> torch.Tensor:
    """Linear, centre-aligned up-sampling along the last axis: [..., N] -> [..., N * factor]."""
    if factor == 1:
        return seq.clone()
    shape = seq.shape
    flat = seq.reshape(1, -1, shape[-1]).to(torch.float32)
    up = F.interpolate(flat, scale_factor=factor, mode="linear", align_corners=False)
    return up.reshape(*shape[:-1], shape[-1] * factor)


def find_runs(masks: torch.Tensor, min_points: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Connected runs of True in each row of ``masks`` [R, L].

    Returns ``(row, start, end)`` long tensors; a run covers points ``start .. end - 1``. Runs shorter
    than ``min_points`` are dropped. Order: by row, then by start.
    """
    r, length = masks.shape
    pad = torch.zeros(r, 1, dtype=torch.int8, device=masks.device)
    m = torch.cat([pad, masks.to(torch.int8), pad], dim=1)
    d = m[:, 1:] - m[:, :-1]  # [R, L+1]: +1 where a run starts, -1 one past where it ends
    starts = torch.nonzero(d == 1)  # row-major order: runs pair up one-to-one with ends
    ends = torch.nonzero(d == -1)
    row, start, end = starts[:, 0], starts[:, 1], ends[:, 1]
    keep = (end - start) >= min_points
    return row[keep], start[keep], end[keep]


def oic_scores(seq: torch.Tensor, row: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
               flank_ratio: float) -> torch.Tensor:
    """Outer-inner contrast of runs: mean of ``seq[row, start:end]`` minus the mean over both flanks.

    ``seq`` [R, L]; each flank has ``ceil(flank_ratio * (end - start))`` points (so even a 2-point
    run is contrasted with its neighbours), clipped to [0, L);
    the outer mean is taken over all flank points together (0 when there are none).
    """
    length = seq.shape[1]
    cs = torch.cat([torch.zeros(seq.shape[0], 1, dtype=torch.float64, device=seq.device),
                    torch.cumsum(seq.to(torch.float64), dim=1)], dim=1)  # [R, L+1]
    n = (end - start)
    f = torch.ceil(n.to(torch.float64) * flank_ratio - 1e-9).long()
    ls = torch.clamp(start - f, min=0)
    re = torch.clamp(end + f, max=length)
    inner = (cs[row, end] - cs[row, start]) / n.to(torch.float64)
    outer_sum = (cs[row, start] - cs[row, ls]) + (cs[row, re] - cs[row, end])
    outer_n = (start - ls) + (re - end)
    outer = torch.where(outer_n > 0, outer_sum / outer_n.clamp(min=1).to(torch.float64),
                        torch.zeros((), dtype=torch.float64, device=seq.device))
    return (inner - outer).to(torch.float32)


def score_to_confidence(oic: torch.Tensor, mapping: str = "linear", scale: float = 1.0) -> torch.Tensor:
    """Monotone map of OIC scores to confidences: ``linear`` -> clamp(oic / scale, 0, 1);
    ``oic`` -> the raw score."""
    if mapping == "linear":
        return (oic / scale).clamp(0.0, 1.0)
    if mapping == "oic":
        return oic
    raise ValueError(f"unknown score mapping {mapping!r}")


@dataclass
class VideoMeta:
    """What the time conversion needs of one video (a WeakVideo has all of it)."""

    num_snippets: int
    duration: float
    fps: float


def video_proposals(
    cas: torch.Tensor,
    fg_att: torch.Tensor,
    classes: torch.Tensor,
    video_scores: torch.Tensor,
    meta: VideoMeta,
    *,
    feat_stride: int,
    num_frames: int,
    cas_thresholds,
    att_thresholds,
    upsample_factor: int = 24,
    min_points: int = 2,
    flank_ratio: float = 0.2,
    gamma: float = 0.2,
    score_mapping: str = "linear",
    oic_scale: float = 1.0,
    min_score: float | None = None,
) -> Instances:
    """Dense (pre-NMS) proposals of one video.

    ``cas`` [N, K]: per-position class activation (ASM-Loc: softmax over K+1, times the foreground
    attention, background column dropped); ``fg_att`` [N]; ``classes`` long [C]: the classes to
    localise; ``video_scores`` [K]. CAS-threshold proposals of class c come from ``cas[:, c] >= thr``,
    attention-threshold proposals from ``fg_att >= thr`` (for every selected class); both are scored
    by the OIC of ``cas[:, c]``. Returns Instances in seconds with ``scores`` = mapped confidence
    (``score_to_confidence``) and ``weights`` = 1; with ``min_score``, only scores above it are kept.
    """
    classes = torch.as_tensor(classes, dtype=torch.long).flatten()
    n_pos = cas.shape[0]
    if classes.numel() == 0 or n_pos == 0:
        return Instances.empty()
    seq = upsample(cas[:, classes].t().contiguous(), upsample_factor)  # [C, L]
    att = upsample(fg_att.reshape(1, -1), upsample_factor)  # [1, L]
    n_cls, length = seq.shape
    cas_thr = torch.as_tensor(list(cas_thresholds), dtype=torch.float32).reshape(-1, 1, 1)
    att_thr = torch.as_tensor(list(att_thresholds), dtype=torch.float32).reshape(-1, 1, 1)
    masks = torch.cat([
        (seq[None] >= cas_thr).reshape(-1, length),                                   # [Tc*C, L]
        (att[None] >= att_thr).expand(-1, n_cls, length).reshape(-1, length),         # [Ta*C, L]
    ], dim=0)
    row, start, end = find_runs(masks, min_points)
    if row.numel() == 0:
        return Instances.empty()
    cls_row = row % n_cls  # rows are (threshold, class) in class-fastest order
    oic = oic_scores(seq, cls_row, start, end, flank_ratio)
    label = classes[cls_row]
    oic = oic + gamma * video_scores.to(torch.float32)[label]
    # points -> seconds
    w = float(meta.num_snippets) / float(n_pos)
    step = w / upsample_factor
    g0 = start.to(torch.float64) * step - 0.5
    g1 = end.to(torch.float64) * step - 0.5
    t0 = grid_to_sec(g0, meta.fps, feat_stride, num_frames)
    t1 = grid_to_sec(g1, meta.fps, feat_stride, num_frames)
    t0 = torch.where(start == 0, torch.zeros_like(t0), t0)
    t1 = torch.where(end == length, torch.full_like(t1, float(meta.duration)), t1)
    t0 = t0.clamp(0.0, float(meta.duration))
    t1 = t1.clamp(0.0, float(meta.duration))
    segs = torch.stack([t0, t1], dim=1).to(torch.float32)
    conf = score_to_confidence(oic, score_mapping, oic_scale)
    out = Instances.create(segs, label, conf, torch.ones_like(conf))
    if min_score is not None:
        out = out.select(torch.nonzero(conf > min_score).flatten())
    return out


def nms_detections(pool: Instances, iou_threshold: float, max_num: int = 0) -> Instances:
    """Per-class NMS of a proposal pool, best first; ``max_num`` > 0 keeps at most that many."""
    from ..ops.intervals import batched_nms

    if len(pool) == 0:
        return pool
    keep = batched_nms(pool.segments, pool.scores, pool.labels, iou_threshold)
    out = pool.select(torch.as_tensor(keep, dtype=torch.long))
    out = out.sorted_by_score()
    if max_num and len(out) > max_num:
        out = out.select(torch.arange(max_num))
    return out
