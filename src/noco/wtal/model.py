"""The ASM-Loc base model (WTAL.md): video-level supervision only.

Shapes: features ``x`` [B, T, D]; ``valid`` [B, T] bool (False on padding); K action classes
plus one background class (index K).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import WtalConfig


def masked_topk_mean(x: torch.Tensor, valid: torch.Tensor | None, ratio: float) -> torch.Tensor:
    """Mean of the ``k = max(1, floor(n * ratio))`` largest values over time, per video and class.

    ``x`` [B, T, C]; ``valid`` [B, T] (None: all valid); ``n`` is each video's valid length.
    Padded positions are never selected. Returns [B, C].
    """
    b, t, _ = x.shape
    if valid is None:
        n = torch.full((b,), t, dtype=torch.long, device=x.device)
        xs = x
    else:
        n = valid.sum(dim=1)
        xs = x.masked_fill(~valid[..., None], float("-inf"))
    k = torch.clamp(torch.floor(n.to(torch.float64) * ratio).long(), min=1)
    k = torch.minimum(k, n.clamp(min=1))
    kmax = int(k.max())
    top = torch.topk(xs, kmax, dim=1, sorted=True).values  # [B, kmax, C]
    take = torch.arange(kmax, device=x.device)[None, :] < k[:, None]  # [B, kmax]
    top = torch.where(take[..., None], top, torch.zeros((), dtype=top.dtype, device=top.device))
    return top.sum(dim=1) / k[:, None].to(top.dtype)


class WtalModel(nn.Module):
    """ASM-Loc base: Conv1d(D->H, k3)+ReLU, attention Conv1d(H->2, k1) softmax (fg, bg),
    snippet classifier Linear(H->K+1), top-k MIL pooling of the attention-weighted CAS."""

    def __init__(self, feat_dim: int, num_classes: int, cfg: WtalConfig):
        super().__init__()
        self.feat_dim = int(feat_dim)
        self.num_classes = int(num_classes)
        self.cfg = cfg
        h = cfg.hidden_dim
        self.input_dropout = nn.Dropout(cfg.input_dropout)
        self.embedding = nn.Conv1d(self.feat_dim, h, kernel_size=3, padding=1)
        self.attention = nn.Conv1d(h, 2, kernel_size=1)
        self.classifier = nn.Linear(h, self.num_classes + 1)
        self.snippet_dropout = nn.Dropout(cfg.snippet_dropout)
        self.feature_dropout = nn.Dropout(cfg.feature_dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Returns ``fg_logits``/``bg_logits`` [B, K+1] (top-k means, pre-softmax), ``fg_score``/
        ``bg_score`` (their softmax), ``cas`` [B, T, K+1] (snippet logits) and ``fg_att`` [B, T]."""
        if x.dim() != 3 or x.shape[-1] != self.feat_dim:
            raise ValueError(f"expected features [B, T, {self.feat_dim}], found {tuple(x.shape)}")
        if valid is not None:
            x = x * valid[..., None].to(x.dtype)  # padding is exactly zero for the k=3 convolution
        h = F.relu(self.embedding(self.input_dropout(x).transpose(1, 2)))  # [B, H, T]
        att = torch.softmax(self.attention(h), dim=1).transpose(1, 2)  # [B, T, 2]
        h = h.transpose(1, 2)  # [B, T, H]
        if self.training:
            # snippet dropout: whole snippets are dropped (one mask value per snippet, rescaled)
            h = h * self.snippet_dropout(torch.ones_like(h[..., :1]))
        cas = self.classifier(self.feature_dropout(h))  # [B, T, K+1]
        fg_att, bg_att = att[..., 0], att[..., 1]
        fg_logits = masked_topk_mean(cas * fg_att[..., None], valid, self.cfg.topk_fg_ratio)
        bg_logits = masked_topk_mean(cas * bg_att[..., None], valid, self.cfg.topk_bg_ratio)
        return {
            "fg_logits": fg_logits,
            "bg_logits": bg_logits,
            "fg_score": torch.softmax(fg_logits, dim=-1),
            "bg_score": torch.softmax(bg_logits, dim=-1),
            "cas": cas,
            "fg_att": fg_att,
        }


def multi_hot(class_ids: list[tuple[int, ...]] | list[list[int]], num_classes: int) -> torch.Tensor:
    """[B, K] multi-hot video labels from lists of class ids."""
    y = torch.zeros(len(class_ids), num_classes)
    for i, ids in enumerate(class_ids):  # per video, not per instance
        if len(ids):
            y[i, torch.as_tensor(list(ids), dtype=torch.long)] = 1.0
    return y


def wtal_losses(out: dict[str, torch.Tensor], y: torch.Tensor, cfg: WtalConfig) -> dict[str, torch.Tensor]:
    """ASM-Loc base losses with L1-normalised multi-hot targets over K+1 classes.

    ``fg = CE(fg_score, [y, 0])``, ``bg = CE(bg_score, [0, 1])``, ``abg = CE(bg_score, [y, 0])``;
    ``total = loss_fg * fg + loss_bg * bg + loss_abg * abg``. ``y`` [B, K] multi-hot.
    A video without any class (pure background) uses ``[0, 1]`` as its fg target.
    """
    b = y.shape[0]
    zeros = torch.zeros(b, 1, dtype=y.dtype, device=y.device)
    ones = torch.ones(b, 1, dtype=y.dtype, device=y.device)
    fg_t = torch.cat([y, zeros], dim=1)
    empty = fg_t.sum(dim=1, keepdim=True) == 0
    fg_t = torch.where(empty, torch.cat([torch.zeros_like(y), ones], dim=1), fg_t)
    fg_t = fg_t / fg_t.sum(dim=1, keepdim=True)
    bg_t = torch.cat([torch.zeros_like(y), ones], dim=1)
    fg_lp = torch.log_softmax(out["fg_logits"], dim=-1)
    bg_lp = torch.log_softmax(out["bg_logits"], dim=-1)
    fg = -(fg_t * fg_lp).sum(dim=-1).mean()
    bg = -(bg_t * bg_lp).sum(dim=-1).mean()
    abg = -(fg_t * bg_lp).sum(dim=-1).mean()
    total = cfg.loss_fg * fg + cfg.loss_bg * bg + cfg.loss_abg * abg
    return {"total": total, "fg": fg, "bg": bg, "abg": abg}
