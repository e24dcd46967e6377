"""TriDet / ActionFormer label assignment, vectorized over points x instances (TRIDET.md).

A point ``t`` (base-grid position, level stride ``s``, regression range ``[lo, hi]``) is positive
for an instance ``[a, b]`` when it lies strictly inside the instance and strictly within
``radius * s`` of the instance centre, and ``max(t - a, b - t)`` falls in ``[lo, hi]``. Among the
instances left, the shortest wins; instances whose length is within ``1e-3`` of the shortest
contribute their classes multi-hot. The regression target and the point's weight come from the
first shortest instance.
"""

from __future__ import annotations

import torch

TIE_EPS = 1e-3


def assign_labels(points: torch.Tensor, segments: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                  num_classes: int, radius: float, valid: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets of one video.

    ``points`` [P, 4] = (position, range low, range high, stride) on the base grid; ``segments``
    [N, 2] on the base grid; ``labels`` [N]; ``weights`` [N]; ``valid`` [P] bool (None: all).
    Returns ``cls`` [P, C] multi-hot float, ``reg`` [P, 2] = (left, right) / stride, ``weight`` [P]
    (0 at negative points).
    """
    num_pts = points.shape[0]
    dev = points.device
    if segments.shape[0] == 0:
        return (torch.zeros(num_pts, num_classes, device=dev), torch.zeros(num_pts, 2, device=dev),
                torch.zeros(num_pts, device=dev))
    pos, lo, hi, stride = (points[:, i, None] for i in range(4))
    seg_s, seg_e = segments[None, :, 0], segments[None, :, 1]
    left, right = pos - seg_s, seg_e - pos                                  # [P, N]
    centre = 0.5 * (seg_s + seg_e)
    cb_left = pos - torch.maximum(centre - radius * stride, seg_s)
    cb_right = torch.minimum(centre + radius * stride, seg_e) - pos
    inside = torch.minimum(cb_left, cb_right) > 0
    reach = torch.maximum(left, right)
    ok = inside & (reach >= lo) & (reach <= hi)
    if valid is not None:
        ok &= valid[:, None]
    lens = (seg_e - seg_s).expand(num_pts, -1).masked_fill(~ok, float("inf"))
    min_len, best = lens.min(dim=1)
    tie = ok & (lens <= min_len[:, None] + TIE_EPS)
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(points.dtype)
    cls = (tie.to(points.dtype) @ onehot).clamp_(max=1.0)
    ar = torch.arange(num_pts, device=dev)
    reg = torch.stack((left[ar, best], right[ar, best]), dim=1) / points[:, 3:4]
    positive = ok.any(dim=1)
    weight = torch.where(positive, weights[best].to(points.dtype), torch.zeros((), device=dev))
    return cls, reg * positive[:, None], weight


def ignore_mask(points: torch.Tensor, segments: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[P, C]`` bool: point ``p`` lies inside (ends included) an uncertain region of class ``c``.

    ``points`` [P, >=1] (position first) and ``segments`` [M, 2] on the base grid, ``labels`` [M]
    (``noco.labels.ignore``). ``detection_loss`` drops the focal term of such a (point, class) pair
    unless the point is positive for the class.
    """
    if segments.shape[0] == 0:
        return torch.zeros(points.shape[0], num_classes, dtype=torch.bool, device=points.device)
    pos = points[:, 0, None]
    inside = (pos >= segments[None, :, 0]) & (pos <= segments[None, :, 1])                # [P, M]
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(points.dtype)
    return (inside.to(points.dtype) @ onehot) > 0
