"""Missing Instance Compensation (MIC, NoCo Eq. 7), vectorized.

The keyword defaults are NOCO.md's suggested values (the hand-computed tests use them). The
pipeline always passes ``CorrectionConfig``'s, whose confidence defaults are on TriDet's score scale
(docs/METHOD.md)."""

from __future__ import annotations

import torch

from ..labels.cala import _by_score, _intervals, check_instances
from ..labels.instances import Instances


def confident_detections(teacher: Instances, conf_thresh: float, nms_thresh: float) -> Instances:
    """``NMS_per_class({q : s_q >= conf_thresh}, nms_thresh)``, by descending score."""
    cand = (teacher.scores >= conf_thresh) & (teacher.segments[:, 1] > teacher.segments[:, 0])
    idx = cand.nonzero().flatten()
    if idx.numel() == 0:
        return Instances.empty().to(teacher.segments.device)
    keep = _intervals().batched_nms(teacher.segments[idx], teacher.scores[idx], teacher.labels[idx], nms_thresh)
    return teacher.select(_by_score(idx[torch.as_tensor(keep, dtype=torch.long, device=idx.device)], teacher.scores))


def pool_support(pool: Instances, conf_thresh: float) -> Instances:
    """MIC's support from a proposal pool (``correction.mic_pool_conf``): its proposals scoring at
    least ``conf_thresh``."""
    return pool.select(pool.scores >= conf_thresh)


def mic_candidates(
    labels: Instances,
    teacher: Instances,
    conf_thresh: float = 0.6,
    nms_thresh: float = 0.4,
    iou_thresh: float = 0.2,
    same_class: bool = True,
    *,
    support: Instances | None = None,
    support_iou: float = 0.5,
    what: str = "labels",
) -> Instances:
    """The compensation set ``C``: confident, NMS-ed teacher detections whose maximum IoU with the
    labels (of the same class when ``same_class``) is below ``iou_thresh``; weight = score (Eq. 7).

    ``support`` (not in NOCO.md; ``correction.mic_pool_conf``): when given, a candidate is kept only
    if a ``support`` instance of its class overlaps it at tIoU >= ``support_iou`` (the pipeline passes
    the base model's pool proposals above a score: the teacher and the base model must agree)."""
    check_instances(labels, what)
    check_instances(teacher, f"{what}: teacher detections")
    teacher = teacher.to(labels.segments.device)
    q = confident_detections(teacher, conf_thresh, nms_thresh)
    if len(q) == 0:
        return q
    if len(labels) > 0:
        q = q.select(_max_iou(q, labels, same_class) < iou_thresh)
    if support is not None and len(q) > 0:
        check_instances(support, f"{what}: MIC's support")
        q = q.select(_max_iou(q, support.to(q.segments.device), True) >= support_iou)
    return Instances(q.segments, q.labels, q.scores, q.scores.clone())


def _max_iou(q: Instances, other: Instances, same_class: bool) -> torch.Tensor:
    """[len(q)] float32: each of ``q``'s best tIoU with ``other`` (of its class when ``same_class``; 0
    when ``other`` is empty)."""
    if len(other) == 0:
        return q.scores.new_zeros(len(q), dtype=torch.float32)
    iou = _intervals().pairwise_tiou(q.segments, other.segments).to(torch.float32)  # [M, N]
    iou = torch.nan_to_num(iou, nan=0.0)
    if same_class:
        iou = torch.where(q.labels[:, None] == other.labels[None, :], iou, iou.new_zeros(()))
    return iou.max(dim=1).values


def mic(
    labels: Instances,
    teacher: Instances,
    conf_thresh: float = 0.6,
    nms_thresh: float = 0.4,
    iou_thresh: float = 0.2,
    same_class: bool = True,
) -> Instances:
    """``labels ∪ C`` (see :func:`mic_candidates`). The labels come first, unchanged, and the added
    instances are appended after them, so ``len(result) - len(labels)`` is the number added."""
    c = mic_candidates(labels, teacher, conf_thresh, nms_thresh, iou_thresh, same_class)
    if len(c) == 0:
        return labels
    return Instances.cat([labels, c])
