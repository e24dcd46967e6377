"""Uncertain regions: where the detector is not told "background" (``correction.ignore_conf``).

CALA keeps the proposals that score at least θ_conf; everything else in a training video becomes
background for the detector, including the instances the base model found with a low score. On
thumos14-sim half of the instances are not in the labels, and most of them lie inside a
proposal that scored below θ_conf (docs/BENCHMARKS.md, "What the gap to the oracle is made of").
An uncertain region is the union of a class's proposals with ``low <= score < high``: the
detector's classification loss for that class is dropped at points inside it that are not
positive for it (``noco.detector.assign.ignore_mask``), so it is neither trained to find nor to
suppress them. Not part of NOCO.md [choice]; off by default.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .cala import check_instances
from .instances import Instances


def interval_union(segments: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class union of intervals: ``segments`` [N, 2], ``labels`` [N] -> disjoint, sorted
    ``(segments [M, 2], labels [M])`` covering exactly the same points of each class (touching
    intervals are merged). Vectorized: one sort and a running maximum."""
    if segments.shape[0] == 0:
        return segments.reshape(0, 2), labels.reshape(0)
    # sort by (class, start): put the classes on disjoint ranges of one axis
    lo, hi = float(segments.min()), float(segments.max())
    span = hi - lo + 1.0
    key = labels.double() * span + (segments[:, 0].double() - lo)
    order = torch.argsort(key, stable=True)
    seg, lab = segments[order].double(), labels[order]
    shifted = seg + (lab.double() * span - lo)[:, None]  # classes never overlap after the shift
    run_end = torch.cummax(shifted[:, 1], dim=0).values
    new = torch.ones(len(lab), dtype=torch.bool, device=seg.device)
    new[1:] = shifted[1:, 0] > run_end[:-1]
    group = torch.cumsum(new.long(), dim=0) - 1
    m = int(group[-1]) + 1
    starts = seg[new, 0]
    ends = torch.full((m,), -float("inf"), dtype=seg.dtype, device=seg.device).scatter_reduce(
        0, group, seg[:, 1], reduce="amax")
    return torch.stack((starts, ends), dim=1).to(segments.dtype), lab[new]


def uncertain_regions(pool: Instances, low: float, high: float, classes: Sequence[int] | None = None,
                      *, what: str = "proposal pool") -> Instances:
    """The union, per class, of the pool's proposals with ``low <= score < high`` (of ``classes``
    only, when given: a training video's video-level labels). Weights and scores are 0."""
    check_instances(pool, what)
    keep = (pool.scores >= low) & (pool.scores < high) & (pool.segments[:, 1] > pool.segments[:, 0])
    if classes is not None:
        allowed = torch.as_tensor(list(classes), dtype=torch.long, device=pool.labels.device)
        keep &= torch.isin(pool.labels, allowed)
    segs, labs = interval_union(pool.segments[keep], pool.labels[keep])
    zeros = torch.zeros(len(labs), device=segs.device)
    return Instances(segs, labs, zeros, zeros)


def uncertain_regions_all(pools: Mapping[str, Instances], low: float, high: float,
                          classes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Instances]:
    """:func:`uncertain_regions` for every video of ``pools``."""
    return {vid: uncertain_regions(p, low, high, None if classes is None else classes.get(vid, []),
                                   what=f"video {vid}: proposal pool") for vid, p in pools.items()}
