"""Online pseudo-label correction during detector training (NoCo Stage 2): a LabelSource.

Per mini-batch (``labels_for``), the EMA teacher detects on the un-augmented features of the
batch's videos; AIC then MIC (as enabled) correct each video's online label set, which is stored
and returned. After every optimizer step (``after_step``) the teacher follows the student by EMA.
``mode="replace"`` (ablation row c) returns the teacher's confident detections instead and keeps
no corrected set. The online set and the teacher weights go into every checkpoint.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import NocoError
from ..labels.cala import check_instances
from ..labels.instances import Instances
from .aic import aic_detailed
from .config import CorrectionConfig
from .mic import confident_detections, mic_candidates, pool_support
from .teacher import EMATeacher

STATE_VERSION = 1
_STAT_KEYS = ("corrections", "aic_corrected", "mic_added", "replaced", "replace_fallbacks")


class OnlineCorrection:
    """LabelSource whose labels are corrected online by an EMA teacher (see module docstring).

    ``initial``: ``{video_id: Instances}`` (seconds), the CALA labels ``P_aug``/``W_aug``.
    ``teacher_model``: the pre-trained teacher (an ``nn.Module``, deep-copied) or an ``EMATeacher``.
    ``detect_fn``: the teacher's post-processed detections in seconds on un-augmented features;
    called as ``detect_fn(model, features_fn(video_id), video_id)`` when ``features_fn`` is given
    (features converted to a float32 tensor on the teacher's device), else ``detect_fn(model, video_id)``.
    ``video_classes``: ``{video_id: class ids}``, each training video's video-level labels; with
    ``cfg.video_classes`` the teacher's detections of other classes are dropped before correction.
    ``mic_pool``: ``{video_id: Instances}``, the base model's proposal pool; needed when MIC runs with
    ``cfg.mic_pool_conf > 0`` (its proposals scoring at least that are MIC's support).
    """

    def __init__(
        self,
        initial: Mapping[str, Instances],
        teacher_model: nn.Module | EMATeacher,
        detect_fn: Callable[..., Instances],
        features_fn: Callable[[str], object] | None = None,
        cfg: CorrectionConfig | None = None,
        video_classes: Mapping[str, object] | None = None,
        mic_pool: Mapping[str, Instances] | None = None,
    ):
        self.cfg = (cfg or CorrectionConfig()).validate()
        self.mic_support: dict[str, Instances] | None = None
        if self.cfg.mode != "replace" and self.cfg.use_mic and self.cfg.mic_pool_conf > 0:
            if mic_pool is None:
                raise NocoError("online correction: correction.mic_pool_conf > 0 needs the base model's proposal pool")
            self.mic_support = {}
            for vid, p in mic_pool.items():
                check_instances(p, f"video {vid}: proposal pool")
                self.mic_support[vid] = pool_support(p, self.cfg.mic_pool_conf).to("cpu")
        self.video_classes: dict[str, torch.Tensor] | None = None
        if self.cfg.video_classes:
            if video_classes is None:
                raise NocoError("online correction: correction.video_classes needs each video's video-level labels")
            self.video_classes = {v: torch.as_tensor(c, dtype=torch.long).reshape(-1) for v, c in video_classes.items()}
            lacking = [v for v in initial if v not in self.video_classes]
            if lacking:
                raise NocoError(f"online correction: no video-level labels for video(s) {', '.join(lacking[:5])}")
        for vid, ins in initial.items():
            check_instances(ins, f"video {vid}: initial pseudo-labels")
        self.initial: dict[str, Instances] = {vid: ins.to("cpu") for vid, ins in initial.items()}
        self.labels: dict[str, Instances] = dict(self.initial)
        self.teacher = teacher_model if isinstance(teacher_model, EMATeacher) else EMATeacher(teacher_model, self.cfg.alpha)
        self.detect_fn = detect_fn
        self.features_fn = features_fn
        self.last_corrected: dict[str, int] = {}
        self.stats: dict[str, int] = {k: 0 for k in _STAT_KEYS}
        self.last_stats: dict[str, int] = {k: 0 for k in _STAT_KEYS}
        self._dirty: set[str] = set()  # videos corrected here since the last distributed sync
        self._stats_base: dict[str, int] = dict(self.stats)
        # HPM's normaliser: a constant of the run (the same on every rank and after a resume), so that
        # the average initial label weighs what a label weighs without HPM
        ws = [ins.weights.double().reshape(-1) for ins in self.initial.values()]
        w0 = torch.cat(ws) if ws else torch.ones(0, dtype=torch.float64)
        m = float(w0.pow(self.cfg.hpm_power).mean()) if w0.numel() else 1.0
        self._hpm_norm = m if m > 0 else 1.0  # no labels, or all of weight 0: plain weights

    # ------------------------------------------------------------------ teacher predictions
    @torch.no_grad()
    def predict(self, video_id: str) -> Instances:
        """The teacher's detections ``Q`` for one video (teacher in eval mode, no gradients), on CPU."""
        model = self.teacher.module
        was_training = model.training
        model.eval()
        try:
            if self.features_fn is not None:
                feats = torch.as_tensor(self.features_fn(video_id), dtype=torch.float32).to(self.teacher.device)
                q = self.detect_fn(model, feats, video_id)
            else:
                q = self.detect_fn(model, video_id)
        finally:
            model.train(was_training)
        if not isinstance(q, Instances):
            raise NocoError(f"video {video_id}: teacher detection returned {type(q).__name__}, expected Instances")
        q = q.to("cpu")
        check_instances(q, f"video {video_id}: teacher detections")
        return q

    def _due(self, vid: str, step: int) -> bool:
        if step < self.cfg.start_step:
            return False
        last = self.last_corrected.get(vid)
        n = self.cfg.refresh_every
        return last is None or n == 0 or step - last >= n

    def _correct(self, vid: str, current: Instances, q: Instances, st: dict[str, int]) -> Instances:
        cfg = self.cfg
        if cfg.mode == "replace":
            conf = confident_detections(q, cfg.replace_conf, cfg.replace_nms)
            st["replaced"] += 1
            if len(conf) == 0:
                st["replace_fallbacks"] += 1
                return self.initial[vid]
            out = Instances(conf.segments, conf.labels, conf.scores, conf.scores.clone())
            if cfg.replace_fallback == "class":  # classes the teacher is not confident about keep their labels
                init = self.initial[vid]
                keep = init.select(~torch.isin(init.labels, conf.labels))
                if len(keep):
                    st["replace_fallbacks"] += 1
                    out = Instances.cat([out, keep])
            return out
        out = current
        if cfg.use_aic:
            res = aic_detailed(out, q, **cfg.aic_kwargs(), what=f"video {vid}: online labels")
            out = res.labels
            st["aic_corrected"] += int(res.corrected.sum())
        if cfg.use_mic:
            support = None if self.mic_support is None else self.mic_support.get(vid, Instances.empty())
            c = mic_candidates(out, q, **cfg.mic_kwargs(), support=support,
                               support_iou=cfg.mic_pool_iou, what=f"video {vid}: online labels")
            if len(c):
                out = Instances.cat([out, c])
            st["mic_added"] += len(c)
        return out

    # ------------------------------------------------------------------ LabelSource
    def labels_for(self, video_ids: list[str], step: int) -> list[Instances]:
        missing = [v for v in video_ids if v not in self.labels]
        if missing:
            raise NocoError(f"online correction: no pseudo-labels for video(s) {', '.join(missing[:5])}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        st = {k: 0 for k in _STAT_KEYS}
        out = []
        # without AIC, MIC or replacement the teacher's detections would go unused (row s): skip them
        uses_teacher = self.cfg.mode == "replace" or self.cfg.use_aic or self.cfg.use_mic
        for vid in video_ids:
            if uses_teacher and self._due(vid, step):
                q = self.predict(vid)
                if self.video_classes is not None:
                    q = q.select(torch.isin(q.labels, self.video_classes[vid]))
                self.labels[vid] = self._correct(vid, self.labels[vid], q, st)
                self.last_corrected[vid] = int(step)
                self._dirty.add(vid)
                st["corrections"] += 1
            out.append(self._loss_weights(self.labels[vid]))
        self.last_stats = st
        for k, v in st.items():
            self.stats[k] += v
        return out

    def _loss_weights(self, ins: Instances) -> Instances:
        """The labels as the loss sees them: HPM weights ``w ** hpm_power``, with ``hpm_normalize``
        divided by the mean of ``w ** hpm_power`` over the initial label set (the stored set keeps ``w``)."""
        if self.cfg.hpm_power == 1.0 and not self.cfg.hpm_normalize:
            return ins
        w = ins.weights.pow(self.cfg.hpm_power)
        if self.cfg.hpm_normalize:
            w = w / self._hpm_norm
        return Instances(ins.segments, ins.labels, ins.scores, w)

    def after_step(self, model: nn.Module, step: int) -> None:
        self.teacher.update(model)

    # ------------------------------------------------------------------ devices and DDP
    def to(self, device) -> "OnlineCorrection":
        """Move the teacher to ``device`` (the training loop passes each rank's device)."""
        self.teacher.module.to(device)
        return self

    def sync_distributed(self, all_gather: Callable[[object], list]) -> None:
        """Exchange the ranks' corrections (DistributedDataParallel; called by every rank together).

        Each rank corrects only the videos of its shard of the global batch. ``all_gather(obj)``
        returns every rank's ``obj`` in rank order (``torch.distributed.all_gather_object``); the
        payload is this rank's videos corrected since the last sync, as plain lists. Every rank then
        adopts, per video, the most recent correction (highest step; ties: lowest rank), so all
        ranks hold the whole online set again, as a single process would; statistics add up the
        ranks' increments. Label sets round-trip exactly (float32 -> Python float -> float32)."""
        vids = sorted(self._dirty)
        mine = {
            "labels": {v: [self.labels[v].segments.tolist(), self.labels[v].labels.tolist(),
                           self.labels[v].scores.tolist(), self.labels[v].weights.tolist()] for v in vids},
            "last_corrected": {v: int(self.last_corrected.get(v, -1)) for v in vids},
            "stats": {k: int(self.stats[k] - self._stats_base[k]) for k in _STAT_KEYS},
        }
        parts = all_gather(mine)
        newest: dict[str, tuple[int, int]] = {}  # video -> (step, -rank) of the copy to adopt
        for r, part in enumerate(parts):  # per rank and video, not per instance
            for v, s in part["last_corrected"].items():
                key = (int(s), -r)
                if v not in newest or key > newest[v]:
                    newest[v] = key
        unknown = [v for v in newest if v not in self.initial]
        if unknown:
            raise NocoError(f"online correction: ranks disagree on the training videos (e.g. {unknown[0]})")
        for v, (s, neg_rank) in newest.items():
            segs, labels, scores, weights = parts[-neg_rank]["labels"][v]
            self.labels[v] = Instances(torch.tensor(segs, dtype=torch.float32).reshape(-1, 2),
                                       torch.tensor(labels, dtype=torch.long),
                                       torch.tensor(scores, dtype=torch.float32),
                                       torch.tensor(weights, dtype=torch.float32))
            if s >= 0:
                self.last_corrected[v] = s
        self.stats = {k: self._stats_base[k] + sum(int(p["stats"][k]) for p in parts) for k in _STAT_KEYS}
        self._stats_base = dict(self.stats)
        self._dirty.clear()

    def final_labels(self) -> dict[str, Instances]:
        return dict(self.labels)

    def summary(self) -> dict[str, float]:
        """Cumulative statistics plus the current size of the online set, for logging."""
        d: dict[str, float] = dict(self.stats)
        d["num_labels"] = sum(len(v) for v in self.labels.values())
        d["teacher_updates"] = self.teacher.num_updates
        return d

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Tensors, dicts, lists, numbers and strings only (``torch.load(weights_only=True)``)."""
        return {
            "version": STATE_VERSION,
            "mode": self.cfg.mode,
            "labels": {vid: {k: v.clone() for k, v in ins.state().items()} for vid, ins in self.labels.items()},
            "last_corrected": dict(self.last_corrected),
            "stats": dict(self.stats),
            "teacher": self.teacher.state_dict(),
        }

    def load_state_dict(self, d: Mapping) -> None:
        where = "checkpoint: online correction state"
        if not isinstance(d, Mapping):
            raise NocoError(f"{where} is malformed: expected a dict, found {type(d).__name__}")
        miss = [k for k in ("labels", "teacher") if k not in d]
        if miss:
            raise NocoError(f"{where} is malformed: missing {', '.join(repr(k) for k in miss)}")
        if not isinstance(d["labels"], Mapping):
            raise NocoError(f"{where} is malformed: 'labels' must map video ids to label sets")
        unknown = [v for v in d["labels"] if v not in self.initial]
        if unknown:
            raise NocoError(f"{where} holds labels of {len(unknown)} video(s) outside the training set "
                            f"(e.g. {', '.join(map(str, unknown[:3]))}): wrong checkpoint for this dataset?")
        labels = {}
        for vid, s in d["labels"].items():
            try:
                ins = Instances.from_state(s)
            except (KeyError, TypeError, RuntimeError, ValueError) as e:
                raise NocoError(f"{where}: video {vid}: malformed label set ({e})") from None
            check_instances(ins, f"{where}: video {vid}")
            labels[vid] = ins.to("cpu")
        self.teacher.load_state_dict(d["teacher"])
        self.labels = dict(self.initial)
        self.labels.update(labels)
        self.last_corrected = {str(k): int(v) for k, v in dict(d.get("last_corrected", {})).items()}
        st = dict(d.get("stats", {}))
        self.stats = {k: int(st.get(k, 0)) for k in _STAT_KEYS}
        self._stats_base = dict(self.stats)
        self._dirty = set()
