"""Configuration of the TriDet detector: architecture, label assignment, losses, recipe, inference.

``PRESETS["paper"]`` is TriDet's THUMOS14 recipe (TRIDET.md); ``PRESETS["cpu"]`` is the same
architecture scaled down to train in a couple of minutes on two CPU cores on ``thumos14-sim``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import NocoError


def _ranges() -> list[list[float]]:
    return [[0.0, 4.0], [4.0, 8.0], [8.0, 16.0], [16.0, 32.0], [32.0, 64.0], [64.0, 10000.0]]


@dataclass
class DetectorConfig:
    # --- input -----------------------------------------------------------------------------
    input_dim: int = 2048           # feature dimension D (checked against the dataset)
    num_classes: int = 20           # set from the dataset by train_detector
    input_downsample: int = 1       # average-pool the snippet features by this factor first
    # ActivityNet-style fixed-length input (ActionFormer/TriDet "force_upsampling"): > 0 resizes every
    # video's features [T, D] to [fixed_length, D] by linear interpolation, in training and inference;
    # step i then covers an equal share of the span the features cover (infer.detector_grid).
    # 0: off (the THUMOS way, variable length).
    fixed_length: int = 0
    # --- architecture ----------------------------------------------------------------------
    embed_dim: int = 512            # embedding / FPN width
    head_dim: int = 512             # width of the head convolutions
    mlp_dim: int = 768              # SGP MLP hidden width
    num_levels: int = 6             # pyramid levels (stride 1, 2, ..., 2**(num_levels-1))
    stem_blocks: int = 2            # SGP blocks at stride 1 (level 0 is their output)
    head_layers: int = 3            # convolutions per head (the last one is the output conv)
    num_bins: int = 16              # Trident bins B
    sgp_k: float = 5.0              # SGP k: the long depthwise conv has kw = round((w + 1) k) made odd
    sgp_w: int = 1                  # SGP window w (kernel of the short depthwise convs)
    init_conv_vars: float = 0.0     # std of the SGP depthwise conv init (0 = published THUMOS TriDet)
    drop_path: float = 0.1          # drop-path probability in the down-sampling SGP blocks
    # Padding-invariant statistics: GroupNorm and the SGP global mean over valid positions only,
    # max-pooling ignores padding. Outputs then do not depend on how much a video is padded, so
    # training pads to the batch's longest video instead of max_seq_len. False: TriDet's own
    # statistics over the padded length (and TriDet's padding to max_seq_len).
    pad_invariant: bool = True
    # --- label assignment ------------------------------------------------------------------
    regression_ranges: list[list[float]] = field(default_factory=_ranges)
    center_sample_radius: float = 1.5
    # --- losses ----------------------------------------------------------------------------
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    iou_weight_power: float = 0.2   # positive focal terms times IoU(pred, gt) ** p
    loss_norm_init: float = 100.0
    loss_norm_momentum: float = 0.9
    reg_loss_weight: float = 1.0
    # --- training recipe -------------------------------------------------------------------
    epochs: int = 40
    warmup_epochs: int = 20
    batch_size: int = 2             # per process (global batch = batch_size x world size)
    lr: float = 1e-4
    eta_min: float = 1e-8
    weight_decay: float = 0.025
    grad_clip: float = 1.0          # 0 = no clipping
    ema_decay: float = 0.999
    max_seq_len: int = 2304         # training crop length (after input_downsample)
    trunc_thresh: float = 0.5       # truncation keeps instances with at least this much inside
    crop_ratio: list[float] = field(default_factory=lambda: [0.9, 1.0])  # [] = no random crop
    input_noise: float = 0.0005     # std of Gaussian noise added to training features
    input_noise_rel: float = 0.0    # plus this many times the std of the training features (the
                                    # network's input, measured on up to 64 training videos) [choice]
    # --- inference -------------------------------------------------------------------------
    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 2000        # per level
    min_segment: float = 0.05       # drop decoded segments shorter than this (grid steps)
    nms_sigma: float = 0.5
    nms_min_score: float = 0.001
    voting_thresh: float = 0.7      # 0 = no voting
    max_segments: int = 2000        # per video after Soft-NMS

    # ------------------------------------------------------------------ derived values
    @property
    def strides(self) -> list[int]:
        return [2**i for i in range(self.num_levels)]

    @property
    def max_stride(self) -> int:
        return 2 ** (self.num_levels - 1)

    @property
    def long_kernel(self) -> int:
        kw = round((self.sgp_w + 1) * self.sgp_k)
        return kw + 1 if kw % 2 == 0 else kw

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DetectorConfig":
        return make_config(None, d)

    def validate(self) -> "DetectorConfig":
        p = []
        for name in ("input_dim", "num_classes", "input_downsample", "embed_dim", "head_dim", "mlp_dim",
                     "num_levels", "head_layers", "num_bins", "epochs", "batch_size", "max_seq_len",
                     "pre_nms_topk", "max_segments"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, found {getattr(self, name)}")
        for name in ("stem_blocks", "warmup_epochs", "init_conv_vars", "center_sample_radius", "iou_weight_power",
                     "weight_decay", "grad_clip", "input_noise", "input_noise_rel", "eta_min", "reg_loss_weight",
                     "nms_min_score", "pre_nms_thresh", "min_segment", "voting_thresh"):
            if not getattr(self, name) >= 0:
                p.append(f"{name} must be >= 0, found {getattr(self, name)}")
        if self.sgp_w < 1 or self.sgp_w % 2 == 0:
            p.append(f"sgp_w must be an odd number >= 1, found {self.sgp_w}")
        if not self.sgp_k > 0:
            p.append(f"sgp_k must be > 0, found {self.sgp_k}")
        if self.embed_dim % 16:
            p.append(f"embed_dim must be a multiple of 16 (GroupNorm(16)), found {self.embed_dim}")
        if not 0.0 <= self.drop_path < 1.0:
            p.append(f"drop_path must be in [0, 1), found {self.drop_path}")
        for name in ("ema_decay", "loss_norm_momentum", "trunc_thresh", "focal_alpha"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                p.append(f"{name} must be in [0, 1], found {getattr(self, name)}")
        if not self.lr > 0:
            p.append(f"lr must be > 0, found {self.lr}")
        if not self.loss_norm_init > 0:
            p.append(f"loss_norm_init must be > 0, found {self.loss_norm_init}")
        if not self.nms_sigma > 0:
            p.append(f"nms_sigma must be > 0, found {self.nms_sigma}")
        if len(self.regression_ranges) != self.num_levels or any(
            len(r) != 2 or not 0 <= r[0] <= r[1] for r in self.regression_ranges
        ):
            p.append(f"regression_ranges must be {self.num_levels} pairs [lo, hi] with 0 <= lo <= hi, "
                     f"found {self.regression_ranges}")
        if self.crop_ratio and (len(self.crop_ratio) != 2 or not 0 < self.crop_ratio[0] <= self.crop_ratio[1] <= 1):
            p.append(f"crop_ratio must be [] or [lo, hi] with 0 < lo <= hi <= 1, found {self.crop_ratio}")
        if self.max_seq_len % self.max_stride:
            p.append(f"max_seq_len must be a multiple of the largest stride {self.max_stride}, "
                     f"found {self.max_seq_len}")
        if self.fixed_length < 0 or self.fixed_length % self.max_stride:
            p.append(f"fixed_length must be 0 (off) or a positive multiple of the largest stride {self.max_stride}, "
                     f"found {self.fixed_length}")
        if self.fixed_length > 0 and self.input_downsample != 1:
            p.append(f"fixed_length ({self.fixed_length}) needs input_downsample 1, found {self.input_downsample}")
        if p:
            raise NocoError("invalid detector config: " + "; ".join(p))
        return self


def make_config(preset: str | None = "cpu", overrides: dict[str, Any] | None = None) -> DetectorConfig:
    """Build a config from a preset (a name, a YAML file, or None for the dataclass defaults) plus
    overrides (noco.presets.build_config)."""
    from ..presets import build_config

    return build_config(DetectorConfig, "detector", "detector", preset, overrides)
