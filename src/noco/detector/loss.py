"""TriDet losses with NoCo's HPM weighting (TRIDET.md, NOCO.md Eq. 8).

- sigmoid focal loss over every valid point x class; on positive (point, class) pairs it is
  multiplied by ``IoU(pred, gt) ** p`` (not detached);
- 1-D DIoU loss on positive pairs, with the prediction decoded by the Trident head for the pair's
  class;
- HPM: every term of a positive point (its focal terms over all classes and its DIoU terms) is
  multiplied by the weight of the instance the point is assigned to; background points keep
  weight 1. The caller divides the sums by the moving-average positive count;
- uncertain regions (``ignore_t``, optional): the focal term of a (point, class) pair inside one
  of the class's regions is dropped unless the point is positive for the class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import trident_offsets

_EPS = 1e-8


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Element-wise focal loss (Lin et al.), same shape as ``logits``."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def diou_loss_1d(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D DIoU loss and IoU of segments given as (left, right) distances from a shared point.

    ``pred``, ``target``: ``[K, 2]`` non-negative. Returns ``(1 - IoU + (dc / enclosing)^2, IoU)``.
    """
    lp, rp = pred[:, 0], pred[:, 1]
    lg, rg = target[:, 0], target[:, 1]
    inter = torch.minimum(lp, lg) + torch.minimum(rp, rg)
    union = lp + rp + lg + rg - inter
    iou = inter / union.clamp(min=_EPS)
    enclosing = torch.maximum(lp, lg) + torch.maximum(rp, rg)
    rho = 0.5 * (rp - lp - rg + lg)
    return 1.0 - iou + (rho / enclosing.clamp(min=_EPS)) ** 2, iou


def detection_loss(out: dict[str, torch.Tensor], cls_t: torch.Tensor, reg_t: torch.Tensor,
                   weight_t: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0,
                   iou_power: float = 0.2, ignore_t: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Un-normalised loss sums of a batch.

    ``out``: the model's output dict; ``cls_t`` [N, L, C], ``reg_t`` [N, L, 2], ``weight_t`` [N, L]
    from ``assign_labels``; ``ignore_t`` [N, L, C] bool from ``ignore_mask`` (None: no region).
    Returns ``(focal_sum, diou_sum, num_pos)``.
    """
    valid = out["mask"]
    pos = (cls_t.sum(-1) > 0) & valid
    focal = sigmoid_focal_loss(out["cls"], cls_t, alpha, gamma)
    b, p, c = torch.nonzero((cls_t > 0) & pos[..., None], as_tuple=True)
    pred = trident_offsets(out["start"], out["end"], out["offsets"], b, p, c)
    diou, iou = diou_loss_1d(pred, reg_t[b, p])
    if iou_power > 0 and b.numel():
        rate = torch.ones_like(focal).index_put((b, p, c), iou.clamp(min=_EPS) ** iou_power)
        focal = focal * rate
    if ignore_t is not None:
        focal = focal.masked_fill(ignore_t & (cls_t <= 0), 0.0)
    row_w = torch.where(pos, weight_t, torch.ones_like(weight_t))
    focal_sum = (focal.sum(-1) * row_w)[valid].sum()
    diou_sum = (diou * weight_t[b, p]).sum()
    return focal_sum, diou_sum, int(pos.sum())
