"""The dataset layout, its validation, and lazy (memory-mapped) feature access.

A dataset is a directory with ``dataset.json``::

    {"annotations": "annotations.json", "features": "features", "fps": 30, "feat_stride": 4,
     "num_frames": 16, "train_subset": "Validation", "test_subset": "Test",
     "classes": [...],            # optional: fixes the class order
     "feature_prefix": ""}        # optional: e.g. "v_" for files v_<video_id>.npy

Paths are relative to the directory (``annotations`` and ``features`` default to the values
above). A folder without ``dataset.json`` in the usual layout (one annotation JSON, a folder of
``.npy`` files) is described automatically: :mod:`noco.data.layout`. The annotation file uses the ActivityNet layout
``{"database": {vid: {"subset", "duration", "fps"?, "annotations": [{"segment", "label",
"label_id"?}]}}}``; a video's own ``fps`` overrides the default. Features are
``<features>/<feature_prefix><video_id>.npy``, float ``[T, D]``; snippet ``i`` covers frames
``[i * feat_stride, i * feat_stride + num_frames)``.

Only videos of ``train_subset`` and ``test_subset`` are loaded; others are ignored (counted).
``load_dataset`` reads only the ``.npy`` headers and reports every problem it finds in one
:class:`~noco.errors.DataError`.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, NocoError
from ..io import read_json

log = logging.getLogger("noco.data")

DATASET_FILE = "dataset.json"
DEFAULTS = {"annotations": "annotations.json", "features": "features", "feature_prefix": ""}
REQUIRED = ("fps", "feat_stride", "num_frames", "train_subset", "test_subset")
# informational keys that noco writes (synth, converters) and never interprets
INFO_KEYS = ("name", "description", "generator", "source")
KNOWN_KEYS = tuple(DEFAULTS) + REQUIRED + ("classes",) + INFO_KEYS


@dataclass(frozen=True, eq=False)
class Video:
    """One video with its (clipped) ground-truth instances; segments in seconds."""

    id: str
    subset: str
    duration: float
    fps: float
    num_snippets: int
    feature_file: Path
    segments: np.ndarray  # [N, 2] float64, clipped to [0, duration], end > start
    labels: np.ndarray  # [N] int64 class indices

    @property
    def class_ids(self) -> tuple[int, ...]:
        return tuple(sorted({int(c) for c in self.labels.tolist()}))

    def __repr__(self) -> str:
        return (f"Video({self.id!r}, subset={self.subset!r}, duration={self.duration}, fps={self.fps}, "
                f"num_snippets={self.num_snippets}, instances={len(self.labels)})")


@dataclass(frozen=True)
class WeakVideo:
    """The video-level view of a video: its class set, and no segment information at all."""

    id: str
    subset: str
    duration: float
    fps: float
    num_snippets: int
    feature_file: Path
    class_ids: tuple[int, ...]


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    feat_dim: int
    fps: float
    feat_stride: int
    num_frames: int
    train_subset: str
    test_subset: str
    videos: dict[str, Video]
    annotation_file: Path | None = None
    feature_dir: Path | None = None
    stats: dict[str, int] = field(default_factory=dict)
    description: Path | None = None  # its dataset.json; None: inferred from a standard layout
    feature_prefix: str = ""

    def describe(self) -> dict:
        """The ``dataset.json`` fields of this dataset (paths relative to its root where possible)."""
        def rel(p: Path | None, default: str) -> str:
            if p is None:
                return default
            try:
                r = str(p.relative_to(self.root))
            except ValueError:
                return str(p)
            return r or "."

        fps = float(self.fps)
        return {"annotations": rel(self.annotation_file, "annotations.json"),
                "features": rel(self.feature_dir, "features"),
                "fps": int(fps) if fps.is_integer() else fps, "feat_stride": int(self.feat_stride),
                "num_frames": int(self.num_frames), "train_subset": self.train_subset,
                "test_subset": self.test_subset, "classes": list(self.classes),
                **({"feature_prefix": self.feature_prefix} if self.feature_prefix else {})}

    # ------------------------------------------------------------------ metadata
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def subsets(self) -> list[str]:
        return sorted({v.subset for v in self.videos.values()})

    def settings(self) -> dict:
        """What a checkpoint must agree on with the dataset it is used with."""
        return {
            "fps": float(self.fps),
            "feat_stride": int(self.feat_stride),
            "num_frames": int(self.num_frames),
            "feat_dim": int(self.feat_dim),
            "classes": list(self.classes),
        }

    def check_settings(self, settings: dict, what: str = "checkpoint") -> None:
        """Raise a NocoError when ``settings`` (e.g. a checkpoint's ``"dataset"``) do not match."""
        mine = self.settings()
        bad = []
        for key in ("feat_dim", "feat_stride", "num_frames", "fps", "classes"):
            if key not in settings:
                bad.append(f"'{key}' missing")
            elif settings[key] != mine[key]:
                a, b = settings[key], mine[key]
                if key == "classes":
                    a, b = f"{len(a)} classes {a[:3]}...", f"{len(b)} classes {b[:3]}..."
                bad.append(f"'{key}' is {a} in the {what} but {b} in dataset {self.root}")
        if bad:
            raise NocoError(f"{what} does not match the dataset: " + "; ".join(bad))

    def _video(self, video_id: str) -> Video:
        try:
            return self.videos[video_id]
        except KeyError:
            raise NocoError(f"{self.root}: no video {video_id!r} in the dataset's "
                            f"{self.train_subset}/{self.test_subset} subsets") from None

    def subset(self, name: str) -> list[Video]:
        """The videos of subset ``name``, sorted by video id."""
        out = [v for v in self.videos.values() if v.subset == name]
        if not out and name not in (self.train_subset, self.test_subset):
            raise NocoError(f"{self.root}: no subset {name!r} (loaded subsets: {', '.join(self.subsets)})")
        return sorted(out, key=lambda v: v.id)

    def weak(self, subset: str) -> list[WeakVideo]:
        """Video-level view of ``subset`` (what weakly-supervised training may see)."""
        return [
            WeakVideo(v.id, v.subset, v.duration, v.fps, v.num_snippets, v.feature_file, v.class_ids)
            for v in self.subset(subset)
        ]

    def ground_truth(self, subset: str) -> dict:
        """``{video_id: Instances}`` (seconds; scores and weights 1) for ``subset``."""
        import torch

        from ..labels.instances import Instances

        return {
            v.id: Instances.create(torch.from_numpy(v.segments.astype(np.float32)),
                                   torch.from_numpy(v.labels.astype(np.int64)))
            for v in self.subset(subset)
        }

    # ------------------------------------------------------------------ features
    def features(self, video_id: str) -> np.ndarray:
        """The ``[T, D]`` float32 features of a video, memory-mapped (read-only).

        Non-float32 files are converted (a copy). NaN or inf values raise a DataError naming
        the file.
        """
        v = self._video(video_id)
        path = v.feature_file
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: video {video_id}: cannot read features ({e})") from None
        if arr.ndim != 2 or arr.shape[0] != v.num_snippets or arr.shape[1] != self.feat_dim:
            raise DataError(f"{path}: video {video_id}: features changed since the dataset was loaded "
                            f"(shape {tuple(arr.shape)}, expected ({v.num_snippets}, {self.feat_dim}))")
        if arr.dtype != np.float32:
            arr = np.asarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            bad = ~np.isfinite(arr)
            rows = np.flatnonzero(bad.any(axis=1))
            raise DataError(f"{path}: video {video_id}: features contain {int(bad.sum())} NaN/inf values "
                            f"(first at snippet {int(rows[0])})")
        return arr

    def features_tensor(self, video_id: str):
        """The features as a (writable, owned) float32 torch tensor."""
        import torch

        return torch.from_numpy(np.array(self.features(video_id), dtype=np.float32, copy=True))

    def check_values(self, chunk_rows: int = 4096, progress: bool | None = None) -> None:
        """Scan every feature file chunk by chunk for NaN/inf; one DataError lists all bad files."""
        problems = []
        vids = sorted(self.videos)
        it = vids
        if progress is None:
            progress = _stderr_is_tty()
        if progress:
            from tqdm import tqdm

            it = tqdm(vids, desc="checking features", unit="video")
        for vid in it:
            path = self.videos[vid].feature_file
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                problems.append(f"{path}: video {vid}: cannot read features ({e})")
                continue
            n_bad, first = 0, None
            for i in range(0, arr.shape[0], chunk_rows):
                fin = np.isfinite(np.asarray(arr[i:i + chunk_rows]))
                if not fin.all():
                    bad_rows = np.flatnonzero(~fin.all(axis=1))
                    first = int(bad_rows[0]) + i if first is None else first
                    n_bad += int((~fin).sum())
            if n_bad:
                problems.append(f"{path}: video {vid}: features contain {n_bad} NaN/inf values "
                                f"(first at snippet {first})")
        if problems:
            raise DataError(problems, header=f"{self.root}: non-finite feature values in {len(problems)} files")

    def summary(self) -> str:
        lines = [f"dataset {self.root}: {self.num_classes} classes, feature dim {self.feat_dim}, "
                 f"fps {self.fps:g}, feat_stride {self.feat_stride}, num_frames {self.num_frames}"]
        if self.description is None:
            d = self.describe()
            lines.append(f"  no dataset.json: layout inferred (annotations {d['annotations']}, features "
                         f"{d['features']}, feat_stride measured from the feature lengths)")
        for name in (self.train_subset, self.test_subset):
            vs = self.subset(name)
            n = sum(len(v.labels) for v in vs)
            dur = sum(v.duration for v in vs)
            role = "train" if name == self.train_subset else "test"
            lines.append(f"  {role} subset {name!r}: {len(vs)} videos, {n} instances, {dur / 3600:.2f} h")
        dropped = {k: c for k, c in self.stats.items() if c}
        if dropped:
            lines.append("  " + ", ".join(f"{k.replace('_', ' ')}: {c}" for k, c in dropped.items()))
        return "\n".join(lines)


# ---------------------------------------------------------------------- helpers
from ..io import progress_enabled as _stderr_is_tty  # noqa: E402  (kept for importers)


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def bad_video_id(vid: Any) -> str | None:
    """Why ``vid`` cannot name a feature file, or None when it is fine."""
    if not isinstance(vid, str) or not vid:
        return "must be a non-empty string"
    if "/" in vid or "\\" in vid or (os.altsep and os.altsep in vid) or os.sep in vid:
        return "contains a path separator"
    if ".." in vid:
        return "contains '..'"
    if "\x00" in vid or vid.strip() != vid:
        return "contains a NUL byte or leading/trailing whitespace"
    return None


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data_offset)`` from a .npy header; ValueError when not a whole .npy file."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            # version 3.0 only differs by utf-8 field names; parse through the private reader
            reader = getattr(fmt, "_read_array_header", None)
            if reader is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _fortran, dtype = reader(f, version)
        offset = f.tell()
    size = path.stat().st_size
    if dtype.hasobject:
        return tuple(shape), dtype, offset
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < need:
        raise ValueError(f"truncated: header announces shape {tuple(shape)} {dtype} "
                         f"({need} bytes) but the file has {size} bytes")
    return tuple(shape), dtype, offset


def expected_snippets(duration: float, fps: float, feat_stride: int, num_frames: int) -> int:
    """Number of full snippet windows in a video: ``max(1, floor((dur*fps - nf)/stride) + 1)``."""
    return max(1, int(math.floor((duration * fps - num_frames) / feat_stride)) + 1)


def length_fits(num_snippets: int, expected: int) -> bool:
    """Whether a feature file's length is plausible for the snippets its video should have (feature
    extractors differ by a few snippets at the ends; 20 % or 4 snippets of slack)."""
    return abs(num_snippets - expected) <= max(4, 0.2 * expected)


# ---------------------------------------------------------------------- loading
def _read_config(root: Path, problems: list[str]) -> dict | None:
    cfg_path = root / DATASET_FILE
    try:
        cfg = read_json(cfg_path, "dataset description (dataset.json)")
    except DataError as e:
        problems.extend(e.problems)
        return None
    if not isinstance(cfg, dict):
        problems.append(f"{cfg_path}: must be a JSON object, found {type(cfg).__name__}")
        return None
    out = dict(DEFAULTS)
    out.update(cfg)
    n0 = len(problems)
    for key in cfg:
        if key not in KNOWN_KEYS:
            problems.append(f"{cfg_path}: unknown field {key!r} (known fields: {', '.join(KNOWN_KEYS)})")
    for key in REQUIRED:
        if key not in cfg:
            problems.append(f"{cfg_path}: missing field {key!r}")
    if not isinstance(out.get("feature_prefix"), str):
        problems.append(f"{cfg_path}: field 'feature_prefix' must be a string (e.g. \"v_\"), "
                        f"found {out.get('feature_prefix')!r}")
    for key in ("annotations", "features", "train_subset", "test_subset"):
        if key in out and not (isinstance(out[key], str) and out[key]):
            problems.append(f"{cfg_path}: field {key!r} must be a non-empty string, found {out[key]!r}")
    if "fps" in out and not (_is_num(out["fps"]) and out["fps"] > 0):
        problems.append(f"{cfg_path}: field 'fps' must be a positive number, found {out['fps']!r}")
    for key in ("feat_stride", "num_frames"):
        if key in out and not (_is_int(out[key]) and out[key] > 0):
            problems.append(f"{cfg_path}: field {key!r} must be a positive integer, found {out[key]!r}")
    if "classes" in out:
        cl = out["classes"]
        if not (isinstance(cl, list) and cl and all(isinstance(c, str) and c for c in cl)):
            problems.append(f"{cfg_path}: field 'classes' must be a non-empty list of class names")
        else:
            dup = sorted(c for c, n in Counter(cl).items() if n > 1)
            if dup:
                problems.append(f"{cfg_path}: field 'classes' lists {', '.join(dup)} more than once")
    return out if len(problems) == n0 else None


def _class_order(entries: dict, ann_path: Path, problems: list[str]) -> list[str]:
    """Classes ordered by label_id when every annotation has one, else sorted by name."""
    labels: set[str] = set()
    ids_of: dict[str, dict[int, str]] = {}
    names_of: dict[int, dict[str, str]] = {}
    all_have_id = True
    for vid, anns in entries.items():
        for a in anns:
            lab = a["label"]
            labels.add(lab)
            lid = a.get("label_id")
            if lid is None:
                all_have_id = False
                continue
            ids_of.setdefault(lab, {}).setdefault(lid, vid)
            names_of.setdefault(lid, {}).setdefault(lab, vid)
    if not all_have_id or not labels:
        return sorted(labels)
    n0 = len(problems)
    for lab, ids in sorted(ids_of.items()):
        if len(ids) > 1:
            where = ", ".join(f"{i} (video {v})" for i, v in sorted(ids.items())[:3])
            problems.append(f"{ann_path}: field 'label_id': label {lab!r} has several ids: {where}")
    for lid, names in sorted(names_of.items()):
        if len(names) > 1:
            where = ", ".join(f"{n!r} (video {v})" for n, v in sorted(names.items())[:3])
            problems.append(f"{ann_path}: field 'label_id': id {lid} is used by several labels: {where}")
    if len(problems) > n0:
        return sorted(labels)
    return sorted(labels, key=lambda lab: next(iter(ids_of[lab])))


def load_dataset(root: str | os.PathLike) -> Dataset:
    """Read and validate a dataset directory; every problem is reported in one DataError."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found" if not root.exists()
                        else f"{root}: not a directory (expected a dataset directory holding {DATASET_FILE})")
    problems: list[str] = []
    inferred = not (root / DATASET_FILE).exists()
    ann = None  # the parsed annotation file, when the layout inference has read it already
    if inferred:  # a standard-layout folder: its description comes from the files themselves
        from .layout import infer_description

        desc, ann = infer_description(root, with_annotations=True)
        cfg = {**DEFAULTS, **desc}
    else:
        cfg = _read_config(root, problems)
    if cfg is None:
        raise DataError(problems, header=f"{root}: invalid dataset")
    cfg_path = (f"{root} (layout inferred: no dataset.json)" if inferred else root / DATASET_FILE)
    ann_path = root / cfg["annotations"]
    feat_dir = root / cfg["features"]
    prefix = cfg["feature_prefix"]
    train_subset, test_subset = cfg["train_subset"], cfg["test_subset"]
    used = (train_subset, test_subset)

    if ann is None:
        try:
            ann = read_json(ann_path, "annotation file")
        except DataError as e:
            raise DataError(problems + e.problems, header=f"{root}: invalid dataset") from None
    if not isinstance(ann, dict) or not isinstance(ann.get("database"), dict):
        problems.append(f"{ann_path}: must be an object with a 'database' mapping of video id -> video "
                        f"(ActivityNet layout)")
        raise DataError(problems, header=f"{root}: invalid dataset")
    db = ann["database"]

    # ---- per-video fields
    subsets_seen: Counter = Counter()
    meta: dict[str, tuple[str, float, float]] = {}
    raw: dict[str, list[dict]] = {}
    with_features: list[str] = []  # every video of the used subsets whose id can name a file
    ignored = 0
    for vid, entry in db.items():
        where = f"{ann_path}: video {vid}"
        why = bad_video_id(vid)
        if why:
            problems.append(f"{ann_path}: video id {vid!r} {why} (it names the feature file)")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected an object, found {type(entry).__name__}")
            continue
        subset = entry.get("subset")
        if not isinstance(subset, str):
            problems.append(f"{where}: field 'subset' " + ("missing" if subset is None else
                                                           f"must be a string, found {subset!r}"))
            continue
        subsets_seen[subset] += 1
        if subset not in used:
            ignored += 1
            continue
        with_features.append(vid)
        ok = True
        dur = entry.get("duration")
        if dur is None:
            problems.append(f"{where}: missing field 'duration'")
            ok = False
        elif not _is_num(dur) or dur <= 0:
            problems.append(f"{where}: field 'duration' must be a positive number of seconds, found {dur!r}")
            ok = False
        vfps = entry.get("fps", cfg["fps"])
        if not _is_num(vfps) or vfps <= 0:
            problems.append(f"{where}: field 'fps' must be a positive number, found {vfps!r}")
            ok = False
        anns = entry.get("annotations")
        if anns is None:
            problems.append(f"{where}: missing field 'annotations' (use [] for a video without instances)")
            ok = False
        elif not isinstance(anns, list):
            problems.append(f"{where}: field 'annotations' must be a list, found {type(anns).__name__}")
            ok = False
        else:
            good = []
            for k, a in enumerate(anns):
                w = f"{where}, annotation {k}"
                if not isinstance(a, dict):
                    problems.append(f"{w}: expected an object")
                    continue
                seg, lab, lid = a.get("segment"), a.get("label"), a.get("label_id")
                bad = False
                if seg is None:
                    problems.append(f"{w}: missing field 'segment'")
                    bad = True
                elif not (isinstance(seg, (list, tuple)) and len(seg) == 2 and all(_is_num(x) for x in seg)):
                    problems.append(f"{w}: field 'segment' must be [start, end] in seconds, found {seg!r}"[:300])
                    bad = True
                elif seg[1] < seg[0]:
                    problems.append(f"{w}: field 'segment' ends before it starts: {list(seg)!r}")
                    bad = True
                if lab is None:
                    problems.append(f"{w}: missing field 'label'")
                    bad = True
                elif not isinstance(lab, str) or not lab:
                    problems.append(f"{w}: field 'label' must be a class name, found {lab!r}"[:300])
                    bad = True
                if lid is not None and not (_is_int(lid) and lid >= 0):
                    problems.append(f"{w}: field 'label_id' must be a non-negative integer, found {lid!r}")
                    bad = True
                if not bad:
                    good.append({"segment": (float(seg[0]), float(seg[1])), "label": lab, "label_id": lid})
            raw[vid] = good
        if ok:
            meta[vid] = (subset, float(dur), float(vfps))

    for key, name in (("train_subset", train_subset), ("test_subset", test_subset)):
        if subsets_seen[name] == 0:
            have = ", ".join(f"{s!r} ({n} videos)" for s, n in sorted(subsets_seen.items())) or "none"
            problems.append(f"{cfg_path}: field {key!r}: subset {name!r} has no video in {ann_path} "
                            f"(subsets there: {have})")

    # ---- classes
    if "classes" in cfg:
        classes = list(cfg["classes"])
        cidx = {c: i for i, c in enumerate(classes)}
        for vid, anns in raw.items():
            for k, a in enumerate(anns):
                if a["label"] not in cidx:
                    problems.append(f"{ann_path}: video {vid}, annotation {k}: field 'label': "
                                    f"{a['label']!r} is not in the class list of {cfg_path}")
    else:
        classes = _class_order(raw, ann_path, problems)
        cidx = {c: i for i, c in enumerate(classes)}
    if not classes:
        problems.append(f"{ann_path}: no annotated instance in subsets {train_subset!r}/{test_subset!r} and "
                        f"no 'classes' list in {cfg_path}: the class list is unknown")

    # ---- features (headers only)
    dims: dict[str, int] = {}
    snippets: dict[str, int] = {}
    if not feat_dir.is_dir():
        problems.append(f"{cfg_path}: field 'features': feature folder {feat_dir} not found")
    else:
        for vid in with_features:
            path = feat_dir / f"{prefix}{vid}.npy"
            where = f"{path}: video {vid}"
            if not path.is_file():
                problems.append(f"{where}: feature file not found")
                continue
            try:
                shape, dtype, _ = read_npy_header(path)
            except (ValueError, OSError, SyntaxError, EOFError) as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                problems.append(f"{where}: not a readable .npy file ({msg[:200]})")
                continue
            if dtype.hasobject or not np.issubdtype(dtype, np.floating):
                problems.append(f"{where}: field dtype: features must be floating point, found {dtype}")
                continue
            if len(shape) != 2:
                problems.append(f"{where}: field shape: features must be 2-D [T, D], found shape {shape}")
                continue
            if shape[0] < 1 or shape[1] < 1:
                problems.append(f"{where}: field shape: features are empty (shape {shape})")
                continue
            dims[vid], snippets[vid] = int(shape[1]), int(shape[0])
    feat_dim = 0
    if dims:
        count = Counter(dims.values())
        feat_dim = count.most_common(1)[0][0]
        rows = Counter(snippets.values())
        if len(count) > 1 and len(rows) == 1 and len(dims) >= 3:
            # every file has the same number of rows and a different number of columns: [D, T]
            problems.append(f"{feat_dir}: field shape: every feature file has {next(iter(rows))} rows while the "
                            f"columns vary ({min(dims.values())}..{max(dims.values())}): the features look "
                            f"stored as [D, T]; noco reads [T, D] (one row per snippet), so transpose them")
        elif len(count) > 1:
            for vid, d in dims.items():
                if d != feat_dim:
                    problems.append(f"{feat_dir / (prefix + vid + '.npy')}: video {vid}: field shape: feature "
                                    f"dim {d} differs from {feat_dim} (used by {count[feat_dim]} videos)")

    if problems:
        n = len(problems)
        raise DataError(problems, header=f"{root}: invalid dataset" + (f" ({n} problems)" if n > 1 else ""))

    # ---- instances: drop zero-length, clip to [0, duration], drop emptied
    stats = {"videos_ignored": ignored, "instances_zero_length_dropped": 0, "instances_clipped": 0,
             "instances_dropped_after_clipping": 0, "videos_without_instances": 0}
    videos: dict[str, Video] = {}
    off_length: list[tuple[str, int, int]] = []
    for vid in sorted(meta):
        subset, dur, vfps = meta[vid]
        anns = raw[vid]
        segs = np.array([a["segment"] for a in anns], dtype=np.float64).reshape(-1, 2)
        labs = np.array([cidx[a["label"]] for a in anns], dtype=np.int64)
        zero = segs[:, 1] == segs[:, 0]
        outside = (segs[:, 0] < 0) | (segs[:, 1] > dur)
        clipped = np.clip(segs, 0.0, dur)
        emptied = ~zero & outside & (clipped[:, 1] <= clipped[:, 0])
        keep = ~zero & ~emptied
        stats["instances_zero_length_dropped"] += int(zero.sum())
        stats["instances_clipped"] += int((outside & keep).sum())
        stats["instances_dropped_after_clipping"] += int(emptied.sum())
        segs, labs = clipped[keep], labs[keep]
        if len(labs) == 0:
            stats["videos_without_instances"] += 1
        segs.setflags(write=False)
        labs.setflags(write=False)
        t = snippets[vid]
        exp = expected_snippets(dur, vfps, cfg["feat_stride"], cfg["num_frames"])
        if not length_fits(t, exp):
            off_length.append((vid, t, exp))
        videos[vid] = Video(vid, subset, dur, vfps, t, feat_dir / f"{prefix}{vid}.npy", segs, labs)

    if stats["instances_zero_length_dropped"]:
        log.warning("%s: dropped %d zero-length instances (end == start)", ann_path,
                    stats["instances_zero_length_dropped"])
    n_out = stats["instances_clipped"] + stats["instances_dropped_after_clipping"]
    if n_out:
        log.info("%s: %d instances extend past [0, duration]: %d clipped, %d dropped (empty after clipping)",
                 ann_path, n_out, stats["instances_clipped"], stats["instances_dropped_after_clipping"])
    if off_length:
        vid, t, exp = off_length[0]
        log.warning("%s: %d videos have a feature length far from what duration, fps, feat_stride and "
                    "num_frames imply (e.g. %s: %d snippets, expected about %d); check %s", root,
                    len(off_length), vid, t, exp, cfg_path)
    stats["videos_feature_length_mismatch"] = len(off_length)
    return Dataset(
        root=root, classes=classes, feat_dim=feat_dim, fps=float(cfg["fps"]),
        feat_stride=int(cfg["feat_stride"]), num_frames=int(cfg["num_frames"]),
        train_subset=train_subset, test_subset=test_subset, videos=videos,
        annotation_file=ann_path, feature_dir=feat_dir, stats=stats,
        description=None if inferred else root / DATASET_FILE, feature_prefix=prefix,
    )
