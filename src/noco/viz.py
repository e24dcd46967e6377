"""Pictures and reports: per-video timelines (the paper's qualitative figure) and ``W/report.md``.

* :func:`timeline_png` draws one horizontal timeline per source (ground truth, label files,
  predictions, the WTAL proposal pool, ...) for one video, one colour per class, x in seconds.
* :func:`run_tracks` picks a run directory's sources for a video (``W/seed<S>/wtal/pool.json``,
  ``labels/a.json``, ``labels/b.json``, ``rows/<row>/labels.json``, ``rows/<row>/predictions.json``).
* :func:`write_run_report` writes ``W/report.md`` with its figures in ``W/figures/``: the results
  table, the label-noise rates of each stage, the training-loss curves and three training videos.

matplotlib is optional (``pip install matplotlib`` or the ``viz`` extra); it is imported only when a
picture is drawn, with the Agg canvas (no display, no pyplot global state). Without it, drawing
raises a NocoError and the report is written without pictures.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .errors import NocoError
from .io import atomic_write_bytes, atomic_write_text, load_checkpoint, read_json
from .labels.instances import Instances, read_instances

log = logging.getLogger("noco")

KINDS = ("gt", "labels", "pool", "pred")
SHORT_SECONDS = 2.0  # "short" instances, as noco.eval.labels.LENGTH_BINS
DEFAULT_MIN_SCORE = 0.3
DEFAULT_TOP = 50
DEFAULT_POOL_TOP = 300
CORRECTED_ROWS = ("g", "f", "e", "d", "c")  # rows whose labels.json differs from their initial labels
MPL_HINT = "pip install matplotlib (or pip install 'noco[viz]')"


# --------------------------------------------------------------------------- matplotlib
def _mpl():
    """``(Figure, FigureCanvasAgg, Patch)``, or a NocoError that says how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise NocoError(f"drawing pictures needs matplotlib, which is not installed: {MPL_HINT}") from None
    return Figure, FigureCanvasAgg, Patch


def have_matplotlib() -> bool:
    try:
        _mpl()
    except NocoError:
        return False
    return True


def _new_figure(width: float, height: float, layout: str | None = None):
    Figure, Canvas, _ = _mpl()
    fig = Figure(figsize=(width, height), layout=layout)
    Canvas(fig)
    return fig


def _png_bytes(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def class_colors(num_classes: int) -> torch.Tensor:
    """``[C, 4]`` RGBA, one colour per class id (the same colours in every figure of a dataset)."""
    import matplotlib

    n = max(int(num_classes), 1)
    if n <= 10:
        cols = matplotlib.colormaps["tab10"](range(n))
    elif n <= 20:  # tab10, then ten darker tones of tab20b (all readable on white)
        extra = matplotlib.colormaps["tab20b"]([0, 4, 8, 12, 16, 2, 6, 10, 14, 18])
        cols = [*matplotlib.colormaps["tab10"](range(10)), *extra][:n]
    else:
        cols = matplotlib.colormaps["hsv"]([i / n for i in range(n)])
    import numpy as np

    return torch.from_numpy(np.asarray(cols, dtype=np.float64)).reshape(n, 4)


# --------------------------------------------------------------------------- instance helpers
@dataclass
class Track:
    """One timeline row: ``kind`` is ``gt`` / ``labels`` (one lane, outlined, opacity from the
    weight), ``pool`` (faint) or ``pred`` (overlaps spread over lanes, opacity from the score)."""

    name: str
    instances: Instances
    kind: str = "labels"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"track kind must be one of {KINDS}, got {self.kind!r}")


def top_instances(ins: Instances, top: int | None = None, min_score: float | None = None) -> Instances:
    """The (at most ``top``) highest-scoring instances with score ``>= min_score``, by score."""
    out = ins.sorted_by_score()
    if min_score is not None:
        out = out.select(out.scores >= min_score)
    if top is not None:
        out = out.select(slice(0, max(int(top), 0)))
    return out


def overlap_lanes(segments: torch.Tensor, max_lanes: int = 4) -> torch.Tensor:
    """A lane per segment for drawing: the number of segments that started earlier (ties: input
    order) and still cover its start, modulo ``max_lanes``. Disjoint segments all get lane 0; a
    segment that starts inside another gets a different lane from it unless ``max_lanes`` wraps."""
    segs = torch.as_tensor(segments, dtype=torch.float64).reshape(-1, 2)
    n = segs.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    idx = torch.arange(n)
    s, e = segs[:, 0], segs[:, 1]
    earlier = (s[None, :] < s[:, None]) | ((s[None, :] == s[:, None]) & (idx[None, :] < idx[:, None]))
    covers = earlier & (e[None, :] > s[:, None])
    return covers.sum(1) % max(int(max_lanes), 1)


def merged_labels(labels: Instances, gt: Instances) -> torch.Tensor:
    """``bool [L]``: labels covering at least half of each of two or more same-class GT instances
    (the merge rule of ``noco.eval.labels.label_quality``)."""
    if len(labels) == 0 or len(gt) == 0:
        return torch.zeros(len(labels), dtype=torch.bool)
    ls, gs = labels.segments.double(), gt.segments.double()
    inter = (torch.minimum(ls[:, None, 1], gs[None, :, 1]) - torch.maximum(ls[:, None, 0], gs[None, :, 0])).clamp_min(0)
    glen = gs[:, 1] - gs[:, 0]
    ok = (labels.labels[:, None] == gt.labels[None, :]) & (glen[None, :] > 0) & (inter >= 0.5 * glen[None, :])
    return ok.sum(1) >= 2


def pick_videos(gt: Mapping[str, Instances], labels: Mapping[str, Instances] | None = None,
                short: float = SHORT_SECONDS) -> list[tuple[str, str, str]]:
    """Up to three distinct training videos to show: ``(key, video_id, why)`` for ``most`` (most GT
    instances), ``short`` (most GT instances shorter than ``short`` s) and ``merged`` (most labels in
    ``labels`` that merge two or more GT instances). Ties go to the smaller video id; a kind with no
    candidate (no short instance, no merged label) is left out."""
    vids = sorted(gt)
    if not vids:
        return []
    n_inst = torch.tensor([len(gt[v]) for v in vids], dtype=torch.long)
    n_short = torch.tensor([int(((gt[v].segments[:, 1] - gt[v].segments[:, 0]) < short).sum()) for v in vids],
                           dtype=torch.long)
    n_merged = torch.tensor([int(merged_labels(labels[v], gt[v]).sum()) if labels and v in labels else 0
                             for v in vids], dtype=torch.long)
    out: list[tuple[str, str, str]] = []
    used: set[str] = set()
    for key, counts, why in (("most", n_inst, "most ground-truth instances ({n})"),
                             ("short", n_short, "most instances shorter than %g s ({n})" % short),
                             ("merged", n_merged, "most baseline labels merging two or more instances ({n})")):
        free = torch.tensor([v not in used for v in vids])
        cand = torch.where(free & (counts > 0), counts, torch.full_like(counts, -1))
        best = int(torch.argmax(cand))  # first maximum = smallest id among ties
        if int(cand[best]) <= 0:
            continue
        used.add(vids[best])
        out.append((key, vids[best], why.format(n=int(counts[best]))))
    return out


# --------------------------------------------------------------------------- timelines
def timeline_png(tracks: list[Track], classes: list[str], duration: float, title: str | None = None,
                 *, dpi: int = 110, width: float = 12.0, max_lanes: int = 4) -> bytes:
    """One horizontal timeline per track (top to bottom in the given order), as PNG bytes."""
    from matplotlib.collections import PolyCollection

    _, _, Patch = _mpl()
    if not math.isfinite(duration) or duration <= 0:
        raise NocoError(f"cannot draw a timeline of a video with duration {duration!r}")
    colors = class_colors(len(classes))
    n = len(tracks)
    fig = _new_figure(width, 0.9 + 0.5 * max(n, 1))
    ax = fig.add_subplot(1, 1, 1)
    min_w = duration * 0.0015  # keep very short instances visible (about 2 px)
    seen = torch.zeros(len(colors), dtype=torch.bool)
    band = 0.76
    for row, tr in enumerate(tracks):
        ins = tr.instances
        y_top = n - 1 - row + 0.5 * band  # first track at the top
        if len(ins) == 0:
            ax.text(0.5 * duration, y_top - 0.5 * band, "(none)", ha="center", va="center",
                    fontsize=7, color="0.55")
            continue
        lab = ins.labels.clamp(0, len(colors) - 1)
        seen[lab] = True
        segs = ins.segments.double().clamp(0.0, duration)
        x0 = segs[:, 0]
        x1 = torch.maximum(segs[:, 1], x0 + min_w)
        if tr.kind in ("pool", "pred"):
            lanes = overlap_lanes(segs, max_lanes)
            n_l = int(lanes.max()) + 1
        else:
            lanes = torch.zeros(len(ins), dtype=torch.long)
            n_l = 1
        h = band / n_l
        y1 = y_top - lanes.double() * h
        y0 = y1 - 0.9 * h
        verts = torch.stack([torch.stack([x0, y0], 1), torch.stack([x0, y1], 1),
                             torch.stack([x1, y1], 1), torch.stack([x1, y0], 1)], 1)
        face = colors[lab].clone()
        conf = ins.scores.double().clamp(0, 1)
        if tr.kind == "gt":
            face[:, 3] = 0.9
        elif tr.kind == "labels":
            face[:, 3] = 0.3 + 0.6 * ins.weights.double().clamp(0, 1)
        elif tr.kind == "pool":
            face[:, 3] = 0.04 + 0.26 * conf
        else:
            face[:, 3] = 0.25 + 0.65 * conf
        if tr.kind in ("gt", "labels"):  # outlined, so adjacent instances stay apart
            edge, lw = colors[lab].clone() * torch.tensor([0.6, 0.6, 0.6, 1.0], dtype=torch.float64), 0.7
        else:
            edge, lw = torch.tensor([[1.0, 1.0, 1.0, 0.8]], dtype=torch.float64).expand(len(ins), 4), 0.3 if tr.kind == "pred" else 0.0
        ax.add_collection(PolyCollection(verts.numpy(), facecolors=face.numpy(), edgecolors=edge.numpy(),
                                         linewidths=lw))
    ax.set_xlim(0, duration)
    ax.set_ylim(-0.5, n - 0.5)
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"{t.name} ({len(t.instances)})" for t in reversed(tracks)], fontsize=8)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    for y in range(n - 1):
        ax.axhline(y + 0.5, color="0.85", linewidth=0.6)
    if title:
        ax.set_title(title, fontsize=10)
    present = torch.nonzero(seen).reshape(-1).tolist()
    if present:
        handles = [Patch(facecolor=tuple(colors[c].tolist()), label=classes[c] if c < len(classes) else str(c))
                   for c in present]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False,
                  ncol=1 + (len(handles) - 1) // max(2 * n, 4))
    return _png_bytes(fig, dpi)


def write_timeline(path: str | Path, tracks: list[Track], classes: list[str], duration: float,
                   title: str | None = None, **kw) -> Path:
    """Render :func:`timeline_png` and write it atomically."""
    return atomic_write_bytes(path, timeline_png(tracks, classes, duration, title, **kw))


def ground_truth_track(dataset, video_id: str) -> Track:
    v = dataset.videos[video_id]
    return Track("ground truth", Instances.create(torch.from_numpy(v.segments.astype("float32")),
                                                  torch.from_numpy(v.labels.astype("int64"))), "gt")


def check_video(dataset, video_id: str) -> None:
    """A clear NocoError for an unknown video id, with close matches and a few valid ids."""
    if video_id in dataset.videos:
        return
    import difflib

    ids = sorted(dataset.videos)
    close = difflib.get_close_matches(video_id, ids, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    few = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    raise NocoError(f"--video {video_id!r}: no such video in {dataset.root} "
                    f"({len(ids)} videos in subsets {dataset.train_subset}/{dataset.test_subset}){hint}; "
                    f"valid ids include: {few}")


def final_row(seed_dir: str | Path) -> str | None:
    """The most corrected row present in ``W/seed<S>/rows`` (g, f, ..., c, then b, a, oracle)."""
    rows = Path(seed_dir) / "rows"
    for r in (*CORRECTED_ROWS, "b", "a", "oracle"):
        if (rows / r / "labels.json").is_file() or (rows / r / "predictions.json").is_file():
            return r
    return None


class SourceCache:
    """Reads each source file once for a fixed set of videos (the report draws several videos)."""

    def __init__(self, video_ids: Iterable[str]):
        self.videos = list(video_ids)
        self.files: dict[Path, dict[str, Instances]] = {}

    def get(self, path: Path, classes: list[str], video_id: str, what: str) -> Instances | None:
        if path not in self.files:
            vids = self.videos if video_id in self.videos else [*self.videos, video_id]
            self.files[path] = read_instances(path, classes, require_score=False, videos=vids, what=what,
                                              warn=log.debug)
        return self.files[path].get(video_id)


def run_tracks(run_dir: str | Path, video_id: str, classes: list[str], *, seed: int = 0, row: str | None = None,
               min_score: float = DEFAULT_MIN_SCORE, top: int = DEFAULT_TOP,
               pool_top: int = DEFAULT_POOL_TOP, cache: SourceCache | None = None) -> list[Track]:
    """The sources a run directory holds for ``video_id`` (ground truth excluded), in pipeline
    order: WTAL proposals / detections, baseline labels (a), CALA labels (b), the corrected labels
    of ``row`` (default: :func:`final_row`) and its predictions. Missing files are skipped.
    ``cache``: share file reads between calls for several videos."""
    cache = cache if cache is not None else SourceCache([video_id])
    sdir = Path(run_dir) / f"seed{seed}"
    if not sdir.is_dir():
        have = sorted(p.name for p in Path(run_dir).glob("seed*"))
        raise NocoError(f"{run_dir}: no run of seed {seed} ({sdir} not found; "
                        f"found: {', '.join(have) if have else 'no seed<S> folder, is this a run directory?'})")
    row = row or final_row(sdir)
    pred_rule = f"score >= {min_score:g}, top {top}"
    sources: list[tuple[Path, str, str, Any]] = [
        (sdir / "wtal" / "pool.json", f"WTAL proposals (top {pool_top})", "pool", dict(top=pool_top)),
        (sdir / "wtal" / "test.json", f"WTAL detections ({pred_rule})", "pred", dict(top=top, min_score=min_score)),
        (sdir / "labels" / "a.json", "a: baseline labels", "labels", None),
        (sdir / "labels" / "b.json", "b: CALA labels", "labels", None),
    ]
    if row is not None:
        rdir = sdir / "rows" / row
        if row not in ("a", "b"):
            name = "oracle labels" if row == "oracle" else f"{row}: corrected labels"
            sources.append((rdir / "labels.json", name, "labels", None))
        who = "student" if row in CORRECTED_ROWS else "detector"
        sources.append((rdir / "predictions.json", f"{row}: {who} predictions ({pred_rule})", "pred",
                        dict(top=top, min_score=min_score)))
    tracks = []
    for path, name, kind, filt in sources:
        ins = cache.get(path, classes, video_id, f"{name} file") if path.is_file() else None
        if ins is None:
            continue
        if filt is not None:
            ins = top_instances(ins, **filt)
        tracks.append(Track(name, ins, kind))
    return tracks


# --------------------------------------------------------------------------- report
def _run_config(run_dir: Path) -> dict:
    p = run_dir / "config.json"
    if p.is_file():
        try:
            cfg = read_json(p, "run config")
            return cfg if isinstance(cfg, dict) else {}
        except NocoError:
            return {}
    return {}


def _seeds(run_dir: Path) -> list[int]:
    out = []
    for p in run_dir.glob("seed*"):
        if p.is_dir() and p.name[4:].isdigit():
            out.append(int(p.name[4:]))
    return sorted(out)


def _boundary_error(q: Mapping) -> float | None:
    if q.get("start_error") is None or q.get("end_error") is None:
        return None
    return 0.5 * (q["start_error"] + q["end_error"])


NOISE_METRICS = (  # key, title, scale, better
    ("mIoU", "label mIoU (%)", 100.0, "higher"),
    ("boundary_error", "boundary error (s)", 1.0, "lower"),
    ("short_recall", "recall of GT < 2 s (%)", 100.0, "higher"),
    ("merge_rate", "merge rate (%)", 100.0, "lower"),
)


def noise_rates(q: Mapping) -> dict[str, float | None]:
    """The four noise rates of a ``label_quality`` dict (None where undefined)."""
    return {"mIoU": q.get("mIoU"), "boundary_error": _boundary_error(q),
            "short_recall": (q.get("recall_by_length") or {}).get("short"), "merge_rate": q.get("merge_rate")}


def stage_noise(found: Mapping[str, Mapping[int, dict]]) -> dict[str, dict[str, list[float]]]:
    """``{row: {metric: [value per seed]}}`` for the detector rows whose metrics hold label quality.
    Without row a, the WTAL metrics stand in as ``wtal`` (they measure the same baseline labels)."""
    from .pipeline import ROWS

    out: dict[str, dict[str, list[float]]] = {}
    for r in ("wtal", *ROWS):
        if r == "oracle" or r not in found or (r == "wtal" and "a" in found):
            continue
        vals: dict[str, list[float]] = {k: [] for k, *_ in NOISE_METRICS}
        for m in found[r].values():
            for k, v in noise_rates(m.get("labels") or {}).items():
                if v is not None:
                    vals[k].append(float(v))
        if any(vals.values()):
            out[r] = vals
    return out


def noise_chart_png(noise: Mapping[str, Mapping[str, list[float]]], dpi: int = 110) -> bytes:
    """Four bar charts (one per noise rate), one bar per stage, mean ± std over seeds."""
    import statistics

    fig = _new_figure(13.0, 3.2, layout="constrained")
    rows = list(noise)
    colors = class_colors(max(len(rows), 1))
    for i, (key, title, scale, better) in enumerate(NOISE_METRICS):
        ax = fig.add_subplot(1, len(NOISE_METRICS), i + 1)
        means, stds = [], []
        for r in rows:
            v = [scale * x for x in noise[r].get(key, [])]
            means.append(statistics.fmean(v) if v else float("nan"))
            stds.append(statistics.stdev(v) if len(v) > 1 else 0.0)
        ax.bar(range(len(rows)), means, yerr=stds, color=[tuple(colors[j].tolist()) for j in range(len(rows))],
               capsize=3)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(rows)
        ax.set_title(f"{title}\n({better} is better)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        for j, m in enumerate(means):
            ax.annotate("n/a" if math.isnan(m) else (f"{m:.2f}" if scale == 1.0 else f"{m:.1f}"), (j, 0.5 if math.isnan(m) else m),
                        ha="center", va="bottom", fontsize=7, color="0.3", xytext=(0, 2), textcoords="offset points")
        ax.set_xlim(-0.6, len(rows) - 0.4)
        if all(math.isnan(m) for m in means):
            ax.set_ylim(0, 1)
            ax.set_yticks([])
    fig.suptitle("training labels of each row (a: WTAL > 0.5, b: + CALA, c..g: after online correction)",
                 fontsize=9)
    return _png_bytes(fig, dpi)


def loss_histories(run_dir: Path, seed: int) -> dict[str, list[dict]]:
    """Per-epoch training histories stored in the checkpoints of one seed: ``wtal`` (``train_loss``,
    ``val_loss``) and every detector row (``loss``)."""
    from .pipeline import ROWS

    sdir = Path(run_dir) / f"seed{seed}"
    cands = {"wtal": [sdir / "wtal" / "last.pt", sdir / "wtal" / "wtal.pt"]}
    for r in ROWS:
        cands[r] = [sdir / "rows" / r / "train" / "checkpoint.pt", sdir / "rows" / r / "model.pt"]
    out = {}
    for name, paths in cands.items():
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            continue
        hist = load_checkpoint(path).get("history")
        if isinstance(hist, list) and hist:
            out[name] = [h for h in hist if isinstance(h, dict) and "epoch" in h]
    return out


def loss_chart_png(hist: Mapping[str, list[dict]], dpi: int = 110) -> bytes:
    fig = _new_figure(12.0, 3.4, layout="constrained")
    ax_w = fig.add_subplot(1, 2, 1)
    ax_d = fig.add_subplot(1, 2, 2)
    w = hist.get("wtal") or []
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        pts = [(h["epoch"], h[key]) for h in w if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])]
        if pts:
            ax_w.plot(*zip(*pts), style, marker="o", markersize=3, label=key.replace("_", " "))
    ax_w.set_title("WTAL base model", fontsize=9)
    ax_d.set_title("TriDet per row (students of c..g start from b's teacher)", fontsize=9)
    positive = True
    for name, h in hist.items():
        if name == "wtal":
            continue
        pts = [(x["epoch"], x["loss"]) for x in h if isinstance(x.get("loss"), (int, float)) and math.isfinite(x["loss"])]
        if pts:
            positive &= all(p[1] > 0 for p in pts)
            ax_d.plot(*zip(*pts), marker="o", markersize=3, label=name)
    if positive and ax_d.lines:
        ax_d.set_yscale("log")
    for ax in (ax_w, ax_d):
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean training loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "(no history)", ha="center", va="center", transform=ax.transAxes, color="0.5")
    return _png_bytes(fig, dpi)


def _load_run_dataset(run_dir: Path, dataset=None):
    if dataset is not None:
        return dataset
    from .data.dataset import load_dataset

    data = _run_config(run_dir).get("data")
    if not data:
        raise NocoError(f"{run_dir}/config.json names no dataset; pass --data")
    p = Path(data)
    if not (p / "dataset.json").is_file():  # a relative path from elsewhere, or a synth preset in W/data/
        for alt in (run_dir / p, run_dir / "data" / p.name):
            if not p.is_absolute() and (alt / "dataset.json").is_file():
                p = alt
                break
    return load_dataset(p)


def write_run_report(run_dir: str | Path, *, dataset=None, seeds: Iterable[int] | None = None,
                     rows: Iterable[str] | None = None, seed: int | None = None, row: str | None = None,
                     strict: bool = False) -> Path:
    """Write ``W/report.md`` and its figures (``W/figures/*.png``); returns the report path.

    ``seeds`` / ``rows``: restrict the results table and noise chart (default: all present).
    ``seed`` / ``row``: the run whose loss curves and timelines are drawn (default: the smallest
    seed, :func:`final_row`). Missing rows are left out; a section that fails is replaced by a note
    and a warning (``strict=True`` raises instead). Without matplotlib the markdown is written
    without pictures, with one warning.
    """
    from .pipeline import ROW_TITLES, collect_metrics, results_table

    W = Path(run_dir)
    fig_dir = W / "figures"
    cfg = _run_config(W)
    found = collect_metrics(W)
    if seeds is not None:
        keep_s = set(seeds)
        found = {r: {s: m for s, m in v.items() if s in keep_s} for r, v in found.items()}
    if rows is not None:
        keep_r = {"wtal", *rows}
        found = {r: v for r, v in found.items() if r in keep_r}
    found = {r: v for r, v in found.items() if v}
    all_seeds = sorted({s for v in found.values() for s in v}) or _seeds(W)
    if seed is None:
        seed = all_seeds[0] if all_seeds else 0
    sdir = W / f"seed{seed}"
    row = row or final_row(sdir)
    pictures = have_matplotlib()
    if not pictures:
        log.warning(f"noco: matplotlib is not installed, so {W / 'report.md'} has no pictures ({MPL_HINT})")
    notes: list[str] = []

    def section(name: str, fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - a report never fails the run
            if strict:
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log.warning(f"noco: report section '{name}' skipped: {msg}")
            notes.append(f"*{name}: skipped ({msg})*")
            return None

    def figure(fname: str, render) -> str | None:
        if not pictures:
            return None
        atomic_write_bytes(fig_dir / fname, render())
        return f"figures/{fname}"

    md = [f"# noco run report: `{W.name}`", ""]
    facts = []
    if cfg.get("data"):
        facts.append(f"data `{cfg['data']}`")
    if cfg.get("preset"):
        facts.append(f"preset `{cfg['preset']}`")
    if cfg.get("device"):
        facts.append(f"device `{cfg['device']}`")
    facts.append(f"seeds {', '.join(map(str, all_seeds)) or '-'}")
    md += ["; ".join(facts) + ".", ""]
    lay = cfg.get("dataset")
    if isinstance(lay, dict) and str(lay.get("source", "")).startswith("inferred"):
        md += ["The data folder has no `dataset.json`; its layout was inferred: " + ", ".join(
            f"{k} `{v}`" for k, v in lay.items() if k != "source") + ".", ""]
    if "sim" in str(cfg.get("data", "")):
        md += ["Simulated features: these numbers show what each stage does; they are not real "
               "THUMOS14 results.", ""]

    md += ["## Results", "", "Test-subset mAP (%) per tIoU and the paper's averages; the last four columns "
           "measure the training labels each row ends on (frame mIoU %, mean boundary error s, recall "
           "of GT < 2 s at tIoU 0.5 %, merge rate %).", ""]
    md += [results_table(found, markdown=True), ""]

    # ---- label noise per stage
    md += ["## Label noise per stage", ""]
    noise = section("label noise", lambda: stage_noise(found))
    if noise:
        md += ["Rows: " + "; ".join(f"{r} = {ROW_TITLES.get(r, r)}" for r in noise) + ".", ""]
        path = section("label noise chart", lambda: figure("label_noise.png", lambda: noise_chart_png(noise)))
        if path:
            md += [f"![label noise per stage]({path})", ""]
    elif noise is not None:
        md += ["*(no row with label-quality metrics yet)*", ""]

    # ---- training losses
    md += ["## Training loss", ""]
    hist = section("training loss", lambda: loss_histories(W, seed))
    if hist:
        md += [f"Mean training loss per epoch, seed {seed} (from the checkpoints' history).", ""]
        path = section("training loss chart", lambda: figure("loss.png", lambda: loss_chart_png(hist)))
        if path:
            md += [f"![training loss]({path})", ""]
    elif hist is not None:
        md += ["*(no training history found)*", ""]

    # ---- training videos
    md += ["## Training videos", ""]

    def videos_section():
        ds = _load_run_dataset(W, dataset)
        gt = ds.ground_truth(ds.train_subset)
        base = None
        for p in (sdir / "labels" / "a.json", sdir / "rows" / "a" / "labels.json"):
            if p.is_file():
                base = read_instances(p, ds.classes, require_score=False, videos=list(gt),
                                      what="baseline labels", warn=log.debug)
                break
        picks = pick_videos(gt, base)
        lines = [f"Seed {seed}, " + (f"final row `{row}`" if row else "no detector row yet") +
                 "; tracks from top to bottom follow the pipeline "
                 "(proposals faint, label opacity = weight, prediction opacity = score).", ""]
        cache = SourceCache(v for _, v, _ in picks)
        for key, vid, why in picks:
            lines.append(f"### `{vid}`: {why}")
            lines.append("")
            if pictures:
                v = ds.videos[vid]
                tracks = [ground_truth_track(ds, vid)] + run_tracks(W, vid, ds.classes, seed=seed, row=row, cache=cache)
                rel = figure(f"timeline_{key}.png",
                             lambda: timeline_png(tracks, ds.classes, v.duration, f"{vid} ({v.duration:.1f} s)"))
                lines += [f"![{vid}]({rel})", ""]
        if not picks:
            lines += ["*(no training video with ground truth)*", ""]
        return lines

    lines = section("training videos", videos_section)
    if lines:
        md += lines
    if not pictures:
        md += [f"*Pictures skipped: matplotlib is not installed ({MPL_HINT}).*", ""]
    if notes:
        md += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return atomic_write_text(W / "report.md", "\n".join(md).rstrip() + "\n")


def write_run_report_safely(run_dir: str | Path, **kw) -> Path | None:
    """:func:`write_run_report` that never raises (it logs one warning instead): for ``noco run``."""
    try:
        path = write_run_report(run_dir, **kw)
    except Exception as e:  # noqa: BLE001 - the run's results are already written
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning(f"noco: could not write {Path(run_dir) / 'report.md'}: {msg}")
        return None
    log.info(f"noco: report written to {path}")
    return path
