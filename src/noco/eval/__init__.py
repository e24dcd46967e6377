"""Evaluation: detection mAP (ActivityNet protocol) and pseudo-label quality."""
