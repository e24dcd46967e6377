"""Inference: Trident decoding of every level, per-level top-k, per-class Gaussian Soft-NMS with
score voting, grid -> seconds (TRIDET.md "Inference")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch

from ..data.grid import grid_to_sec
from ..errors import NocoError
from ..io import load_checkpoint
from ..labels.instances import Instances
from ..ops.intervals import soft_nms
from .config import DetectorConfig
from .model import TriDet, trident_offsets


# ---------------------------------------------------------------------- feature grid helpers
def downsample_features(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool ``[T, D]`` features over windows of ``factor`` snippets -> ``[ceil(T / factor), D]``
    (the last window averages the snippets it has)."""
    if factor == 1:
        return x
    t, d = x.shape
    n = math.ceil(t / factor)
    pad = n * factor - t
    s = torch.cat([x, x.new_zeros(pad, d)]).view(n, factor, d).sum(1)
    count = torch.full((n, 1), float(factor), dtype=x.dtype, device=x.device)
    count[-1] = factor - pad
    return s / count


def effective_grid(feat_stride: int, num_frames: int, factor: int) -> tuple[int, int]:
    """(feat_stride, num_frames) of the grid after averaging ``factor`` snippets: window ``i``
    covers frames ``[i * factor * stride, i * factor * stride + (factor - 1) * stride + num_frames)``."""
    return feat_stride * factor, num_frames + (factor - 1) * feat_stride


def resize_features(x: torch.Tensor, length: int) -> torch.Tensor:
    """``[T, D]`` features resized to ``[length, D]`` by linear interpolation (``align_corners=False``,
    as ActionFormer/TriDet's ``force_upsampling``): output step ``i`` samples the input at snippet
    position ``clamp((i + 0.5) * T / length - 0.5, 0, T - 1)``. ``T == length`` returns ``x``."""
    if x.shape[0] == length:
        return x
    if x.shape[0] == 0:
        raise NocoError(f"features of shape {tuple(x.shape)} have no snippets to resize to {length} steps")
    y = torch.nn.functional.interpolate(x.T[None], size=length, mode="linear", align_corners=False)
    return y[0].T.contiguous()


def detector_features(x: torch.Tensor, cfg: DetectorConfig) -> torch.Tensor:
    """A video's snippet features ``[T, D]`` as the network's input steps: resized to
    ``cfg.fixed_length`` steps when it is set, else averaged ``cfg.input_downsample`` to 1."""
    if cfg.fixed_length:
        return resize_features(x, cfg.fixed_length)
    return downsample_features(x, cfg.input_downsample)


def input_steps(num_snippets: int, cfg: DetectorConfig) -> int:
    """Number of network input steps of a video of ``num_snippets`` snippets (= detector_features' length)."""
    return cfg.fixed_length or math.ceil(num_snippets / cfg.input_downsample)


def detector_grid(feat_stride: int, num_frames: int, num_snippets: int, cfg: DetectorConfig,
                  ) -> tuple[float, float]:
    """``(stride, frames)`` of the network's input grid, for ``noco.data.grid`` (seconds <-> steps).

    The one mapping used by training labels (``make_sample``) and decoded detections (``detect``).
    ``cfg.fixed_length`` = L > 0: the snippets cover frames ``[0, (T - 1) * feat_stride + num_frames)``
    and each of the L resized steps covers an equal share of that span: ``stride = frames = span / L``
    (ActionFormer's convention; step ``i`` is centred on frame ``(i + 0.5) * stride``). Otherwise
    the grid of ``input_downsample`` averaging (:func:`effective_grid`).
    """
    if cfg.fixed_length:
        span = (num_snippets - 1) * feat_stride + num_frames
        stride = span / cfg.fixed_length
        return stride, stride
    return effective_grid(feat_stride, num_frames, cfg.input_downsample)


def padded_length(t: int, cfg: DetectorConfig, training: bool = False) -> int:
    """Network input length for a ``t``-step sequence: the next multiple of the largest stride
    (padding-invariant model); TriDet's own rule otherwise (max_seq_len in training and for
    shorter test videos)."""
    s = cfg.max_stride
    rounded = -(-max(t, 1) // s) * s
    if cfg.pad_invariant:
        return rounded
    return cfg.max_seq_len if training or t <= cfg.max_seq_len else rounded


def _meta(video_meta, key: str):
    if isinstance(video_meta, Mapping):
        if key not in video_meta:
            raise NocoError(f"video metadata lacks {key!r}")
        return video_meta[key]
    if not hasattr(video_meta, key):
        raise NocoError(f"video metadata lacks {key!r}")
    return getattr(video_meta, key)


# ---------------------------------------------------------------------- decoding
def decode(out: dict[str, torch.Tensor], cfg: DetectorConfig, index: int = 0,
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates of one batch element before NMS: ``(segments [K, 2] on the network grid, scores, labels)``.

    Per level: ``sigmoid(cls) * mask`` over points x classes, keep ``> pre_nms_thresh``, top
    ``pre_nms_topk``; decode the chosen class's boundaries; drop segments not longer than
    ``min_segment`` grid steps.
    """
    prob = torch.sigmoid(out["cls"][index]) * out["mask"][index, :, None]  # [L, C]
    num_classes = prob.shape[1]
    points = out["points"]
    strides = points[:, 3]
    picks_p, picks_c, picks_s = [], [], []
    for s in cfg.strides:
        lvl = torch.nonzero(strides == s).reshape(-1)  # contiguous block of the packed layout
        flat = prob[lvl].reshape(-1)
        cand = torch.nonzero(flat > cfg.pre_nms_thresh).reshape(-1)
        k = min(cfg.pre_nms_topk, cand.numel())
        top = torch.topk(flat[cand], k, sorted=True)
        idx = cand[top.indices]
        picks_p.append(lvl[idx // num_classes])
        picks_c.append(idx % num_classes)
        picks_s.append(top.values)
    p, c, scores = torch.cat(picks_p), torch.cat(picks_c), torch.cat(picks_s)
    b = torch.full_like(p, index)
    d = trident_offsets(out["start"], out["end"], out["offsets"], b, p, c)
    pos, stride = points[p, 0], points[p, 3]
    segs = torch.stack((pos - d[:, 0] * stride, pos + d[:, 1] * stride), dim=1)
    keep = (segs[:, 1] - segs[:, 0]) > cfg.min_segment
    return segs[keep], scores[keep], c[keep]


@torch.no_grad()
def detect(model: TriDet, features, video_meta, cfg: DetectorConfig | None = None) -> Instances:
    """Detections of one video in seconds.

    ``features``: ``[T, D]`` tensor or array of the video's snippet features; ``video_meta``: a
    mapping or object with ``fps``, ``duration``, ``feat_stride``, ``num_frames``. Runs the model in
    eval mode (restoring its mode afterwards) on the model's device.
    """
    cfg = cfg or model.cfg
    dev = next(model.parameters()).device
    x = torch.as_tensor(features, dtype=torch.float32).to(dev)
    if x.dim() != 2 or x.shape[1] != cfg.input_dim:
        raise NocoError(f"features of shape {tuple(x.shape)} do not fit the detector (expected [T, {cfg.input_dim}])")
    fps, duration = float(_meta(video_meta, "fps")), float(_meta(video_meta, "duration"))
    stride, frames = detector_grid(int(_meta(video_meta, "feat_stride")), int(_meta(video_meta, "num_frames")),
                                   x.shape[0], cfg)
    x = detector_features(x, cfg)
    t = x.shape[0]
    length = padded_length(t, cfg)
    inp = x.new_zeros(1, cfg.input_dim, length)
    inp[0, :, :t] = x.T
    mask = torch.zeros(1, length, dtype=torch.bool, device=dev)
    mask[0, :t] = True
    was_training = model.training
    model.eval()
    try:
        out = model(inp, mask)
    finally:
        model.train(was_training)
    segs, scores, labels = decode(out, cfg)
    segs, scores, labels = soft_nms(segs, scores, labels, sigma=cfg.nms_sigma, min_score=cfg.nms_min_score,
                                    max_num=cfg.max_segments, voting_thresh=cfg.voting_thresh or None)
    secs = grid_to_sec(segs, fps, stride, frames).clamp(0.0, duration)
    return Instances.create(secs.cpu(), labels.cpu(), scores.cpu())


# ---------------------------------------------------------------------- checkpoints and datasets
def load_detector(ckpt_path: str | Path, device: str | torch.device = "cpu", weights: str = "ema",
                  ) -> tuple[TriDet, dict]:
    """The detector of a checkpoint written by ``train_detector`` (its EMA weights by default)."""
    ckpt = load_checkpoint(ckpt_path)
    miss = [k for k in ("config", weights, "dataset") if k not in ckpt]
    if miss:
        raise NocoError(f"{ckpt_path}: not a detector checkpoint (missing {', '.join(map(repr, miss))})")
    cfg = DetectorConfig.from_dict(ckpt["config"])
    model = TriDet(cfg)
    try:
        model.load_state_dict(ckpt[weights])
    except (RuntimeError, KeyError, TypeError) as e:
        raise NocoError(f"{ckpt_path}: detector weights do not fit its config: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), ckpt


def video_meta(dataset, video) -> dict:
    return {"fps": video.fps, "duration": video.duration, "feat_stride": dataset.feat_stride,
            "num_frames": dataset.num_frames}


def predict_detector(ckpt_or_model: str | Path | TriDet, dataset, subset: str | None = None,
                     device: str | torch.device = "cpu", progress: bool | None = None,
                     precision: str = "fp32") -> dict[str, Instances]:
    """Detections (seconds) of every video of ``subset`` (default: the dataset's test subset);
    ``precision="bf16"`` runs the network under bf16 autocast (decoding stays fp32)."""
    if isinstance(ckpt_or_model, TriDet):
        model = ckpt_or_model
        cfg = model.cfg
        if cfg.input_dim != dataset.feat_dim or cfg.num_classes != dataset.num_classes:
            raise NocoError(f"the detector expects {cfg.input_dim}-d features and {cfg.num_classes} classes; "
                            f"dataset {dataset.root} has {dataset.feat_dim}-d features and {dataset.num_classes} classes")
    else:
        model, ckpt = load_detector(ckpt_or_model, device)
        dataset.check_settings(ckpt["dataset"], what=f"checkpoint {ckpt_or_model}")
    subset = subset or dataset.test_subset
    videos = dataset.subset(subset)
    if progress is None:
        from ..data.dataset import _stderr_is_tty

        progress = _stderr_is_tty()
    from tqdm import tqdm

    from .train import forward_precision

    out = {}
    with forward_precision(model, precision):
        for v in tqdm(videos, desc=f"detect {subset}", unit="video", disable=not progress):
            out[v.id] = detect(model, dataset.features_tensor(v.id), video_meta(dataset, v))
    return out
