"""Ambiguous Instance Correction (AIC, NoCo Eqs. 4-6), vectorized over labels x teacher detections.

The keyword defaults are NOCO.md's suggested values (the hand-computed tests use them). The
pipeline always passes ``CorrectionConfig``'s, whose confidence defaults are on TriDet's score scale
(docs/METHOD.md)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..labels.cala import _check_weight_kind, _intervals, association_weights, check_instances
from ..labels.instances import Instances


class AICResult(NamedTuple):
    labels: Instances          # corrected labels, same order and length as the input
    corrected: torch.Tensor    # [N] bool: the label had a non-empty associated set
    num_assoc: torch.Tensor    # [N] long: |A_i|


def aic_detailed(
    labels: Instances,
    teacher: Instances,
    iou_thresh: float = 0.6,
    conf_thresh: float = 0.4,
    lam: float = 1.0,
    beta: float = 0.7,
    same_class: bool = True,
    weight: str = "iou",
    decay_unsupported: bool = False,
    *,
    what: str = "labels",
) -> AICResult:
    """AIC with per-label bookkeeping; see :func:`aic`."""
    _check_weight_kind(weight)
    check_instances(labels, what)
    check_instances(teacher, f"{what}: teacher detections")
    n = len(labels)
    dev = labels.segments.device
    # Eq. 6 for a label the teacher does not support (empty A_i): it keeps its weight, or with
    # ``decay_unsupported`` gets the teacher's vote 0: w_hat = beta w_i
    kept_w = beta * labels.weights if decay_unsupported else labels.weights
    if n == 0 or len(teacher) == 0:
        return AICResult(Instances(labels.segments, labels.labels, labels.scores, kept_w),
                         torch.zeros(n, dtype=torch.bool, device=dev), torch.zeros(n, dtype=torch.long, device=dev))
    teacher = teacher.to(dev)
    iou = _intervals().pairwise_tiou(labels.segments, teacher.segments).to(torch.float32)  # [N, M]
    assoc = (iou > iou_thresh) & (teacher.scores > conf_thresh)[None, :]
    if same_class:
        assoc &= labels.labels[:, None] == teacher.labels[None, :]
    w = association_weights(iou, teacher.scores, assoc, weight)        # [N, M]
    k = assoc.sum(dim=1)                                               # |A_i|
    kf = k.to(torch.float32)
    sum_w = w.sum(dim=1)
    inertia = lam * kf * labels.weights                                # lam |A_i| w_i
    num = inertia[:, None] * labels.segments + w @ teacher.segments    # Eqs. 4-5 numerators
    den = inertia + sum_w
    corrected = (k > 0) & (den > 0)
    new_seg = torch.where(corrected[:, None], num / den.clamp_min(1e-30)[:, None], labels.segments)
    mean_w = sum_w / kf.clamp_min(1.0)
    new_w = torch.where(corrected, beta * labels.weights + (1.0 - beta) * mean_w, kept_w)  # Eq. 6
    out = Instances(new_seg, labels.labels, labels.scores, new_w)
    return AICResult(out, corrected, k)


def aic(
    labels: Instances,
    teacher: Instances,
    iou_thresh: float = 0.6,
    conf_thresh: float = 0.4,
    lam: float = 1.0,
    beta: float = 0.7,
    same_class: bool = True,
    weight: str = "iou",
    decay_unsupported: bool = False,
) -> Instances:
    """Correct each label ``p_i`` (weight ``w_i``) with its associated teacher detections.

    ``A_i`` = teacher detections with ``IoU(p_i, q_k) > iou_thresh``, ``score > conf_thresh`` and
    (when ``same_class``) the label's class; ``w_ik`` by Eq. 1 (``weight`` "iou" or "vote"). If
    ``A_i`` is not empty: ``t_hat = (lam |A_i| w_i t_i + sum_k w_ik t_k) / (lam |A_i| w_i + sum_k w_ik)``
    for start and end, ``w_hat = beta w_i + (1 - beta) mean_k w_ik``. Labels with an empty set keep
    their boundaries and their weight, or, with ``decay_unsupported``, count the teacher's vote as 0:
    ``w_hat = beta w_i`` (a label the teacher keeps not confirming fades from the HPM loss). Classes
    and scores are unchanged; the output keeps the input order.
    """
    return aic_detailed(labels, teacher, iou_thresh, conf_thresh, lam, beta, same_class, weight,
                        decay_unsupported).labels
