"""Classification fusion at test time: the student's class scores times video-level class scores.

Fully-supervised detectors on ActivityNet fuse their detections with an external video
classifier (ActionFormer keeps the classifier's top-2 classes). NoCo stays weakly supervised:
the video scores come from the WTAL base model (``noco.wtal.video_scores.video_scores``).

``fuse`` is pure and works on whole tensors:

* ``mode="none"``: the detections are returned unchanged (``topk``/``power`` are ignored);
* ``mode="multiply"``: ``score <- score * video_score[label] ** power``;
* ``topk > 0`` (with ``multiply``): only detections whose class is among the video's ``topk``
  best-scored classes are kept (ties between classes: the lower class index first).

The result is sorted by score, descending (stable: equal scores keep their input order).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from ..errors import NocoError
from ..labels.instances import Instances

MODES = ("none", "multiply")


def check_options(mode: str, topk: int, power: float) -> None:
    """Raise a NocoError for an unknown mode, a negative/non-integer topk or a bad power."""
    if mode not in MODES:
        raise NocoError(f"unknown fusion mode {mode!r} (choose from {', '.join(MODES)})")
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 0:
        raise NocoError(f"fusion topk must be an integer >= 0 (0: keep every class), found {topk!r}")
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not math.isfinite(power) or power < 0:
        raise NocoError(f"fusion power must be a finite number >= 0, found {power!r}")


def _check_scores(dets: Instances, video_scores) -> torch.Tensor:
    vs = torch.as_tensor(video_scores)
    if vs.dim() != 1 or vs.numel() == 0:
        raise NocoError(f"video scores must be a 1-d tensor [K], found shape {tuple(vs.shape)}")
    vs = vs.detach().to(device=dets.scores.device, dtype=torch.float32)
    if not bool(torch.isfinite(vs).all()) or bool((vs < 0).any()):
        raise NocoError("video scores must be finite and >= 0")
    if len(dets) and int(dets.labels.max()) >= vs.numel():
        raise NocoError(f"a detection has class {int(dets.labels.max())} but the video scores have only "
                        f"{vs.numel()} classes")
    return vs


def fuse(dets: Instances, video_scores: torch.Tensor, mode: str = "multiply", topk: int = 0,
         power: float = 1.0) -> Instances:
    """Fuse one video's detections with its video-level class scores ``[K]`` (see the module doc).

    Never modifies ``dets``; segments and weights are carried over unchanged.
    """
    check_options(mode, topk, power)
    if mode == "none":
        return dets
    vs = _check_scores(dets, video_scores)
    scores = dets.scores * vs[dets.labels].pow(float(power))
    keep = torch.ones(len(dets), dtype=torch.bool, device=dets.scores.device)
    if topk > 0:
        order = torch.argsort(vs, descending=True, stable=True)
        allowed = torch.zeros(vs.numel(), dtype=torch.bool, device=vs.device)
        allowed[order[:topk]] = True
        keep = allowed[dets.labels]
    out = Instances(dets.segments.clone(), dets.labels.clone(), scores, dets.weights.clone())
    return out.select(torch.nonzero(keep).flatten()).sorted_by_score()


def fuse_all(dets: Mapping[str, Instances], scores: Mapping[str, torch.Tensor] | None,
             mode: str = "multiply", topk: int = 0, power: float = 1.0) -> dict[str, Instances]:
    """``fuse`` for every video of ``dets`` (same keys, same order).

    Every video of ``dets`` needs a row in ``scores`` (else a NocoError naming the missing videos);
    with ``mode="none"`` the scores are not needed (None is accepted).
    """
    check_options(mode, topk, power)
    if mode == "none":
        return dict(dets)
    if scores is None:
        raise NocoError(f"fusion mode {mode!r} needs video-level class scores")
    missing = [vid for vid in dets if vid not in scores]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise NocoError(f"no video-level class scores for {len(missing)} video(s) with detections: {shown}")
    out = {}
    for vid, d in dets.items():  # per video
        try:
            out[vid] = fuse(d, scores[vid], mode=mode, topk=topk, power=power)
        except NocoError as e:
            raise NocoError(f"video {vid}: {e}") from None
    return out
