"""Interval operations: tIoU, NMS, Soft-NMS (vectorized PyTorch)."""
