"""TriDet: SGP backbone, LayerNorm neck, shared classification / boundary / centre-offset heads and
the Trident relative boundary decoding (TRIDET.md).

Tensors are ``[batch, channels, time]`` inside the network. Every stage multiplies its output by
the validity mask, so padded positions hold zeros. The pyramid levels are packed side by side
along time for the heads (``packed layout``): level ``l`` occupies ``T_l`` columns followed by a
gap of ``max(num_bins, 1)`` zero columns, so one convolution call serves all levels (the gap plays
the role of the zero padding) and the Trident neighbourhoods of one level never reach into
another (positions outside a level count as zero logits, as in TriDet).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import DetectorConfig


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a ``[B, C, T]`` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.transpose(1, 2), self.normalized_shape, self.weight, self.bias, self.eps).transpose(1, 2)


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics use only the valid (unmasked) time steps when ``masked``."""

    def __init__(self, num_groups: int, num_channels: int, masked: bool):
        super().__init__(num_groups, num_channels)
        self.masked = masked

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.masked:
            return super().forward(x)
        b, c, t = x.shape
        g = self.num_groups
        m = mask.to(x.dtype).view(b, 1, 1, t)
        xg = x.view(b, g, c // g, t)
        count = m.sum(dim=3, keepdim=True) * (c // g)
        mean = (xg * m).sum(dim=(2, 3), keepdim=True) / count
        var = (((xg - mean) * m) ** 2).sum(dim=(2, 3), keepdim=True) / count
        y = ((xg - mean) / torch.sqrt(var + self.eps)).view(b, c, t)
        return y * self.weight.view(1, c, 1) + self.bias.view(1, c, 1)


class AffineDropPath(nn.Module):
    """Per-sample stochastic depth on a residual branch scaled by a learnable per-channel factor
    (initialised to 1e-4), as in TriDet's down-sampling blocks."""

    def __init__(self, dim: int, drop_prob: float):
        super().__init__()
        self.drop_prob = float(drop_prob)
        self.scale = nn.Parameter(torch.full((1, dim, 1), 1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale * x
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x / keep * torch.floor(keep + torch.rand(shape, dtype=x.dtype, device=x.device))


def _depthwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A depthwise convolution; kernel 1 as the equivalent per-channel affine map (PyTorch's CPU
    grouped-conv path for kernel 1 loops over the channels)."""
    if conv.kernel_size[0] == 1:
        return torch.addcmul(conv.bias[None, :, None], x, conv.weight.view(1, -1, 1))
    return conv(x)


class SGPBlock(nn.Module):
    """Scalable-Granularity Perception block (optionally preceded by max-pool down-sampling)."""

    def __init__(self, cfg: DetectorConfig, downsample: bool):
        super().__init__()
        d, w, kw = cfg.embed_dim, cfg.sgp_w, cfg.long_kernel
        self.downsample = downsample
        self.pad_invariant = cfg.pad_invariant
        self.ln = ChannelLayerNorm(d)
        self.gn = MaskedGroupNorm(16, d, masked=cfg.pad_invariant)
        self.psi = nn.Conv1d(d, d, w, padding=w // 2, groups=d)
        self.fc = nn.Conv1d(d, d, 1, groups=d)
        self.convw = nn.Conv1d(d, d, w, padding=w // 2, groups=d)
        self.convkw = nn.Conv1d(d, d, kw, padding=kw // 2, groups=d)
        self.global_fc = nn.Conv1d(d, d, 1, groups=d)
        self.mlp = nn.Sequential(nn.Conv1d(d, cfg.mlp_dim, 1), nn.GELU(), nn.Conv1d(cfg.mlp_dim, d, 1))
        use_dp = downsample and cfg.drop_path > 0  # TriDet: only the branch blocks carry drop-path
        self.drop_out = AffineDropPath(d, cfg.drop_path) if use_dp else nn.Identity()
        self.drop_mlp = AffineDropPath(d, cfg.drop_path) if use_dp else nn.Identity()
        for conv in (self.psi, self.fc, self.convw, self.convkw, self.global_fc):
            nn.init.normal_(conv.weight, 0.0, cfg.init_conv_vars)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.downsample:
            if self.pad_invariant:
                x = x.masked_fill(~mask, float("-inf"))
            x = F.max_pool1d(x, 3, stride=2, padding=1)
            mask = mask[:, :, ::2]
            x = x.masked_fill(~mask, 0.0)
        m = mask.to(x.dtype)
        u = self.ln(x) * m
        if self.pad_invariant:
            mean = u.sum(dim=2, keepdim=True) / m.sum(dim=2, keepdim=True)
        else:
            mean = u.mean(dim=2, keepdim=True)
        phi = torch.relu(_depthwise(self.global_fc, mean))
        mix = _depthwise(self.convw, u) + _depthwise(self.convkw, u)
        out = _depthwise(self.fc, u) * phi + mix * _depthwise(self.psi, u) + u
        out = x * m + self.drop_out(out)
        out = out + self.drop_mlp(self.mlp(self.gn(out, mask)))
        return out * m, mask


class Head(nn.Module):
    """(layers - 1) x [conv k3 (no bias), LayerNorm, ReLU] then an output conv k3, on packed levels."""

    def __init__(self, in_dim: int, dim: int, out_dim: int, layers: int, prior: float | None = None,
                 detach: bool = False):
        super().__init__()
        self.detach = detach
        self.convs = nn.ModuleList(
            nn.Conv1d(in_dim if i == 0 else dim, dim, 3, padding=1, bias=False) for i in range(layers - 1)
        )
        self.norms = nn.ModuleList(ChannelLayerNorm(dim) for _ in range(layers - 1))
        self.out = nn.Conv1d(dim if layers > 1 else in_dim, out_dim, 3, padding=1)
        nn.init.constant_(self.out.bias, 0.0 if prior is None else -math.log((1 - prior) / prior))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.detach:
            x = x.detach()
        for conv, norm in zip(self.convs, self.norms):
            x = torch.relu(norm(conv(x) * m)) * m
        return self.out(x) * m


def trident_offsets(start_logits: torch.Tensor, end_logits: torch.Tensor, offsets: torch.Tensor,
                    b: torch.Tensor, p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Trident relative boundary decoding for chosen (batch, position, class) triples.

    ``start_logits``/``end_logits``: ``[N, C, L]`` boundary-head outputs; ``offsets``: ``[N, L, 2, B+1]``
    centre-offset head outputs (after the scaled ReLU); ``b, p, c``: ``[K]`` index tensors.
    Returns ``[K, 2]`` = (d_start, d_end) in units of the level's stride:
    ``d_start = sum_j softmax_j(Rs[c, p-B+j] + O[p,0,j]) (B-j)``, ``d_end = sum_j softmax_j(Re[c, p+j] + O[p,1,j]) j``,
    positions outside ``[0, L)`` counting as zero logits.
    """
    nb = offsets.shape[-1] - 1
    win_s = F.pad(start_logits, (nb, 0)).unfold(2, nb + 1, 1)[b, c, p]
    win_e = F.pad(end_logits, (0, nb)).unfold(2, nb + 1, 1)[b, c, p]
    prob_s = torch.softmax(win_s + offsets[b, p, 0], dim=-1)
    prob_e = torch.softmax(win_e + offsets[b, p, 1], dim=-1)
    j = torch.arange(nb + 1, device=offsets.device, dtype=offsets.dtype)
    return torch.stack(((prob_s * (nb - j)).sum(-1), (prob_e * j).sum(-1)), dim=-1)


class TriDet(nn.Module):
    """The detector. ``forward(x [N, D, T], mask [N, T] bool)`` with ``T`` a multiple of ``cfg.max_stride``.

    Returns a dict on the packed layout of length ``L`` (see module docstring):
    ``cls`` [N, L, C] logits, ``start``/``end`` [N, C, L] boundary logits, ``offsets`` [N, L, 2, B+1],
    ``mask`` [N, L] bool (valid points), ``points`` [L, 4] = (position on the base grid, regression
    range low, high, stride) as float.
    """

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.embed = nn.ModuleList([nn.Conv1d(cfg.input_dim, d, 3, padding=1, bias=False),
                                    nn.Conv1d(d, d, 3, padding=1, bias=False)])
        self.embed_norms = nn.ModuleList([ChannelLayerNorm(d), ChannelLayerNorm(d)])
        self.stem = nn.ModuleList(SGPBlock(cfg, downsample=False) for _ in range(cfg.stem_blocks))
        self.branch = nn.ModuleList(SGPBlock(cfg, downsample=True) for _ in range(cfg.num_levels - 1))
        self.neck = nn.ModuleList(ChannelLayerNorm(d) for _ in range(cfg.num_levels))
        c, h, n = cfg.num_classes, cfg.head_dim, cfg.head_layers
        self.cls_head = Head(d, h, c, n, prior=0.01)
        self.start_head = Head(d, h, c, n, prior=0.01, detach=True)
        self.end_head = Head(d, h, c, n, prior=0.01, detach=True)
        self.reg_head = Head(d, h, 2 * (cfg.num_bins + 1), n)
        self.scales = nn.Parameter(torch.ones(cfg.num_levels))
        self.gap = max(cfg.num_bins, 1)

    def level_lengths(self, t: int) -> list[int]:
        return [t // s for s in self.cfg.strides]

    def points(self, t: int, device=None) -> torch.Tensor:
        """``[L, 4]`` (base-grid position, range low, range high, stride) of the packed layout;
        gap columns get position -1 and an empty range."""
        cfg = self.cfg
        rows = []
        for (lo, hi), s, tl in zip(cfg.regression_ranges, cfg.strides, self.level_lengths(t)):
            pos = torch.cat([torch.arange(tl, dtype=torch.float32) * s, torch.full((self.gap,), -1.0)])
            meta = torch.tensor([lo, hi, float(s)]).expand(tl + self.gap, 3)
            rows.append(torch.cat([pos[:, None], meta], dim=1))
        return torch.cat(rows).to(device)

    def pack(self, levels: list[torch.Tensor]) -> torch.Tensor:
        n, ch = levels[0].shape[:2]
        gap = levels[0].new_zeros(n, ch, self.gap)
        return torch.cat([t for lv in levels for t in (lv, gap)], dim=2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        n, _, t = x.shape
        if t % cfg.max_stride:
            raise ValueError(f"input length {t} is not a multiple of the largest stride {cfg.max_stride}")
        mask = mask[:, None, :]
        m = mask.to(x.dtype)
        x = x * m
        for conv, norm in zip(self.embed, self.embed_norms):
            x = torch.relu(norm(conv(x) * m)) * m
        for blk in self.stem:
            x, mask = blk(x, mask)
        feats, masks = [x], [mask]
        for blk in self.branch:
            x, mask = blk(x, mask)
            feats.append(x)
            masks.append(mask)
        feats = [norm(f) * mk.to(f.dtype) for norm, f, mk in zip(self.neck, feats, masks)]
        pf = self.pack(feats)
        pm = self.pack([mk.to(x.dtype) for mk in masks])
        scale = torch.cat([s.expand(tl + self.gap) for s, tl in zip(self.scales, self.level_lengths(t))])
        offsets = torch.relu(self.reg_head(pf, pm) * scale)
        length = pf.shape[2]
        return {
            "cls": self.cls_head(pf, pm).transpose(1, 2),
            "start": self.start_head(pf, pm),
            "end": self.end_head(pf, pm),
            "offsets": offsets.transpose(1, 2).reshape(n, length, 2, cfg.num_bins + 1),
            "mask": pm[:, 0] > 0,
            "points": self.points(t, x.device),
        }


def build_model(cfg: DetectorConfig) -> TriDet:
    return TriDet(cfg)
