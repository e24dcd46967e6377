"""The teacher: an exponential moving average of the student's weights (NoCo, Stage 2).

``θ_T <- α θ_T + (1 - α) θ_S`` after every optimizer step, for every parameter and every
floating-point buffer; integer buffers (counters) are copied from the student.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import NocoError


class EMATeacher:
    """A frozen deep copy of ``model`` (eval mode, no gradients) that follows a student by EMA."""

    def __init__(self, model: nn.Module, alpha: float = 0.999):
        if not 0.0 <= float(alpha) <= 1.0:
            raise NocoError(f"teacher EMA alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.num_updates = 0
        self.module = copy.deepcopy(model)
        self.module.eval()
        self.module.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        for t in self.module.parameters():
            return t.device
        for t in self.module.buffers():
            return t.device
        return torch.device("cpu")

    def _pairs(self, student: nn.Module):
        ts = dict(self.module.named_parameters())
        ss = dict(student.named_parameters())
        tb = dict(self.module.named_buffers())
        sb = dict(student.named_buffers())
        if ts.keys() != ss.keys() or tb.keys() != sb.keys():
            missing = sorted((ts.keys() ^ ss.keys()) | (tb.keys() ^ sb.keys()))
            raise NocoError("teacher and student have different structures "
                            f"(parameters/buffers not in both: {', '.join(missing[:5])})")
        return ts, ss, tb, sb

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step towards ``student``."""
        ts, ss, tb, sb = self._pairs(student)
        a = self.alpha
        float_t, float_s = [], []
        for name, t in list(ts.items()) + list(tb.items()):
            s = (ss.get(name) if name in ss else sb[name]).detach()
            if t.shape != s.shape:
                raise NocoError(f"teacher and student disagree on the shape of {name}: "
                                f"{tuple(t.shape)} vs {tuple(s.shape)}")
            if t.is_floating_point():
                float_t.append(t)
                float_s.append(s.to(device=t.device, dtype=t.dtype))
            else:
                t.copy_(s)
        if float_t and a < 1.0:
            if a == 0.0:
                for t, s in zip(float_t, float_s):
                    t.copy_(s)
            else:
                torch._foreach_mul_(float_t, a)
                torch._foreach_add_(float_t, float_s, alpha=1.0 - a)
        self.num_updates += 1

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def state_dict(self) -> dict:
        """``{"model": tensors, "alpha", "num_updates"}`` (loadable with ``weights_only=True``)."""
        return {"model": {k: v.detach().clone() for k, v in self.module.state_dict().items()},
                "alpha": self.alpha, "num_updates": int(self.num_updates)}

    def load_state_dict(self, d: dict) -> None:
        if not isinstance(d, dict) or "model" not in d:
            raise NocoError("teacher state is malformed: expected a dict with a 'model' entry")
        try:
            self.module.load_state_dict(d["model"])
        except (RuntimeError, KeyError) as e:
            raise NocoError(f"teacher weights do not fit the model: {str(e).splitlines()[0]}") from None
        self.num_updates = int(d.get("num_updates", 0))
        self.module.eval()
        self.module.requires_grad_(False)
