"""The dataset description of a standard-layout folder that has no ``dataset.json``.

The layout most TAL code bases use (ActionFormer, TriDet, OpenTAD; W-TALC-style per-video I3D
exports) is an ActivityNet-style annotation JSON plus one ``<video_id>.npy`` per video, e.g.::

    DIR/annotations/thumos14.json      DIR/i3d_features/video_test_0000004.npy ...

:func:`infer_description` turns such a folder into the fields of ``dataset.json``, deciding only
what the files determine, and refusing (with one clear error) where they do not:

* **annotations**: the one JSON file, in ``DIR`` or one folder below, whose top level has a
  ``"database"`` object. None or several: error (write ``dataset.json``).
* **train/test subsets**, by the subset names of that file (case-insensitive):
  ``validation`` + ``test`` (THUMOS14: train on validation, test on test), ``training`` +
  ``validation`` (ActivityNet), ``train`` + ``test``, ``train`` + ``val``. Anything else: error.
* **features**: the folder (``DIR`` or up to two levels below) holding the most
  ``<video_id>.npy`` files of those subsets, or ``v_<video_id>.npy`` (ActivityNet's convention).
* **num_frames** 16 (the I3D window) and **fps**: the median of the per-video ``fps`` fields
  when the file has them (THUMOS14), else 25 (the W-TALC I3D extraction rate of ActivityNet).
* **feat_stride**: measured from the data, ``(duration * fps - num_frames) / (T - 1)`` per
  video, median over videos, rounded. It is used only when it is close to an integer and at
  least 80 % of the videos then have the length the loader expects; otherwise (e.g. features
  resized to a fixed length) the folder needs a ``dataset.json``.

Every decision is logged, and ``noco dataset DIR --write-description`` writes them as
``dataset.json`` for the user to check and edit.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from ..errors import DataError

log = logging.getLogger("noco.data")

# (train, test) subset names, lower-case, in order of preference
SUBSET_CONVENTIONS = (("validation", "test"), ("training", "validation"), ("train", "test"),
                      ("train", "val"))
I3D_NUM_FRAMES = 16
DEFAULT_FPS_WITHOUT_FIELD = 25.0   # W-TALC's I3D extraction rate (ActivityNet v1.2 / v1.3)
STRIDE_AGREEMENT = 0.8             # share of videos whose length must fit the measured stride
FEATURE_PREFIXES = ("", "v_")       # ActivityNet feature files are often v_<youtube id>.npy
MAX_JSON_BYTES = 512 * 1024 * 1024
TEMPLATE = ('{"annotations": "annotations.json", "features": "features", "fps": 30, "feat_stride": 4, '
            '"num_frames": 16, "train_subset": "Validation", "test_subset": "Test"}')


def _fail(root: Path, why: str) -> DataError:
    return DataError(f"{why}. Write {root / 'dataset.json'} to describe the dataset, e.g. {TEMPLATE} "
                     f"(see the README, 'Dataset layout')", header=f"{root}: no dataset.json")


def _annotation_candidates(root: Path) -> list[Path]:
    files = sorted(p for p in root.glob("*.json") if p.name != "dataset.json")
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files += sorted(sub.glob("*.json"))
    return [p for p in files if p.is_file() and p.stat().st_size <= MAX_JSON_BYTES]


def _with_database(path: Path) -> dict | None:
    """The parsed file when it is an ActivityNet-style annotation file, else None."""
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get("database"), dict) and obj["database"]:
        return obj
    return None


def _pick_subsets(root: Path, ann: Path, db: dict) -> tuple[str, str]:
    names: dict[str, str] = {}
    for entry in db.values():
        if isinstance(entry, dict) and isinstance(entry.get("subset"), str):
            names.setdefault(entry["subset"].lower(), entry["subset"])
    for train, test in SUBSET_CONVENTIONS:
        if train in names and test in names:
            return names[train], names[test]
    raise _fail(root, f"cannot tell the training and test subsets of {ann} from its subset names "
                      f"{sorted(names.values())} (known pairs: "
                      + ", ".join(f"{a}/{b}" for a, b in SUBSET_CONVENTIONS) + ")")


def _feature_folder(root: Path, ids: set[str]) -> tuple[Path, str, int]:
    best, best_prefix, best_n = None, "", 0
    level = [root]
    for _depth in range(3):
        nxt = []
        for d in level:
            try:
                names = os.listdir(d)
            except OSError:
                continue
            stems = {f[:-4] for f in names if f.endswith(".npy")}
            for prefix in FEATURE_PREFIXES:
                n = sum(1 for v in ids if prefix + v in stems)
                if n > best_n:
                    best, best_prefix, best_n = d, prefix, n
            nxt += sorted(d / f for f in names if not f.startswith(".") and (d / f).is_dir())
        level = nxt
    if best is None:
        raise _fail(root, "no folder in it (or up to two levels below) holds a <video_id>.npy (or "
                          "v_<video_id>.npy) feature file of the annotated videos")
    return best, best_prefix, best_n


def _measure_stride(root: Path, db: dict, ids: list[str], feat_dir: Path, prefix: str, fps: float) -> int:
    from .dataset import expected_snippets, length_fits, read_npy_header

    lengths, est = [], []
    for vid in ids:
        path = feat_dir / f"{prefix}{vid}.npy"
        entry = db[vid]
        dur, vfps = entry.get("duration"), entry.get("fps", fps)
        if not path.is_file() or not isinstance(dur, (int, float)) or not isinstance(vfps, (int, float)):
            continue
        try:
            shape, _, _ = read_npy_header(path)
        except (ValueError, OSError, SyntaxError, EOFError):
            continue  # the loader reports it
        if len(shape) != 2 or shape[0] < 2 or dur <= 0 or vfps <= 0:
            continue
        lengths.append((shape[0], float(dur), float(vfps)))
        est.append((dur * vfps - I3D_NUM_FRAMES) / (shape[0] - 1))
    if not est:
        raise _fail(root, f"cannot measure the feature stride: no readable 2-D feature file in {feat_dir}")
    med = float(np.median(est))
    stride = max(1, int(round(med)))
    fits = sum(length_fits(t, expected_snippets(d, f, stride, I3D_NUM_FRAMES)) for t, d, f in lengths) / len(lengths)
    if abs(med - stride) > 0.15 * stride or fits < STRIDE_AGREEMENT:
        raise _fail(root, f"cannot measure the feature stride: the feature lengths in {feat_dir} do not follow "
                          f"the video durations at one stride (median estimate {med:.2f} frames at "
                          f"{fps:g} fps and {I3D_NUM_FRAMES}-frame snippets; {100 * fits:.0f}% of "
                          f"{len(lengths)} videos agree with stride {stride}); features resized to a fixed "
                          f"length need their fps/feat_stride stated")
    return stride


def infer_description(root: str | os.PathLike, with_annotations: bool = False) -> dict | tuple[dict, dict]:
    """The ``dataset.json`` fields of a standard-layout folder (module docstring), or a DataError.
    ``with_annotations``: also return the parsed annotation file (so the loader reads it once)."""
    root = Path(root)
    found = [(p, obj) for p in _annotation_candidates(root) if (obj := _with_database(p)) is not None]
    if not found:
        raise _fail(root, "no ActivityNet-style annotation file (a JSON object with a 'database' "
                          "mapping) in it or one folder below")
    if len(found) > 1:
        raise _fail(root, "several annotation files could be meant: "
                          + ", ".join(str(p.relative_to(root)) for p, _ in found))
    ann, obj = found[0]
    db = obj["database"]
    train, test = _pick_subsets(root, ann, db)
    ids = sorted(v for v, e in db.items() if isinstance(e, dict) and e.get("subset") in (train, test))
    feat_dir, prefix, n_found = _feature_folder(root, set(ids))
    per_video = [e["fps"] for e in db.values()
                 if isinstance(e, dict) and isinstance(e.get("fps"), (int, float)) and e["fps"] > 0]
    fps = float(np.median(per_video)) if per_video else DEFAULT_FPS_WITHOUT_FIELD
    if math.isclose(fps, round(fps), abs_tol=1e-6):
        fps = float(round(fps))
    stride = _measure_stride(root, db, ids, feat_dir, prefix, fps)
    desc = {
        "annotations": str(ann.relative_to(root)),
        "features": str(feat_dir.relative_to(root)) if feat_dir != root else ".",
        "fps": int(fps) if fps.is_integer() else fps,
        "feat_stride": stride,
        "num_frames": I3D_NUM_FRAMES,
        "train_subset": train,
        "test_subset": test,
    }
    if prefix:
        desc["feature_prefix"] = prefix
    log.info("%s has no dataset.json; inferred: annotations %s, features %s/%s<video_id>.npy (%d of %d videos), subsets "
             "%s -> %s, fps %s (%s), num_frames %d (I3D), feat_stride %d (measured from the feature "
             "lengths); `noco dataset %s --write-description` saves this as dataset.json",
             root, desc["annotations"], desc["features"], prefix, n_found, len(ids), train, test, desc["fps"],
             "median of the per-video fps fields" if per_video else "no fps field: W-TALC's 25",
             I3D_NUM_FRAMES, stride, root)
    return (desc, obj) if with_annotations else desc
