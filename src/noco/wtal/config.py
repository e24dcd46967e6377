"""Configuration of the WTAL base model (ASM-Loc base), its training and its proposals.

``PRESETS["paper"]`` follows the ASM-Loc THUMOS14 base recipe (WTAL.md); ``PRESETS["cpu"]`` is the
largest model that trains in about two minutes on two CPU cores on ``thumos14-sim``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import NocoError


def _att_levels() -> list[float]:
    # 0.100, 0.125, ..., 0.900 (33 levels), rounded so that the list is exact in JSON/YAML.
    return [round(0.1 + 0.025 * i, 3) for i in range(33)]


@dataclass
class WtalConfig:
    # --- model -----------------------------------------------------------------------------
    hidden_dim: int = 2048          # H: width of the Conv1d(D->H, k3) embedding
    input_dropout: float = 0.0      # dropout on the input features before the embedding (ActivityNet: 0.7)
    snippet_dropout: float = 0.7    # dropout on a [B, T, 1] tensor of ones multiplying the fg/bg CAS
    feature_dropout: float = 0.7    # dropout on the embedded features before the snippet classifier
    topk_fg_ratio: float = 1.0 / 8  # k = max(1, floor(T * ratio)) for the fg top-k mean (THUMOS 1/8)
    topk_bg_ratio: float = 1.0 / 3  # ... for the bg top-k mean (THUMOS 1/3)
    loss_fg: float = 1.0
    loss_bg: float = 0.5
    loss_abg: float = 0.5
    # --- training --------------------------------------------------------------------------
    num_segments: int = 750         # fixed training length (random-perturbed sampling; shorter: pad+mask)
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 5e-5
    epochs: int = 100
    grad_clip: float = 0.0          # 0 = no clipping
    eval_every: int = 1             # epochs between held-out evaluations (epoch selection)
    num_threads: int = 0            # torch intra-op threads while training (0: leave torch's setting)
    # --- inference -------------------------------------------------------------------------
    # "full": run the fully-convolutional model on every snippet of the video (finest boundaries);
    # "uniform": uniformly sample videos longer than num_segments to num_segments (ASM-Loc test).
    test_sampling: str = "full"
    class_threshold: float = 0.25   # test videos: classes whose video score exceeds this (else the best)
    upsample: int = 24              # linear up-sampling factor of CAS and attention
    cas_thresholds: list[float] = field(default_factory=lambda: [0.15, 0.20])
    att_thresholds: list[float] = field(default_factory=_att_levels)
    min_points: int = 2             # a proposal is a connected run of at least this many up-sampled points
    oic_flank: float = 0.2          # each flank is ceil(oic_flank * run length) points long
    oic_gamma: float = 0.0          # OIC score += oic_gamma * video score of the class (ASM-Loc THUMOS: 0)
    nms_threshold: float = 0.45     # per-class NMS of test-time detections (THUMOS 0.45)
    max_detections: int = 1000      # per video, after NMS (0 = unlimited)
    # OIC -> confidence (monotone): "linear": conf = clamp(oic / oic_scale, 0, 1); "oic": raw OIC.
    # oic_scale 1 is the OIC itself (clipped); the cpu preset uses 0.5 (see docs of the preset).
    score_mapping: str = "linear"
    oic_scale: float = 1.0
    pool_min_score: float = 0.0     # the pool O keeps proposals with confidence > this (-inf: keep all)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WtalConfig":
        return make_config(None, d)

    def validate(self) -> "WtalConfig":
        p = []
        if self.hidden_dim < 1:
            p.append(f"hidden_dim must be >= 1, found {self.hidden_dim}")
        for name in ("input_dropout", "snippet_dropout", "feature_dropout"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                p.append(f"{name} must be in [0, 1), found {v}")
        for name in ("topk_fg_ratio", "topk_bg_ratio"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                p.append(f"{name} must be in (0, 1], found {v}")
        for name in ("num_segments", "batch_size", "epochs", "upsample", "min_points", "eval_every"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, found {getattr(self, name)}")
        if self.lr <= 0:
            p.append(f"lr must be > 0, found {self.lr}")
        if self.test_sampling not in ("full", "uniform"):
            p.append(f"test_sampling must be 'full' or 'uniform', found {self.test_sampling!r}")
        if self.score_mapping not in ("linear", "oic"):
            p.append(f"score_mapping must be 'linear' or 'oic', found {self.score_mapping!r}")
        if not self.oic_scale > 0:
            p.append(f"oic_scale must be > 0, found {self.oic_scale}")
        if not (self.cas_thresholds or self.att_thresholds):
            p.append("cas_thresholds and att_thresholds are both empty: no proposal can be made")
        if not 0.0 <= self.oic_flank:
            p.append(f"oic_flank must be >= 0, found {self.oic_flank}")
        if not 0.0 < self.nms_threshold <= 1.0:
            p.append(f"nms_threshold must be in (0, 1], found {self.nms_threshold}")
        if p:
            raise NocoError("invalid WTAL config: " + "; ".join(p))
        return self


def make_config(preset: str | None = "cpu", overrides: dict[str, Any] | None = None) -> WtalConfig:
    """Build a config from a preset (a name, a YAML file, or None for the dataclass defaults) plus
    overrides (noco.presets.build_config)."""
    from ..presets import build_config

    return build_config(WtalConfig, "WTAL", "wtal", preset, overrides)
