"""Training TriDet from (weighted) instance labels: the oracle, rows a/b, teacher pre-training and,
through a LabelSource, NoCo's online correction (DESIGN.md "Detector training").

Randomness is a function of ``(seed, step, position in the global batch)`` (epoch order of
``(seed, epoch)``), so a resumed run replays exactly what an uninterrupted one does, and a
distributed run sees the same augmentations as a single process with the same global batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..correction.teacher import EMATeacher
from ..data.grid import sec_to_grid
from ..data.prefetch import Prefetcher
from ..errors import DataError, NocoError
from ..io import atomic_save_torch, check_writable_dir, load_checkpoint
from ..labels.instances import Instances
from .assign import assign_labels, ignore_mask
from .config import DetectorConfig
from .infer import (detect, detector_features, detector_grid, downsample_features, input_steps, padded_length,
                    resize_features, video_meta)
from .loss import detection_loss
from .model import TriDet

log = logging.getLogger("noco")

CHECKPOINT = "checkpoint.pt"
_TRUNC_TRIALS = 200


class LabelSource(Protocol):
    def labels_for(self, video_ids: list[str], step: int) -> list[Instances]: ...
    def after_step(self, model: nn.Module, step: int) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, d: dict) -> None: ...


class StaticLabels:
    """Fixed labels ``{video_id: Instances}`` (seconds); a video without an entry has no instances."""

    def __init__(self, labels: Mapping[str, Instances]):
        self.labels = dict(labels)

    def labels_for(self, video_ids: list[str], step: int) -> list[Instances]:
        return [self.labels.get(v, Instances.empty()) for v in video_ids]

    def after_step(self, model: nn.Module, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        pass


# ---------------------------------------------------------------------- schedule and optimizer
def learning_rate(cfg: DetectorConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over ``warmup_epochs`` then cosine to ``eta_min``, per iteration."""
    warm = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return cfg.eta_min + (cfg.lr - cfg.eta_min) * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))


def make_optimizer(model: nn.Module, cfg: DetectorConfig) -> torch.optim.AdamW:
    """AdamW; weight decay only on convolution weights (not on biases, norms, scales)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            (decay if isinstance(module, nn.Conv1d) and name == "weight" else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


# ---------------------------------------------------------------------- randomness
def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


def _rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def _set_rng_state(d: dict) -> None:
    torch.set_rng_state(d["torch"])
    n = d["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = d["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if d.get("cuda") and torch.cuda.is_available() and len(d["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(d["cuda"])


# ---------------------------------------------------------------------- samples
def check_labels(ins: Instances, video_id: str, num_classes: int) -> None:
    """Labels handed to training must be sane; every problem names the video and field."""
    p = []
    if not torch.isfinite(ins.segments).all():
        p.append(f"video {video_id}: field 'segment' has non-finite values")
    elif (ins.segments[:, 1] < ins.segments[:, 0]).any():
        p.append(f"video {video_id}: field 'segment' has instances that end before they start")
    if len(ins) and (ins.labels.min() < 0 or ins.labels.max() >= num_classes):
        p.append(f"video {video_id}: field 'label' outside [0, {num_classes})")
    if not torch.isfinite(ins.weights).all() or (ins.weights < 0).any():
        p.append(f"video {video_id}: field 'weight' must be finite and non-negative")
    if p:
        raise DataError(p, header="invalid training labels")


def make_sample(dataset, video, ins: Instances, cfg: DetectorConfig, gen: torch.Generator | None,
                hpm: bool = True, raw: np.ndarray | None = None, ignore: Instances | None = None,
                noise: float | None = None) -> tuple:
    """One training sample: features ``[D, T]`` and instances on the network's input grid
    (down-sampled, or resized to ``cfg.fixed_length`` steps; ``infer.detector_grid``).

    With ``gen``: random crop to a ratio in ``crop_ratio`` of the length, truncation of longer
    videos to ``max_seq_len`` at a start that keeps at least one instance with ``>= trunc_thresh``
    of it inside (clipped), Gaussian input noise. ``gen=None``: the whole video, no noise. With
    ``fixed_length`` the crop and truncation apply to the resized steps (as in ActionFormer).
    ``raw``: the video's features when already read (a prefetcher); else they are read here.
    ``noise``: the std of the input noise (default ``cfg.input_noise``; ``train_detector`` adds
    ``cfg.input_noise_rel`` times :func:`input_feature_std`).
    Returns ``(x, segments [N, 2], labels [N], weights [N])``; with ``ignore`` (the video's
    uncertain regions, :mod:`noco.labels.ignore`) a fifth item, those regions on the same grid
    and crop: ``(segments [M, 2], labels [M])``.
    """
    d = cfg.input_downsample
    if raw is None:
        raw = dataset.features(video.id)
    stride, frames = detector_grid(dataset.feat_stride, dataset.num_frames, raw.shape[0], cfg)
    segs = sec_to_grid(ins.segments.double(), video.fps, stride, frames).float()
    labels = ins.labels
    weights = ins.weights if hpm else torch.ones(len(ins))
    total = input_steps(raw.shape[0], cfg)
    length = total
    if gen is not None:
        if total > cfg.max_seq_len:
            length = cfg.max_seq_len
        elif cfg.crop_ratio:
            lo = max(round(cfg.crop_ratio[0] * total), 1)
            hi = min(round(cfg.crop_ratio[1] * total), total)
            length = int(torch.randint(lo, hi + 1, (1,), generator=gen))
    if length < total:
        offset = 0.5 * frames / stride
        starts = torch.randint(0, total - length + 1, (_TRUNC_TRIALS,), generator=gen).float()
        left = torch.maximum(starts[:, None] - offset, segs[None, :, 0])
        right = torch.minimum(starts[:, None] + length + offset, segs[None, :, 1])
        inter = (right - left).clamp(min=0)
        ratio = inter / (segs[:, 1] - segs[:, 0]).clamp(min=1e-6)
        good = (ratio >= cfg.trunc_thresh).any(dim=1)
        trial = int(torch.nonzero(good)[0]) if bool(good.any()) else _TRUNC_TRIALS - 1
        st = int(starts[trial])
        keep = ratio[trial] >= cfg.trunc_thresh
        segs = torch.stack((left[trial], right[trial]), dim=1)[keep] - st
        labels, weights = labels[keep], weights[keep]
    else:
        st = 0
    if cfg.fixed_length:
        x = resize_features(torch.from_numpy(np.array(raw, dtype=np.float32)), cfg.fixed_length)[st:st + length]
    else:
        x = torch.from_numpy(np.array(raw[st * d:(st + length) * d], dtype=np.float32))
        x = downsample_features(x, d)
    noise = cfg.input_noise if noise is None else noise
    if gen is not None and noise > 0:
        x = x + noise * torch.randn(x.shape, generator=gen)
    if ignore is None:
        return x.T.contiguous(), segs, labels, weights
    ign = sec_to_grid(ignore.segments.double(), video.fps, stride, frames).float() - st
    return x.T.contiguous(), segs, labels, weights, (ign, ignore.labels)


def input_feature_std(dataset, videos: Sequence, cfg: DetectorConfig, max_videos: int = 64) -> float:
    """The std of the network's input features (after down-sampling or resizing, over every
    step and channel) of up to ``max_videos`` of ``videos``, evenly spread over their order
    (deterministic): the unit of ``cfg.input_noise_rel``."""
    if not videos:
        raise NocoError("input_feature_std: no videos")
    k = min(max_videos, len(videos))
    pick = sorted({round(i * (len(videos) - 1) / max(k - 1, 1)) for i in range(k)})
    n, total, total_sq = 0, 0.0, 0.0
    for i in pick:
        x = detector_features(dataset.features_tensor(videos[i].id), cfg).double()
        n, total, total_sq = n + x.numel(), total + float(x.sum()), total_sq + float((x * x).sum())
    mean = total / n
    return math.sqrt(max(total_sq / n - mean * mean, 0.0))


def collate(xs: Sequence[torch.Tensor], cfg: DetectorConfig) -> tuple[torch.Tensor, torch.Tensor]:
    length = padded_length(max(x.shape[1] for x in xs), cfg, training=True)
    batch = xs[0].new_zeros(len(xs), xs[0].shape[0], length)
    mask = torch.zeros(len(xs), length, dtype=torch.bool)
    for i, x in enumerate(xs):
        batch[i, :, : x.shape[1]] = x
        mask[i, : x.shape[1]] = True
    return batch, mask


# ---------------------------------------------------------------------- devices and distributed
def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else the CPU. A malformed name or CUDA asked for
    on a machine without it is a NocoError (not a deep traceback on the first tensor moved)."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise NocoError(f"--device {device!r}: not a torch device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NocoError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NocoError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise NocoError(f"--device {device!r}: unsupported device type {dev.type!r}")
    return dev


def dist_info() -> tuple[int, int, int]:
    """``(world size, rank, local rank)`` from torchrun's environment; ``(1, 0, 0)`` without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise NocoError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise NocoError(f"inconsistent torchrun environment: RANK {rank}, WORLD_SIZE {world}")
    return world, rank, local


def init_distributed(device: str | torch.device | None) -> tuple[int, int, torch.device]:
    """Join the process group of a torchrun launch when ``WORLD_SIZE`` > 1 (nccl on CUDA, gloo on
    the CPU). Returns ``(world, rank, device)``; under torchrun on CUDA the device is
    ``cuda:LOCAL_RANK`` whatever index was asked for (one process per GPU)."""
    world, rank, local = dist_info()
    dev = resolve_device(device)
    if world > 1:
        if dev.type == "cuda":
            if local >= torch.cuda.device_count():
                raise NocoError(f"LOCAL_RANK {local}, but this node has {torch.cuda.device_count()} CUDA device(s): "
                                f"--nproc_per_node must not exceed the GPUs of a node")
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return world, rank, dev


def all_gather_objects(obj: Any) -> list:
    """Every rank's ``obj`` (picklable plain data), in rank order; ``[obj]`` outside a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# ---------------------------------------------------------------------- mixed precision
PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise NocoError(f"precision must be one of {', '.join(PRECISIONS)}, found {precision!r}")
    return precision


def autocast(device: str | torch.device, precision: str):
    """``torch.autocast`` in bfloat16 on the device's type for ``precision="bf16"``; a disabled
    (no-op) context for ``"fp32"``. Wraps the network's forward only: losses, the Trident softmax and
    decoding run in fp32 on outputs cast back by ``float_outputs``."""
    dev = torch.device(device)
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=check_precision(precision) == "bf16")


def float_outputs(out: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's output dict with every floating tensor in float32 (others untouched)."""
    return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in out.items()}


@contextmanager
def forward_precision(model: nn.Module, precision: str) -> Iterator[nn.Module]:
    """Within the block every ``model(...)`` call runs under ``autocast(precision)`` and returns fp32
    outputs, so that callers such as ``detector.infer.detect`` decode in fp32 unchanged. ``"fp32"``
    changes nothing. The hooks are removed on exit (also after an exception in the forward)."""
    if check_precision(precision) == "fp32":
        yield model
        return
    active: list = []

    def pre(module, args):
        dev = next(module.parameters()).device
        ctx = autocast(dev, precision)
        ctx.__enter__()
        active.append(ctx)

    def post(module, args, out):
        if active:
            active.pop().__exit__(None, None, None)
        return float_outputs(out) if isinstance(out, Mapping) else out

    h1 = model.register_forward_pre_hook(pre)
    h2 = model.register_forward_hook(post, always_call=True)
    try:
        yield model
    finally:
        h1.remove()
        h2.remove()
        while active:
            active.pop().__exit__(None, None, None)


# ---------------------------------------------------------------------- training
def _load_init(model: TriDet, init: str | Path, dataset) -> None:
    ckpt = load_checkpoint(init)
    if "dataset" in ckpt:
        dataset.check_settings(ckpt["dataset"], what=f"initial checkpoint {init}")
    weights = ckpt.get("ema", ckpt.get("model"))
    if not isinstance(weights, Mapping):
        raise NocoError(f"{init}: not a detector checkpoint (no 'ema' or 'model' weights)")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise NocoError(f"{init}: its weights do not fit this detector config: {str(e).splitlines()[0]}") from None


def train_detector(dataset, label_source: LabelSource, cfg: DetectorConfig, out_dir: str | Path, *,
                   init: str | Path | None = None, device: str | torch.device | None = "cpu", seed: int = 0,
                   resume: bool = False, val_fraction: float = 0.0, hpm: bool = True, log_every: int = 50,
                   precision: str = "fp32", tensorboard: str | Path | None = None, prefetch: int = 2,
                   ignore: Mapping[str, Instances] | None = None) -> Path:
    """Train TriDet on the dataset's training subset with labels from ``label_source``.

    ``cfg.input_dim``/``num_classes`` are taken from the dataset. ``init``: a checkpoint whose
    (EMA) weights initialise the model. ``resume``: continue from ``out_dir/checkpoint.pt`` if it
    exists. ``val_fraction``: hold out that fraction of the training videos and log the EMA model's
    mAP on them against their labels (as given by ``label_source`` before training) every epoch.
    ``tensorboard``: a folder for TensorBoard scalars (loss terms, learning rate, positives, epoch
    loss, held-out mAP; rank 0 only).
    ``prefetch``: read the feature files this many batches ahead in a background thread
    (:mod:`noco.data.prefetch`; 0: read at use; the result is the same either way).
    ``hpm=False``: every instance weight is 1. Under ``torchrun`` (``WORLD_SIZE`` > 1) trains with
    DistributedDataParallel; ``cfg.batch_size`` is per process (global batch = batch_size x world
    size); each rank corrects the labels of the videos it trains on, and before every checkpoint the
    ranks exchange their corrections (``label_source.sync_distributed``, when it has one) so that the
    checkpoint holds the whole online set. A run may be resumed on another world size (a changed
    global batch is logged; ``batch_size`` may change when the global batch stays the same).
    ``device``: None = CUDA when available. ``precision``: ``"fp32"`` or ``"bf16"`` (autocast of
    the student's forward; loss, Trident decoding and the teacher stay fp32); a runtime choice, not
    part of the config, recorded in the checkpoint. ``ignore``: uncertain regions per training
    video (:mod:`noco.labels.ignore`; a video not in it has none), where the classification loss
    of a class is dropped at points not positive for it. Returns the checkpoint path.
    """
    cfg = dataclasses.replace(cfg, input_dim=dataset.feat_dim, num_classes=dataset.num_classes).validate()
    if not 0.0 <= val_fraction < 1.0:
        raise NocoError(f"val_fraction must be in [0, 1), found {val_fraction}")
    check_precision(precision)
    world, rank, dev = init_distributed(device)
    to_device = getattr(label_source, "to", None)
    if callable(to_device):  # e.g. the online correction's teacher: on this rank's device
        to_device(dev)
    out_dir = Path(out_dir)
    if rank == 0:
        check_writable_dir(out_dir)
    ckpt_path = out_dir / CHECKPOINT

    videos = dataset.subset(dataset.train_subset)
    val_videos: list = []
    if val_fraction > 0:
        perm = torch.randperm(len(videos), generator=_generator(seed, 7))
        n_val = max(1, round(val_fraction * len(videos)))
        val_set = set(perm[:n_val].tolist())
        val_videos = [v for i, v in enumerate(videos) if i in val_set]
        videos = [v for i, v in enumerate(videos) if i not in val_set]
    if not videos:
        raise NocoError(f"{dataset.root}: no training videos in subset {dataset.train_subset!r}")
    val_labels = dict(zip([v.id for v in val_videos], label_source.labels_for([v.id for v in val_videos], 0))) \
        if val_videos else {}

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    model = TriDet(cfg)
    if init is not None:
        _load_init(model, init, dataset)
    model.to(dev)
    optimizer = make_optimizer(model, cfg)
    ema = EMATeacher(model, cfg.ema_decay)
    noise = cfg.input_noise
    if cfg.input_noise_rel > 0:
        feat_std = input_feature_std(dataset, videos, cfg)
        noise += cfg.input_noise_rel * feat_std
        if rank == 0:
            log.info("input noise: std %.4g (%g + %g x the input features' std %.4g)", noise, cfg.input_noise,
                     cfg.input_noise_rel, feat_std)
    global_batch = cfg.batch_size * world
    steps_per_epoch = max(1, len(videos) // global_batch)
    step, start_epoch, norm = 0, 0, float(cfg.loss_norm_init)
    history: list[dict] = []

    if resume and ckpt_path.is_file():
        # on the CPU: RNG states must stay CPU tensors; weights and optimizer state move on loading
        ck = load_checkpoint(ckpt_path, map_location="cpu")
        _check_resume(ck, cfg, ckpt_path, world=world, seed=seed, hpm=hpm, val_fraction=val_fraction,
                      precision=precision, log_it=rank == 0)
        dataset.check_settings(ck["dataset"], what=f"checkpoint {ckpt_path}")
        model.load_state_dict(ck["model"])
        ema.module.load_state_dict(ck["ema"])
        optimizer.load_state_dict(ck["optimizer"])
        label_source.load_state_dict(ck["label_source"])
        step, start_epoch, norm = int(ck["step"]), int(ck["epoch"]), float(ck["loss_norm"])
        history = list(ck.get("history", []))
        _set_rng_state(ck["rng"])
        if rank == 0:
            log.info("%s: resuming after epoch %d (step %d)", ckpt_path, start_epoch, step)
    elif resume and rank == 0:
        log.info("%s: no checkpoint to resume from, starting from scratch", ckpt_path)

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    model.train()
    if rank == 0:
        n_par = sum(p.numel() for p in model.parameters())
        log.info("detector: %d parameters, %d training videos, %d steps/epoch x %d epochs (global batch %d = "
                 "%d x %d processes), %s on %s", n_par, len(videos), steps_per_epoch, cfg.epochs, global_batch,
                 cfg.batch_size, world, precision, dev)

    from ..scalars import Scalars

    scalars = Scalars(tensorboard, rank)
    for epoch in range(start_epoch, cfg.epochs):
        order = torch.randperm(len(videos), generator=_generator(seed, 1, epoch))
        t_epoch, loss_sum, n_steps = time.time(), 0.0, 0
        batches = []  # this rank's (slots, videos) of every step of the epoch, known in advance
        for it in range(steps_per_epoch):
            slots = torch.arange(it * global_batch, (it + 1) * global_batch)[rank * cfg.batch_size:
                                                                              (rank + 1) * cfg.batch_size]
            batches.append((slots, [videos[int(order[int(k) % len(videos)])] for k in slots]))
        with Prefetcher(dataset.features, [v.id for _, b in batches for v in b], prefetch * cfg.batch_size) as pf:
            for it, (slots, batch_videos) in enumerate(batches):
                ids = [v.id for v in batch_videos]
                with _phase("labels"):  # the label source (online correction: the teacher, AIC, MIC)
                    labels = label_source.labels_for(ids, step)
                if len(labels) != len(ids):
                    raise NocoError(f"label source returned {len(labels)} label sets for {len(ids)} videos")
                samples = []
                with _phase("samples"):
                    for slot, v, ins in zip(slots.tolist(), batch_videos, labels):
                        check_labels(ins, v.id, cfg.num_classes)
                        ign = None if ignore is None else ignore.get(v.id, Instances.empty()).to("cpu")
                        samples.append(make_sample(dataset, v, ins.to("cpu"), cfg, _generator(seed, 2, step, slot),
                                                   hpm, raw=pf.get(v.id), ignore=ign, noise=noise))
                    x, mask = collate([s[0] for s in samples], cfg)
                    x, mask = x.to(dev), mask.to(dev)
                torch.manual_seed(_seed(seed, 3, step, rank))  # drop-path
                with _phase("forward"), autocast(dev, precision):
                    out = net(x, mask)
                if precision != "fp32":
                    out = float_outputs(out)  # loss and Trident softmax in fp32
                with _phase("loss"):  # label assignment and the loss (fp32)
                    targets = [assign_labels(out["points"], s[1].to(dev), s[2].to(dev), s[3].to(dev), cfg.num_classes,
                                             cfg.center_sample_radius, out["mask"][i]) for i, s in enumerate(samples)]
                    cls_t, reg_t, w_t = (torch.stack(t) for t in zip(*targets))
                    ign_t = None if ignore is None else torch.stack(
                        [ignore_mask(out["points"], s[4][0].to(dev), s[4][1].to(dev), cfg.num_classes) for s in samples])
                    focal, diou, num_pos = detection_loss(out, cls_t, reg_t, w_t, alpha=cfg.focal_alpha,
                                                          gamma=cfg.focal_gamma, iou_power=cfg.iou_weight_power,
                                                          ignore_t=ign_t)
                    if world > 1:
                        n = torch.tensor([float(num_pos)], device=dev)
                        dist.all_reduce(n)
                        num_pos = int(n.item())
                    m = cfg.loss_norm_momentum
                    norm = m * norm + (1 - m) * max(num_pos, 1)
                    loss = (focal + cfg.reg_loss_weight * diou) / norm
                    # (loss, cls, reg) for logging; under DDP this rank's shares -> the global batch's
                    # values, the same on every rank
                    loss_t = torch.stack((loss.detach(), focal.detach() / norm, diou.detach() / norm))
                    if world > 1:
                        dist.all_reduce(loss_t)
                    # schedule position (= step, unless a resume changed the global batch and so steps/epoch)
                    lr = learning_rate(cfg, epoch * steps_per_epoch + it, steps_per_epoch)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                with _phase("backward"):
                    (loss * world).backward()  # DDP averages gradients; the sums are over the global batch
                with _phase("optimizer"):
                    if cfg.grad_clip > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                with _phase("ema"):  # the model EMA and the label source's teacher
                    ema.update(model)
                    label_source.after_step(model, step)
                step += 1
                loss_v, cls_v, reg_v = loss_t.tolist()
                if not math.isfinite(loss_v):  # every rank sees the same global value: all stop together
                    raise NocoError(f"detector training diverged at step {step} (loss {loss_v}); "
                                    f"lower the learning rate (now {cfg.lr})")
                loss_sum += loss_v
                n_steps += 1
                if scalars.writer is not None:
                    for tag, v in (("loss", loss_v), ("loss_cls", cls_v), ("loss_reg", reg_v), ("lr", lr),
                                   ("positives", num_pos)):
                        scalars.add(f"train/{tag}", v, step)
                if rank == 0 and log_every and step % log_every == 0:
                    log.info("epoch %d step %d: loss %.4f (cls %.4f, reg %.4f) lr %.2e, %d positives, %.2f s/step",
                             epoch + 1, step, loss_v, cls_v, reg_v, lr, num_pos,
                             (time.time() - t_epoch) / n_steps)
        record = {"epoch": epoch + 1, "loss": loss_sum / max(n_steps, 1), "seconds": time.time() - t_epoch}
        if val_videos and rank == 0:
            record["val_map"] = _validate(ema.module, dataset, val_videos, val_labels)
        history.append(record)
        scalars.add("epoch/loss", record["loss"], step)
        if "val_map" in record:
            scalars.add("epoch/val_map", record["val_map"], step)
        scalars.flush()
        sync = getattr(label_source, "sync_distributed", None)
        if world > 1 and callable(sync):
            sync(all_gather_objects)  # every rank's corrections -> the whole online set on every rank
        if rank == 0:
            log.info("epoch %d/%d: mean loss %.4f, %.1f s%s", epoch + 1, cfg.epochs, record["loss"],
                     record["seconds"], f", val mAP {record['val_map']:.4f}" if "val_map" in record else "")
            atomic_save_torch(ckpt_path, {
                "config": cfg.to_dict(), "dataset": dataset.settings(), "classes": list(dataset.classes),
                "model": model.state_dict(), "ema": ema.module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"steps_per_epoch": steps_per_epoch, "last_step": step, "last_lr": lr},
                "epoch": epoch + 1, "step": step, "loss_norm": norm, "rng": _rng_state(),
                "label_source": label_source.state_dict(), "seed": seed, "hpm": hpm, "world_size": world,
                "val_fraction": val_fraction, "val_videos": [v.id for v in val_videos], "history": history,
                "precision": precision,
            })
        if world > 1:
            dist.barrier()
    scalars.close()
    return ckpt_path


def _phase(name: str):
    """A named range for ``torch.profiler`` (``noco.train.<name>``; see docs/SCALING.md)."""
    return torch.profiler.record_function(f"noco.train.{name}")


def _check_resume(ck: Mapping, cfg: DetectorConfig, path: Path, *, world: int, seed: int, hpm: bool,
                  val_fraction: float, precision: str, log_it: bool) -> None:
    """A checkpoint continues only the same training: same config (``batch_size`` may differ when
    ``batch_size x world size`` stays the same), seed, HPM and held-out fraction. Another world size
    is allowed (the global batch changes; logged); so is another precision (a runtime choice)."""
    old = dict(ck.get("config") or {})
    new = cfg.to_dict()
    diff = sorted(k for k in set(old) | set(new) if k != "batch_size" and old.get(k) != new.get(k))
    if diff:
        raise NocoError(f"{path}: cannot resume with a different config (differs in: {', '.join(diff)})")
    run = {"seed": seed, "hpm": hpm, "val_fraction": val_fraction}
    bad = [f"{k} {ck.get(k)!r} (now {v!r})" for k, v in run.items() if ck.get(k) != v]
    if bad:
        raise NocoError(f"{path}: cannot resume with different run settings: checkpoint has {', '.join(bad)}")
    old_world = int(ck.get("world_size", 1))
    old_bs = int(old.get("batch_size", cfg.batch_size))
    old_global, new_global = old_bs * old_world, cfg.batch_size * world
    if old_bs != cfg.batch_size and old_global != new_global:
        raise NocoError(f"{path}: cannot resume with batch_size {cfg.batch_size} x {world} process(es) = "
                        f"{new_global}: the checkpoint has {old_bs} x {old_world} = {old_global}; batch_size "
                        f"may only change so as to keep the global batch")
    if log_it and old_global != new_global:
        log.warning("%s: resuming with a global batch of %d (%d x %d processes) instead of %d (%d x %d): "
                    "steps per epoch and the schedule follow the new global batch", path, new_global,
                    cfg.batch_size, world, old_global, old_bs, old_world)
    if log_it and ck.get("precision", "fp32") != precision:
        log.info("%s: resuming in %s (the checkpoint was trained in %s)", path, precision, ck.get("precision", "fp32"))


def _validate(model: TriDet, dataset, videos, labels: Mapping[str, Instances]) -> float:
    """mAP (tIoU 0.3:0.7) of ``model`` on held-out training videos against ``labels``."""
    from ..eval.detection import evaluate

    preds = {v.id: detect(model, dataset.features_tensor(v.id), video_meta(dataset, v)) for v in videos}
    res = evaluate(labels, preds, dataset.num_classes, [0.3, 0.4, 0.5, 0.6, 0.7])
    return float(res["average"])
