"""Configuration of the NoCo label algebra: CALA, the EMA teacher, AIC, MIC and the online loop.

Defaults are the "Suggested starting values" of NOCO.md; every [choice] of that page is an option.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import NocoError


@dataclass
class CorrectionConfig:
    # --- row a (the baseline without CALA) -------------------------------------------------
    baseline_conf: float = 0.5      # the paper's filter: proposals with confidence > this, after NMS
                                    # (cala_nms), weight 1
    # --- CALA (stage 1, Algorithm 1) -------------------------------------------------------
    cala_conf: float = 0.5          # θ_conf: seeds have score >= this
    cala_nms: float = 0.45          # θ_nms: per-class NMS of the seeds
    cala_iou: float = 0.6           # θ_iou: associated proposals have IoU > this with the seed
    cala_weight: str = "iou"        # Eq. 1: "iou" (w = s * IoU) or "vote" (w = s / sum s)
    cala_include_seed: bool = True  # the seed belongs to its own associated set
    cala_instance_weight: str = "mean"  # the augmented instance's weight: "mean" of its Eq. 1 weights
                                        # (NOCO.md) or "max" (the seed's score when it leads its set)
    ignore_conf: float = 0.0        # > 0: the rows trained on CALA labels (b-g) do not learn "background"
                                    # for a class inside its pool proposals with ignore_conf <= score
                                    # < cala_conf in a training video of that class (noco.labels.ignore).
                                    # 0 = off, as in NOCO.md [choice]
    # --- teacher ---------------------------------------------------------------------------
    alpha: float = 0.999            # θ_T <- α θ_T + (1 - α) θ_S after every optimizer step
    teacher_hpm: bool = False       # pre-train the teacher of the HPM rows (g) with the HPM loss too
                                    # (weights of the CALA labels); rows c-f keep row b's plain teacher.
                                    # NOCO.md: "TriDet trained fully supervised on P_aug" (off) [choice]
    # --- online loop -----------------------------------------------------------------------
    mode: str = "online"            # "online" (rows d-g) or "replace" (row c)
    refresh: Any = "batch"          # "batch": correct a video each time it is in a batch;
                                    # int N: only when its last correction is >= N steps old
    start_step: int = 0             # no correction before this optimizer step
    hpm_power: float = 1.0          # HPM (Eq. 8) multiplies a positive point's loss by w ** hpm_power;
                                    # 1 = the label's weight as it is [choice]. The student's online
                                    # labels only (teacher_hpm pre-trains with w as it is)
    hpm_normalize: bool = False     # HPM weights divided by the mean weight of the initial (CALA) labels,
                                    # so that the average label keeps the plain loss's weight and HPM
                                    # only re-balances labels (off: w as it is, NOCO.md) [choice]
    video_classes: bool = True      # teacher detections of classes outside the training video's
                                    # video-level labels (known: the weak supervision) are dropped
                                    # before AIC, MIC and row c's replacement [choice]
    use_aic: bool = True
    use_mic: bool = True
    # --- AIC (Eqs. 4-6) --------------------------------------------------------------------
    aic_iou: float = 0.6            # θa_iou: IoU(p_i, q_k) > this
    # Teacher confidences are TriDet scores (sigmoid focal, IoU-weighted): low by construction (on
    # thumos14-sim the median per-video maximum on the training videos is 0.50, and 5 of 375k
    # detections exceed 0.6). NOCO.md's suggested 0.4 / 0.6 / 0.5 then leave AIC, MIC and row c
    # nearly idle, so the defaults are set on that score scale [choice]: see docs/METHOD.md.
    aic_conf: float = 0.2           # θa_conf: s_k > this (NOCO.md suggests 0.4)
    aic_lam: float = 1.0            # λ: inertia of the current label
    aic_beta: float = 0.7           # β: w_hat = β w_i + (1 - β) mean_k w_ik
    aic_same_class: bool = True
    aic_weight: str = "iou"         # Eq. 1 variant, as cala_weight
    aic_decay_unsupported: bool = False  # Eq. 6 for a label with an empty A_i: keep w_i (off, NOCO.md) or
                                    # count the teacher's vote as 0, w_hat = β w_i (on) [choice]. Only
                                    # the HPM loss reads the weights
    # --- MIC (Eq. 7) -----------------------------------------------------------------------
    mic_conf: float = 0.3           # θm_conf: Q' = {q : s_q >= this} (NOCO.md suggests 0.6)
    mic_nms: float = 0.4            # θm_nms: Q'' = per-class NMS(Q')
    mic_iou: float = 0.2            # θm_iou: added when max IoU with the labels < this
    mic_same_class: bool = True
    mic_pool_conf: float = 0.0      # > 0: a MIC candidate must also overlap (same class, tIoU >= mic_pool_iou)
    mic_pool_iou: float = 0.5       # a base-model pool proposal scoring >= mic_pool_conf; 0: off (NOCO.md).
                                    # Not in the paper [choice]
    # --- mode "replace" (row c) ------------------------------------------------------------
    replace_conf: float = 0.3       # the teacher's detections with score >= this ... (0.5 before)
    replace_nms: float = 0.45       # ... after per-class NMS replace the batch's labels (weight = score)
    replace_fallback: str = "video"  # where the teacher has no such detection, the video's initial labels
                                    # stay: "video" (none at all in the video) or "class" (none of that
                                    # class: the video's labels of the class stay) [choice]

    def cala_kwargs(self) -> dict[str, Any]:
        return dict(conf_thresh=self.cala_conf, nms_thresh=self.cala_nms, iou_thresh=self.cala_iou,
                    weight=self.cala_weight, include_seed=self.cala_include_seed,
                    instance_weight=self.cala_instance_weight)

    def aic_kwargs(self) -> dict[str, Any]:
        return dict(iou_thresh=self.aic_iou, conf_thresh=self.aic_conf, lam=self.aic_lam, beta=self.aic_beta,
                    same_class=self.aic_same_class, weight=self.aic_weight,
                    decay_unsupported=self.aic_decay_unsupported)

    def mic_kwargs(self) -> dict[str, Any]:
        return dict(conf_thresh=self.mic_conf, nms_thresh=self.mic_nms, iou_thresh=self.mic_iou,
                    same_class=self.mic_same_class)

    @property
    def refresh_every(self) -> int:
        """0 for "batch", else N."""
        return 0 if self.refresh == "batch" else int(self.refresh)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CorrectionConfig":
        return make_config(None, d)

    def validate(self) -> "CorrectionConfig":
        p = []
        unit = ("baseline_conf", "cala_conf", "ignore_conf", "cala_nms", "cala_iou", "alpha", "aic_iou", "aic_conf", "aic_beta",
                "mic_conf", "mic_nms", "mic_iou", "mic_pool_conf", "mic_pool_iou", "replace_conf", "replace_nms")
        for name in unit:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                p.append(f"{name} must be a number in [0, 1], found {v!r}")
        if isinstance(self.ignore_conf, (int, float)) and 0 < self.ignore_conf and \
                isinstance(self.cala_conf, (int, float)) and self.ignore_conf >= self.cala_conf:
            p.append(f"ignore_conf must be below cala_conf ({self.cala_conf}) or 0 (off), found {self.ignore_conf!r}")
        if isinstance(self.hpm_power, bool) or not isinstance(self.hpm_power, (int, float)) or not self.hpm_power >= 0:
            p.append(f"hpm_power must be a number >= 0, found {self.hpm_power!r}")
        if isinstance(self.aic_lam, bool) or not isinstance(self.aic_lam, (int, float)) or not self.aic_lam >= 0:
            p.append(f"aic_lam must be a number >= 0, found {self.aic_lam!r}")
        if self.cala_instance_weight not in ("mean", "max"):
            p.append(f"cala_instance_weight must be 'mean' or 'max', found {self.cala_instance_weight!r}")
        for name in ("cala_weight", "aic_weight"):
            if getattr(self, name) not in ("iou", "vote"):
                p.append(f"{name} must be 'iou' or 'vote', found {getattr(self, name)!r}")
        if self.replace_fallback not in ("video", "class"):
            p.append(f"replace_fallback must be 'video' or 'class', found {self.replace_fallback!r}")
        if self.mode not in ("online", "replace"):
            p.append(f"mode must be 'online' or 'replace', found {self.mode!r}")
        r = self.refresh
        if not (r == "batch" or (isinstance(r, int) and not isinstance(r, bool) and r >= 1)):
            p.append(f"refresh must be 'batch' or an integer number of steps >= 1, found {r!r}")
        if isinstance(self.start_step, bool) or not isinstance(self.start_step, int) or self.start_step < 0:
            p.append(f"start_step must be an integer >= 0, found {self.start_step!r}")
        for name in ("cala_include_seed", "teacher_hpm", "hpm_normalize", "video_classes", "use_aic", "use_mic",
                     "aic_same_class", "aic_decay_unsupported", "mic_same_class"):
            if not isinstance(getattr(self, name), bool):
                p.append(f"{name} must be true or false, found {getattr(self, name)!r}")
        if p:
            raise NocoError("invalid correction config: " + "; ".join(p))
        return self


def make_config(preset: str | None = "cpu", overrides: dict[str, Any] | None = None) -> CorrectionConfig:
    """Build a config from a preset (a name, a YAML file, or None for the dataclass defaults) plus
    overrides (noco.presets.build_config)."""
    from ..presets import build_config

    return build_config(CorrectionConfig, "correction", "correction", preset, overrides)
