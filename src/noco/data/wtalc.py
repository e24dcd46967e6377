"""Convert a W-TALC style feature folder into the noco dataset layout (``noco convert-wtalc``).

W-TALC (and UM, CO2-Net, ASM-Loc, ...) ship one pickled object array of per-video features,
e.g. ``Thumos14reduced-I3D-JOINTFeatures.npy`` (video ``i`` -> float ``[T_i, D]``), and an
annotation folder (often ``<name>-Annotations/``) of .npy files aligned with it:
``videoname.npy``, ``subset.npy``, ``segments.npy`` (per video: list of ``[start, end]``
seconds), ``labels_all.npy`` or ``labels.npy`` (per video: one label per segment),
``duration.npy`` (optional) and ``classlist.npy``. Object arrays need ``allow_pickle=True``,
which can run arbitrary code: they are loaded only with ``trust_pickle=True``.
"""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

import numpy as np

from ..errors import DataError, NocoError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text, check_writable_dir
from .dataset import bad_video_id, load_dataset

log = logging.getLogger("noco.data")

ANNOTATION_FILES = ("videoname.npy", "subset.npy", "segments.npy", "classlist.npy")
LABEL_FILES = ("labels_all.npy", "labels.npy")


def _text(x) -> str:
    if isinstance(x, (bytes, np.bytes_)):
        return bytes(x).decode("utf-8")
    if isinstance(x, np.ndarray) and x.size == 1:
        return _text(x.reshape(()).item())
    return str(x)


class _Loader:
    def __init__(self, trust_pickle: bool):
        self.trust = trust_pickle
        self.refused: list[Path] = []
        self.problems: list[str] = []

    def load(self, path: Path):
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as e:
            if "allow_pickle" not in str(e):
                self.problems.append(f"{path}: not a readable .npy file ({e})")
                return None
        except OSError as e:
            self.problems.append(f"{path}: cannot read ({e})")
            return None
        if not self.trust:
            self.refused.append(path)
            return None
        try:
            return np.load(path, allow_pickle=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a user-facing error
            self.problems.append(f"{path}: cannot unpickle ({type(e).__name__}: {str(e)[:200]})")
            return None


def _find_annotation_dir(src: Path) -> Path:
    if (src / "videoname.npy").is_file():
        return src
    cands = sorted(p for p in src.iterdir() if p.is_dir() and (p / "videoname.npy").is_file())
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise NocoError(f"{src}: no W-TALC annotation files (videoname.npy, ...) here or in a sub-folder")
    raise NocoError(f"{src}: several annotation folders ({', '.join(p.name for p in cands)}); "
                    f"pass --annotations")


def _find_features(src: Path, ann_dir: Path) -> Path:
    cands = sorted({p for d in (src, ann_dir) for p in d.glob("*.npy") if "feature" in p.name.lower()})
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise NocoError(f"{src}: no feature file (*Features.npy) found; pass --features")
    raise NocoError(f"{src}: several feature files ({', '.join(p.name for p in cands)}); pass --features")


def convert_wtalc(src: str | Path, out: str | Path, *, trust_pickle: bool = False, fps: float = 25.0,
                  feat_stride: int = 16, num_frames: int = 16, train_subset: str | None = None,
                  test_subset: str | None = None, features: str | Path | None = None,
                  annotations: str | Path | None = None, force: bool = False) -> Path:
    """Convert W-TALC files under ``src`` to a noco dataset in ``out``; returns ``out``."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise NocoError(f"{src}: W-TALC source folder not found")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise NocoError(f"--fps must be a positive number, found {fps!r}")
    for name, val in (("--feat-stride", feat_stride), ("--num-frames", num_frames)):
        if not (isinstance(val, int) and val > 0):
            raise NocoError(f"{name} must be a positive integer, found {val!r}")
    if out.exists() and not out.is_dir():
        raise NocoError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise NocoError(f"{out}: directory is not empty (use --force to write into it)")
    ann_dir = Path(annotations) if annotations else _find_annotation_dir(src)
    feat_path = Path(features) if features else _find_features(src, ann_dir)

    missing = [str(ann_dir / f) for f in ANNOTATION_FILES if not (ann_dir / f).is_file()]
    if not any((ann_dir / f).is_file() for f in LABEL_FILES):
        missing.append(str(ann_dir / "labels.npy"))
    if not feat_path.is_file():
        missing.append(str(feat_path))
    if missing:
        raise DataError([f"{m}: file not found" for m in missing], header=f"{src}: incomplete W-TALC folder")

    ld = _Loader(trust_pickle)
    arrays = {f: ld.load(ann_dir / f) for f in ANNOTATION_FILES}
    label_arrays = {f: ld.load(ann_dir / f) for f in LABEL_FILES if (ann_dir / f).is_file()}
    dur_path = ann_dir / "duration.npy"
    durations = ld.load(dur_path) if dur_path.is_file() else None
    feats = ld.load(feat_path)
    if ld.refused:
        raise NocoError(
            "these files hold pickled Python objects, and loading a pickle can run arbitrary code: "
            + ", ".join(str(p) for p in ld.refused)
            + ". Re-run with --trust-pickle only if you trust where they came from.")
    if ld.problems:
        raise DataError(ld.problems, header=f"{src}: unreadable W-TALC files")

    problems: list[str] = []
    names = [_text(x) for x in np.asarray(arrays["videoname.npy"]).reshape(-1)]
    n = len(names)
    subsets = [_text(x) for x in np.asarray(arrays["subset.npy"]).reshape(-1)]
    classes = [_text(x) for x in np.asarray(arrays["classlist.npy"]).reshape(-1)]
    segments = list(arrays["segments.npy"]) if arrays["segments.npy"].ndim else []
    feats = list(feats) if getattr(feats, "ndim", 0) else []
    checks = [("subset.npy", ann_dir / "subset.npy", len(subsets)), ("segments.npy", ann_dir / "segments.npy",
              len(segments)), (feat_path.name, feat_path, len(feats))]
    if durations is not None:
        durations = np.asarray(durations).reshape(len(durations), -1) if np.ndim(durations) else durations
        checks.append(("duration.npy", dur_path, len(durations) if np.ndim(durations) else 0))
    for _, path, m in checks:
        if m != n:
            problems.append(f"{path}: has {m} entries but videoname.npy has {n} videos")
    if problems:
        raise DataError(problems, header=f"{src}: inconsistent W-TALC files")

    # segments per video, then per-segment labels: the first label file whose per-video lengths match
    seg_arrays: list[np.ndarray | None] = []
    for i, seg in enumerate(segments):
        try:
            arr = np.asarray(seg, dtype=np.float64)
            seg_arrays.append(arr.reshape(-1, 2) if arr.size % 2 == 0 else None)
        except (TypeError, ValueError):
            seg_arrays.append(None)

    def label_list(c) -> list[str]:
        if isinstance(c, (str, bytes, np.str_, np.bytes_)):
            return [_text(c)]
        return [_text(x) for x in np.asarray(c, dtype=object).reshape(-1)]

    labels = None
    for fname, arr in label_arrays.items():
        cand = [label_list(c) for c in arr] if np.ndim(arr) else []
        if len(cand) == n and all(sa is None or len(sa) == len(c) for sa, c in zip(seg_arrays, cand)):
            labels = cand
            break
    if labels is None:
        raise DataError(f"{ann_dir}: no label file ({' or '.join(label_arrays)}) has one label per segment "
                        f"for every video", header=f"{src}: inconsistent W-TALC files")

    cset = set(classes)
    if len(cset) != len(classes):
        problems.append(f"{ann_dir / 'classlist.npy'}: lists some classes more than once")
    database: dict = {}
    seen: set[str] = set()
    arrays_out: dict[str, np.ndarray] = {}
    for i, vid in enumerate(names):
        where = f"video {vid!r} (entry {i})"
        why = bad_video_id(vid)
        if why:
            problems.append(f"{ann_dir / 'videoname.npy'}: {where}: video id {why}")
            continue
        if vid in seen:
            problems.append(f"{ann_dir / 'videoname.npy'}: {where}: duplicate video id")
            continue
        seen.add(vid)
        try:
            x = np.asarray(feats[i])
        except Exception:  # noqa: BLE001
            x = np.asarray(0)
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1 or not np.issubdtype(x.dtype, np.number):
            problems.append(f"{feat_path}: {where}: features must be a numeric [T, D] array, found "
                            f"shape {x.shape} dtype {x.dtype}")
            continue
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            problems.append(f"{feat_path}: {where}: features contain NaN/inf")
            continue
        segs = seg_arrays[i]
        if segs is None:
            problems.append(f"{ann_dir / 'segments.npy'}: {where}: segments must be [start, end] pairs")
            continue
        if not np.isfinite(segs).all():
            problems.append(f"{ann_dir / 'segments.npy'}: {where}: segments contain NaN/inf")
            continue
        unknown = sorted({lab for lab in labels[i] if lab not in cset})
        if unknown:
            problems.append(f"{ann_dir / 'labels.npy'}: {where}: labels {unknown} are not in classlist.npy")
            continue
        if durations is not None:
            d = np.asarray(durations[i], dtype=np.float64).reshape(-1)
            dur = float(d[0]) if d.size else float("nan")
        else:
            dur = ((x.shape[0] - 1) * feat_stride + num_frames) / fps
        if not (math.isfinite(dur) and dur > 0):
            problems.append(f"{dur_path}: {where}: duration must be a positive number of seconds, found {dur}")
            continue
        database[vid] = {
            "subset": subsets[i],
            "duration": dur,
            "fps": float(fps),
            "annotations": [{"segment": [float(s), float(e)], "label": lab}
                            for (s, e), lab in zip(segs.tolist(), labels[i])],
        }
        arrays_out[vid] = x
    if problems:
        raise DataError(problems, header=f"{src}: cannot convert W-TALC files ({len(problems)} problems)")
    if durations is None:
        log.info("%s: no duration.npy; durations derived from the feature lengths", ann_dir)

    present = sorted(set(subsets))
    if train_subset is None or test_subset is None:
        low = {s.lower(): s for s in present}
        for tr, te in (("validation", "test"), ("training", "validation"), ("train", "test"), ("train", "val")):
            if tr in low and te in low:
                train_subset = train_subset or low[tr]
                test_subset = test_subset or low[te]
                break
        else:
            raise NocoError(f"{ann_dir / 'subset.npy'}: cannot tell the train and test subsets apart "
                            f"(subsets: {', '.join(present)}); pass --train-subset and --test-subset")

    check_writable_dir(out)
    feat_dir = out / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    for vid, x in arrays_out.items():
        buf = io.BytesIO()
        np.save(buf, x, allow_pickle=False)
        atomic_write_bytes(feat_dir / f"{vid}.npy", buf.getvalue())
    atomic_write_text(out / "annotations.json",
                      json.dumps({"version": f"converted from W-TALC {src.name}", "database": database}) + "\n")
    atomic_write_json(out / "dataset.json", {
        "annotations": "annotations.json", "features": "features", "fps": fps, "feat_stride": feat_stride,
        "num_frames": num_frames, "train_subset": train_subset, "test_subset": test_subset,
        "classes": classes, "source": f"W-TALC folder {src.resolve()}",
    }, indent=1)
    try:
        load_dataset(out)
    except DataError as e:
        raise DataError(e.problems, header=f"{out}: the converted dataset does not validate") from None
    log.info("%s: converted %d videos (%d classes) from %s", out, len(arrays_out), len(classes), src)
    return out
