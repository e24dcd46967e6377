"""A development split: part of the *training* videos held out as the evaluation subset.

Every threshold, epoch or method choice must be made without the test subset. ``write_dev_split``
turns a dataset into a new dataset directory whose training subset is ``1 - fraction`` of the
original training videos and whose evaluation subset is the rest of them; the test videos are not
in it at all, so any noco command on it (``noco run``, ``noco ablate``, ``noco eval``) measures on
held-out training videos only. The features are not copied: the new ``dataset.json`` points at the
original feature folder.

The held-out videos' temporal annotations are used to *score* a choice, as ActionFormer-style
validation does; the weakly-supervised stages still train from video-level labels only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..errors import NocoError
from ..io import atomic_write_json, read_json
from .dataset import DATASET_FILE, Dataset, load_dataset

log = logging.getLogger(__name__)

DEV_TRAIN, DEV_TEST = "dev-train", "dev-test"


def dev_split_ids(video_ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(kept for training, held out), a seeded random split of ``sorted(video_ids)``; at least one
    video on each side."""
    if not 0.0 < fraction < 1.0:
        raise NocoError(f"the held-out fraction must be in (0, 1), found {fraction}")
    ids = sorted(video_ids)
    if len(ids) < 2:
        raise NocoError(f"a development split needs at least 2 training videos, found {len(ids)}")
    n_out = min(max(int(round(fraction * len(ids))), 1), len(ids) - 1)
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(int(seed) + 104729)).tolist()
    out = set(perm[:n_out])
    return [v for i, v in enumerate(ids) if i not in out], [v for i, v in enumerate(ids) if i in out]


def write_dev_split(src: str | os.PathLike | Dataset, out: str | os.PathLike, fraction: float = 0.2,
                    seed: int = 0) -> Path:
    """Write the development dataset of ``src`` (a directory or a loaded Dataset) to ``out``: its
    ``annotations.json`` holds the training videos only, with subsets ``dev-train`` / ``dev-test``,
    and its ``dataset.json`` points at ``src``'s features. Returns ``out``; ``out`` must not hold a
    dataset already."""
    ds = src if isinstance(src, Dataset) else load_dataset(src)
    out = Path(out)
    if (out / DATASET_FILE).exists():
        raise NocoError(f"{out / DATASET_FILE} exists already; choose another output directory")
    train = ds.subset(ds.train_subset)
    keep, held = dev_split_ids([v.id for v in train], fraction, seed)
    ann = read_json(ds.annotation_file, "annotation file")
    db = ann["database"]
    new_db = {}
    for subset, ids in ((DEV_TRAIN, keep), (DEV_TEST, held)):
        for vid in ids:
            new_db[vid] = {**db[vid], "subset": subset}
    seen = {c for v in (ds.videos[i] for i in keep) for c in v.class_ids}
    missing = sorted({c for v in (ds.videos[i] for i in held) for c in v.class_ids} - seen)
    if missing:
        log.warning("classes %s occur in held-out videos only; the detector never trains on them",
                    ", ".join(ds.classes[c] for c in missing))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "annotations.json", {"version": f"dev split of {ds.root}", "database": new_db})
    desc = ds.describe()
    desc.update({"annotations": "annotations.json", "features": str(ds.feature_dir.resolve()),
                 "train_subset": DEV_TRAIN, "test_subset": DEV_TEST})
    desc["source"] = {"dataset": str(ds.root.resolve()), "train_subset": ds.train_subset,
                      "held_out_fraction": float(fraction), "seed": int(seed),
                      "note": "development split: the evaluation subset is held-out training videos; "
                              "no test video is included"}
    atomic_write_json(out / DATASET_FILE, desc, indent=1)
    log.info("development split of %s: %d training videos kept, %d held out for evaluation -> %s",
             ds.root, len(keep), len(held), out)
    return out
