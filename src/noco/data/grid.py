"""Seconds <-> snippet-grid conversion (TRIDET.md).

Snippet ``i`` covers frames ``[i * feat_stride, i * feat_stride + num_frames)``; its centre is at
frame ``i * feat_stride + num_frames / 2``. Works on floats, numpy arrays and tensors alike.
"""

from __future__ import annotations


def sec_to_grid(t, fps: float, feat_stride: int, num_frames: int):
    return (t * fps - 0.5 * num_frames) / feat_stride


def grid_to_sec(g, fps: float, feat_stride: int, num_frames: int):
    return (g * feat_stride + 0.5 * num_frames) / fps
