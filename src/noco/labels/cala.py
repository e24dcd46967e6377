"""Context-Aware Label Augmentation (CALA, NoCo Algorithm 1) and the plain confidence filter.

All functions work on one video's :class:`~noco.labels.instances.Instances` (every class at once)
and are vectorized: one seeds x pool IoU matrix and masked weighted sums, no Python loop over
instances. Shared helpers used by AIC/MIC (``association_weights``, ``check_instances``) live here
too.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..errors import DataError, NocoError
from .instances import Instances

WEIGHT_KINDS = ("iou", "vote")


def _intervals():
    # imported lazily so that importing noco.labels never depends on the ops module being present
    from ..ops import intervals

    return intervals


def check_instances(ins: Instances, what: str) -> None:
    """Raise DataError naming ``what`` (file / video / role) if segments or scores are not usable."""
    if not isinstance(ins, Instances):
        raise NocoError(f"{what}: expected an Instances object, got {type(ins).__name__}")
    if len(ins) == 0:
        return
    problems = []
    seg = ins.segments
    bad = ~torch.isfinite(seg).all(dim=1)
    if bool(bad.any()):
        problems.append(f"{what}: field 'segment' is not finite for {int(bad.sum())} instance(s), "
                        f"first at index {int(bad.nonzero()[0, 0])}")
    rev = torch.isfinite(seg).all(dim=1) & (seg[:, 1] < seg[:, 0])
    if bool(rev.any()):
        i = int(rev.nonzero()[0, 0])
        problems.append(f"{what}: field 'segment' ends before it starts for {int(rev.sum())} instance(s), "
                        f"first at index {i}: {seg[i].tolist()}")
    for name in ("scores", "weights"):
        v = getattr(ins, name)
        badv = ~torch.isfinite(v)
        if bool(badv.any()):
            problems.append(f"{what}: field '{name[:-1]}' is not finite for {int(badv.sum())} instance(s), "
                            f"first at index {int(badv.nonzero()[0, 0])}")
    if bool((ins.labels < 0).any()):
        problems.append(f"{what}: field 'label' is negative for {int((ins.labels < 0).sum())} instance(s)")
    if problems:
        raise DataError(problems, header=f"{what}: invalid instances")


def _check_weight_kind(weight: str) -> None:
    if weight not in WEIGHT_KINDS:
        raise NocoError(f"unknown association weight {weight!r}: expected one of {', '.join(WEIGHT_KINDS)}")


def association_weights(iou: torch.Tensor, scores: torch.Tensor, assoc: torch.Tensor, weight: str) -> torch.Tensor:
    """Eq. 1 weights of an association mask.

    ``iou`` [R, K] IoU of each reference r with each candidate k, ``scores`` [K] candidate scores,
    ``assoc`` [R, K] bool. ``weight="iou"``: ``w_rk = s_k * IoU_rk``; ``"vote"``: ``w_rk = s_k / sum_{k in A_r} s_k``.
    Entries outside ``assoc`` are exactly 0 (never NaN, even for degenerate IoU values).
    """
    _check_weight_kind(weight)
    s = scores.to(iou.dtype).unsqueeze(0).expand_as(iou)
    zero = iou.new_zeros(())
    if weight == "iou":
        w = torch.where(assoc, s * torch.nan_to_num(iou, nan=0.0), zero)
    else:
        sm = torch.where(assoc, s, zero)
        tot = sm.sum(dim=1, keepdim=True)
        w = torch.where(assoc & (tot > 0), sm / tot.clamp_min(torch.finfo(iou.dtype).tiny), zero)
    return w


def _by_score(idx: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``idx`` reordered by descending ``scores[idx]`` (stable)."""
    return idx[torch.argsort(scores[idx], descending=True, stable=True)]


def _weighted_mean_bounds(w: torch.Tensor, segments: torch.Tensor):
    """Row-wise sum_k w_rk t_k (start, end) and sum_k w_rk."""
    num = w @ segments.to(w.dtype)  # [R, 2]
    den = w.sum(dim=1)
    return num, den


def cala(
    pool: Instances,
    conf_thresh: float = 0.5,
    nms_thresh: float = 0.45,
    iou_thresh: float = 0.6,
    weight: str = "iou",
    include_seed: bool = True,
    instance_weight: str = "mean",
    *,
    what: str = "proposal pool",
) -> Instances:
    """CALA on one video's proposal pool (all classes).

    Seeds: per-class NMS (``nms_thresh``) of the proposals with ``score >= conf_thresh``. For each
    seed, the associated set holds the pool proposals of the same class with ``IoU > iou_thresh``
    (the seed itself included when ``include_seed``). Start and end are the Eq. 1-weighted means
    over the set (Eqs. 2-3); the instance's weight is the mean of its weights (``instance_weight=
    "mean"``, NOCO.md) or their maximum (``"max"``: the seed's own score when it leads its set); its
    score and class are the seed's. A seed whose set is empty (only possible with
    ``include_seed=False``) is kept unchanged with weight = its score (its Eq. 1 weight with
    itself). Zero-length proposals are ignored. Output order: seeds by descending score.
    """
    _check_weight_kind(weight)
    if instance_weight not in ("mean", "max"):
        raise NocoError(f"unknown instance weight {instance_weight!r}: expected 'mean' or 'max'")
    check_instances(pool, what)
    pool = pool.select(pool.segments[:, 1] > pool.segments[:, 0])
    cand = (pool.scores >= conf_thresh).nonzero().flatten()
    if cand.numel() == 0:
        return Instances.empty().to(pool.segments.device)
    ops = _intervals()
    keep = ops.batched_nms(pool.segments[cand], pool.scores[cand], pool.labels[cand], nms_thresh)
    seed_idx = _by_score(cand[torch.as_tensor(keep, dtype=torch.long, device=cand.device)], pool.scores)
    seeds = pool.select(seed_idx)
    S = seed_idx.numel()

    iou = ops.pairwise_tiou(seeds.segments, pool.segments).to(torch.float32)  # [S, N]
    assoc = (iou > iou_thresh) & (seeds.labels[:, None] == pool.labels[None, :])
    rows = torch.arange(S, device=assoc.device)
    assoc[rows, seed_idx] = bool(include_seed)
    w = association_weights(iou, pool.scores, assoc, weight)
    num, den = _weighted_mean_bounds(w, pool.segments)
    n = assoc.sum(dim=1)
    ok = (n > 0) & (den > 0)
    new_seg = torch.where(ok[:, None], num / den.clamp_min(1e-30)[:, None], seeds.segments)
    if instance_weight == "mean":
        agg = den / n.clamp_min(1).to(den.dtype)
    else:
        agg = w.masked_fill(~assoc, 0.0).amax(dim=1)
    new_w = torch.where(n > 0, agg, seeds.scores)
    return Instances(new_seg, seeds.labels, seeds.scores, new_w)


def cala_all(pools: Mapping[str, Instances], **kw) -> dict[str, Instances]:
    """CALA for every video: ``{video_id: pool}`` -> ``{video_id: augmented labels}``."""
    return {vid: cala(p, what=f"video {vid}: proposal pool", **kw) for vid, p in pools.items()}


def baseline_filter(pool: Instances, conf: float = 0.5, nms: float = 0.45, *, what: str = "proposal pool") -> Instances:
    """Ablation row a: proposals with ``score > conf`` after per-class NMS, every weight 1.

    (Filtering before or after the greedy NMS gives the same set: a suppressor always scores at
    least as high as what it suppresses.) Output order: descending score.
    """
    check_instances(pool, what)
    pool = pool.select(pool.segments[:, 1] > pool.segments[:, 0])
    cand = (pool.scores > conf).nonzero().flatten()
    if cand.numel() == 0:
        return Instances.empty().to(pool.segments.device)
    ops = _intervals()
    keep = ops.batched_nms(pool.segments[cand], pool.scores[cand], pool.labels[cand], nms)
    out = pool.select(_by_score(cand[torch.as_tensor(keep, dtype=torch.long, device=cand.device)], pool.scores))
    return Instances(out.segments, out.labels, out.scores, torch.ones_like(out.scores))


def baseline_filter_all(pools: Mapping[str, Instances], **kw) -> dict[str, Instances]:
    return {vid: baseline_filter(p, what=f"video {vid}: proposal pool", **kw) for vid, p in pools.items()}
