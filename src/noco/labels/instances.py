"""Per-video instance sets and the ActivityNet result file format.

An instance is ``(class, score, start, end)`` in seconds, plus a ``weight`` (HPM; 1 when absent).
File layout (ActivityNet detection results, plus the optional ``weight`` field)::

    {"results": {video_id: [{"segment": [s, e], "label": name, "score": x, "weight": w}, ...]}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch

from ..errors import DataError
from ..io import atomic_write_json, read_json


@dataclass
class Instances:
    """Instances of one video as tensors: segments [N, 2] (seconds), labels/scores/weights [N]."""

    segments: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self):
        self.segments = torch.as_tensor(self.segments, dtype=torch.float32).reshape(-1, 2)
        n = self.segments.shape[0]
        self.labels = torch.as_tensor(self.labels, dtype=torch.long).reshape(n)
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(n)
        self.weights = torch.as_tensor(self.weights, dtype=torch.float32).reshape(n)

    @classmethod
    def empty(cls) -> "Instances":
        return cls(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0))

    @classmethod
    def create(cls, segments, labels, scores=None, weights=None) -> "Instances":
        segments = torch.as_tensor(segments, dtype=torch.float32).reshape(-1, 2)
        n = segments.shape[0]
        scores = torch.ones(n) if scores is None else scores
        weights = torch.ones(n) if weights is None else weights
        return cls(segments, labels, scores, weights)

    def __len__(self) -> int:
        return int(self.segments.shape[0])

    def select(self, idx) -> "Instances":
        return Instances(self.segments[idx], self.labels[idx], self.scores[idx], self.weights[idx])

    def to(self, device) -> "Instances":
        return Instances(*(t.to(device) for t in (self.segments, self.labels, self.scores, self.weights)))

    @staticmethod
    def cat(items: Iterable["Instances"]) -> "Instances":
        items = list(items)
        if not items:
            return Instances.empty()
        return Instances(
            torch.cat([i.segments for i in items]),
            torch.cat([i.labels for i in items]),
            torch.cat([i.scores for i in items]),
            torch.cat([i.weights for i in items]),
        )

    def sorted_by_score(self) -> "Instances":
        order = torch.argsort(self.scores, descending=True, stable=True)
        return self.select(order)

    def state(self) -> dict[str, torch.Tensor]:
        """Plain tensors, for checkpoints saved/loaded with ``weights_only=True``."""
        return {"segments": self.segments, "labels": self.labels, "scores": self.scores, "weights": self.weights}

    @classmethod
    def from_state(cls, d: Mapping[str, torch.Tensor]) -> "Instances":
        return cls(d["segments"], d["labels"], d["scores"], d["weights"])


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def read_instances(
    path: str | Path,
    classes: list[str],
    *,
    require_score: bool = True,
    videos: Iterable[str] | None = None,
    what: str = "predictions file",
    warn=None,
    stats: dict | None = None,
) -> dict[str, Instances]:
    """Read an ActivityNet result file into ``{video_id: Instances}``.

    Malformed entries raise one DataError listing every problem. Labels outside ``classes`` and
    videos outside ``videos`` (when given) are dropped, with one warning that counts them
    (``warn`` is a callable taking a message; default: the ``noco`` logger). A ``stats`` dict,
    when given, receives the counts ``videos_in_file``, ``unknown_videos``, ``entries`` (in the
    kept videos) and ``unknown_labels``, so that callers can tell a file for another dataset.
    """
    import logging

    warn = warn or logging.getLogger("noco").warning
    path = Path(path)
    obj = read_json(path, what)
    if not isinstance(obj, dict) or not isinstance(obj.get("results"), dict):
        raise DataError(f"{path}: {what} must be an object with a 'results' mapping of video id -> list")
    cidx = {c: i for i, c in enumerate(classes)}
    keep_videos = None if videos is None else set(videos)
    problems: list[str] = []
    unknown_labels = 0
    unknown_videos = 0
    entries = 0
    out: dict[str, Instances] = {}
    for vid, items in obj["results"].items():
        if keep_videos is not None and vid not in keep_videos:
            unknown_videos += 1
            continue
        if not isinstance(items, list):
            problems.append(f"{path}: video {vid}: expected a list of detections, found {type(items).__name__}")
            continue
        entries += len(items)
        segs, labs, scs, wts = [], [], [], []
        for k, d in enumerate(items):
            where = f"{path}: video {vid}, entry {k}"
            if not isinstance(d, dict):
                problems.append(f"{where}: expected an object")
                continue
            seg = d.get("segment")
            if not (isinstance(seg, (list, tuple)) and len(seg) == 2 and all(_num(v) for v in seg)):
                problems.append(f"{where}: field 'segment' must be two finite numbers, found {seg!r}"[:300])
                continue
            if "score" in d:
                score = d["score"]
                if not _num(score):
                    problems.append(f"{where}: field 'score' must be a finite number, found {score!r}"[:300])
                    continue
            elif require_score:
                problems.append(f"{where}: missing field 'score'")
                continue
            else:
                score = 1.0
            weight = d.get("weight", 1.0)
            if not _num(weight) or weight < 0:
                problems.append(f"{where}: field 'weight' must be a non-negative number, found {weight!r}"[:300])
                continue
            label = d.get("label")
            if not isinstance(label, str):
                problems.append(f"{where}: field 'label' must be a class name, found {label!r}"[:300])
                continue
            if label not in cidx:
                unknown_labels += 1
                continue
            if seg[1] < seg[0]:
                problems.append(f"{where}: field 'segment' ends before it starts: {seg!r}")
                continue
            segs.append(seg)
            labs.append(cidx[label])
            scs.append(float(score))
            wts.append(float(weight))
        out[vid] = Instances.create(
            torch.tensor(segs, dtype=torch.float32).reshape(-1, 2),
            torch.tensor(labs, dtype=torch.long),
            torch.tensor(scs, dtype=torch.float32),
            torch.tensor(wts, dtype=torch.float32),
        )
    if problems:
        raise DataError(problems, header=f"{path}: malformed {what}")
    if stats is not None:
        stats.update(videos_in_file=len(obj["results"]), unknown_videos=unknown_videos, entries=entries,
                     unknown_labels=unknown_labels)
    if unknown_labels:
        warn(f"{path}: ignored {unknown_labels} detections whose label is not in the class list")
    if unknown_videos:
        warn(f"{path}: ignored detections of {unknown_videos} videos outside the evaluated subset")
    return out


def instances_to_results(dets: Mapping[str, Instances], classes: list[str], with_weight: bool = True) -> dict:
    results = {}
    for vid, ins in dets.items():
        segs = ins.segments.detach().cpu().tolist()
        labs = ins.labels.detach().cpu().tolist()
        scs = ins.scores.detach().cpu().tolist()
        wts = ins.weights.detach().cpu().tolist()
        rows = []
        for s, l, c, w in zip(segs, labs, scs, wts):
            row = {"segment": [round(s[0], 4), round(s[1], 4)], "label": classes[l], "score": round(c, 6)}
            if with_weight:
                row["weight"] = round(w, 6)
            rows.append(row)
        results[vid] = rows
    return {"version": "noco", "results": results}


def write_instances(path: str | Path, dets: Mapping[str, Instances], classes: list[str], with_weight: bool = True) -> Path:
    """Write ``{video_id: Instances}`` atomically in ActivityNet result format."""
    return atomic_write_json(path, instances_to_results(dets, classes, with_weight))
