"""Video-level class scores of the WTAL base model, for classification fusion at test time.

On ActivityNet, fully-supervised detectors take each video's classes from an external video
classifier. Here the weakly-supervised counterpart is the WTAL base model itself: its video score
is the one ``predict_wtal`` uses to choose the classes to localise, i.e. the mean of the top-k
of ``CAS * fg attention`` over time, softmax over K+1, background dropped
(``noco.wtal.train.infer_video``, with the checkpoint's test-time sampling). ``video_scores``
reuses exactly that code path, so its scores equal the ones behind the WTAL predictions.

File format (``write_video_scores`` / ``read_video_scores``)::

    {"version": "noco-video-scores", "classes": [name, ...], "scores": {video_id: [K numbers]}}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from ..errors import DataError, NocoError
from ..io import atomic_write_json, read_json
from .model import WtalModel
from .train import infer_video, load_wtal, torch_threads

FORMAT = "noco-video-scores"


def _model_and_config(ckpt_or_model, dataset, device, overrides):
    if isinstance(ckpt_or_model, WtalModel):
        model = ckpt_or_model
        if model.feat_dim != int(dataset.feat_dim) or model.num_classes != int(dataset.num_classes):
            raise NocoError(f"the WTAL model expects {model.feat_dim}-d features and {model.num_classes} classes; "
                            f"dataset {getattr(dataset, 'root', '')} has {dataset.feat_dim}-d features and "
                            f"{dataset.num_classes} classes")
        cfg = model.cfg
        if overrides:
            from .config import make_config

            cfg = make_config(None, {**cfg.to_dict(), **overrides})
        return model.to(device), cfg
    model, cfg, _ = load_wtal(ckpt_or_model, dataset, device, overrides)
    return model, cfg


def video_scores(ckpt_or_model, dataset, subset: str | None = None, device: str | torch.device = "cpu", *,
                 overrides: dict | None = None, progress: bool = False) -> dict[str, torch.Tensor]:
    """``{video_id: float32 tensor [K]}``: the WTAL model's video-level class probabilities.

    ``ckpt_or_model``: a WTAL checkpoint (path or loaded dict, checked against ``dataset``) or a
    ``WtalModel`` (its own config gives the test-time sampling). ``subset`` defaults to the test
    subset. Only the weak view of the dataset is read (ids, features). Values lie in [0, 1] and sum
    to at most 1 per video (the background probability is dropped). The model is left in eval mode.
    """
    subset = subset or dataset.test_subset
    model, cfg = _model_and_config(ckpt_or_model, dataset, device, overrides)
    videos = list(dataset.weak(subset))
    it: Iterable = videos
    if progress:
        from tqdm import tqdm

        it = tqdm(videos, desc="wtal video scores", unit="video", leave=False, dynamic_ncols=True)
    out: dict[str, torch.Tensor] = {}
    with torch_threads(1):  # small per-video forwards: one thread is fastest on a shared CPU
        for v in it:  # per video (one forward each); classes are handled as one tensor
            feats = torch.from_numpy(np.array(dataset.features(v.id), dtype=np.float32, copy=True))
            _, _, vs = infer_video(model, feats, cfg, device)
            out[v.id] = vs.to(torch.float32).contiguous()
    return out


def write_video_scores(path: str | Path, scores: Mapping[str, torch.Tensor], classes: list[str]) -> Path:
    """Write ``{video_id: [K]}`` atomically (see the module docstring for the format)."""
    k = len(classes)
    rows = {}
    for vid, s in scores.items():
        s = torch.as_tensor(s).detach().cpu().reshape(-1)
        if s.numel() != k:
            raise NocoError(f"{path}: video {vid}: {s.numel()} class scores for {k} classes")
        rows[vid] = [round(float(x), 7) for x in s.tolist()]
    return atomic_write_json(path, {"version": FORMAT, "classes": list(classes), "scores": rows})


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def read_video_scores(path: str | Path, classes: list[str], videos: Iterable[str] | None = None,
                      ) -> dict[str, torch.Tensor]:
    """Read a video-score file; its class list must equal ``classes`` (same names, same order).

    Every problem (wrong class list, a row of the wrong length, a non-finite or negative value)
    is reported at once in one DataError naming file, video and field. With ``videos``, rows of
    other videos are dropped.
    """
    path = Path(path)
    obj = read_json(path, "video-score file")
    if not isinstance(obj, dict) or not isinstance(obj.get("scores"), dict):
        raise DataError(f"{path}: a video-score file must be an object with a 'scores' mapping "
                        f"of video id -> list of class scores")
    file_classes = obj.get("classes")
    if file_classes != list(classes):
        if not isinstance(file_classes, list):
            raise DataError(f"{path}: field 'classes' must be the list of class names")
        extra = [c for c in file_classes if c not in classes][:3]
        missing = [c for c in classes if c not in file_classes][:3]
        detail = (f"{len(file_classes)} classes in the file, {len(classes)} in the dataset"
                  + (f"; not in the dataset: {extra}" if extra else "")
                  + (f"; not in the file: {missing}" if missing else "")
                  + ("; same names in another order" if not extra and not missing else ""))
        raise DataError(f"{path}: field 'classes' does not match the dataset's class list ({detail})")
    keep = None if videos is None else set(videos)
    k = len(classes)
    problems, out = [], {}
    for vid, row in obj["scores"].items():
        if keep is not None and vid not in keep:
            continue
        where = f"{path}: video {vid}: field 'scores'"
        if not isinstance(row, list) or len(row) != k:
            n = len(row) if isinstance(row, list) else type(row).__name__
            problems.append(f"{where} must be a list of {k} numbers, found {n}")
            continue
        bad = [i for i, x in enumerate(row) if not _finite(x) or x < 0]
        if bad:
            problems.append(f"{where}: entry {bad[0]} ({classes[bad[0]]}) must be a finite number >= 0, "
                            f"found {row[bad[0]]!r}" + (f" ({len(bad)} bad entries)" if len(bad) > 1 else ""))
            continue
        out[vid] = torch.tensor(row, dtype=torch.float32)
    if problems:
        raise DataError(problems, header=f"{path}: malformed video-score file")
    return out
