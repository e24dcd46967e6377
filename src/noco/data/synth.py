"""Simulated benchmarks (``noco synth``): THUMOS14 and ActivityNet v1.2.

``thumos14-sim`` keeps every real THUMOS14 video of both subsets (200 Validation + 212 Test) with
its real duration, fps, instances and classes, and replaces the I3D features by simulated ones.
The simulation is built so that a WTAL model trained from video-level labels makes the three
kinds of pseudo-label noise for real reasons (no label noise is injected):

* action evidence is strongest inside an instance and ramps down over ``ramp_seconds`` at each
  end, so boundaries are soft and short instances never reach full strength (missed, shortened);
* the class's scene context (a vector correlated with the class direction) surrounds each
  instance for a few seconds and fills short gaps between instances of the same class
  (over-extension, merging of neighbours);
* per-frame signals are averaged over each snippet's ``num_frames`` window (short instances are
  diluted), and snippet-level noise is temporally correlated, on top of a generic background and
  a per-video scale and offset.

Per-frame scalar intensity tracks are built per component (action per class, context per class),
averaged exactly over each snippet window (features are linear in the tracks), then mapped to
``D`` dimensions by the component vectors. Class and context vectors come from a seed-fixed global
generator; each video has its own generator seeded by ``(seed, crc32(video_id))``, so the output
is byte-identical for a given seed, whatever the order or subset of videos generated.

``anet12-sim`` is the paper's second benchmark: the real ActivityNet v1.2 annotations
(``activity_net.v1-2.min-missing-removed.json``, shipped gzip-compressed and byte-for-byte as
``resources/activitynet12.json.gz``), 4,441 ``training`` videos (train) and 2,198 ``validation``
videos (test; ``testing`` has no annotations and is left out), 100 classes sorted by name, with
features simulated by the same :func:`simulate_video` in the W-TALC I3D convention (25 fps,
16-frame windows, stride 16: one snippet every 0.64 s). Its :class:`SimConfig`
(:data:`ANET12_CONFIG`) keeps every amplitude and the noise level of ``thumos14-sim`` and rescales
the time constants to ActivityNet, whose instances are ~10x longer (median 28.6 s vs 3.0 s), cover
64% of a video (THUMOS14: 29%), and whose same-class neighbours are ~2.6x further apart
(median gap 8.6 s vs 3.3 s):

* ``ramp_seconds`` 1 -> 4: 6.25 snippets of ramp at 0.64 s per snippet (THUMOS14: 7.5 snippets at
  0.13 s), i.e. the same soft boundary in grid units; instances under 8 s (22% of ActivityNet's,
  vs. 33% under 2 s in THUMOS14) never reach full strength. Scaling by the full 10x (10 s) would
  leave every instance under 20 s (42%) without a single full-strength snippet;
* ``context_before``/``context_after`` 4 -> 8 s (2-14 s per instance): the share of background
  time farther than the mean context from any instance is then 64%, as in THUMOS14 (61% at 4 s),
  although ActivityNet's background is only 36% of a video; ``context_ramp`` 1 -> 3 s;
* ``context_gap_fill`` 6 -> 15 s: scaled with the median same-class gap (x2.6): context bridges 71%
  of the same-class gaps (THUMOS14: 66%) and so invites merging as often;
* ``noise_corr_seconds`` 1 -> 3 s (4.7 snippets: 1 s would be 1.6 snippets, almost white at this
  step), so that correlated dips and bumps last long enough to fragment a long instance or fake a
  short one; ``background_seconds`` 10 -> 20 s (videos are 107 s long in median).

``--train-videos N --test-videos M`` (every preset) keep a deterministic, seed-independent subset of
each subset (:func:`subsample_videos`): coverage first, then proportional stratification; a video's
features do not depend on which other videos are generated.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import io
import json
import logging
import math
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import NocoError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text
from .dataset import expected_snippets

log = logging.getLogger("noco.data")

PRESETS = ("thumos14-sim", "tiny", "anet12-sim")
FPS, FEAT_STRIDE, NUM_FRAMES = 30, 4, 16
TRAIN_SUBSET, TEST_SUBSET = "Validation", "Test"
DEFAULT_DIM = 128
# anet12-sim: W-TALC I3D convention (25 fps, 16-frame windows, stride 16)
ANET_FPS, ANET_FEAT_STRIDE, ANET_NUM_FRAMES = 25, 16, 16
ANET_TRAIN_SUBSET, ANET_TEST_SUBSET = "training", "validation"
ANET_RESOURCE = "resources/activitynet12.json.gz"
ANET_SOURCE_FILE = "activity_net.v1-2.min-missing-removed.json"

# tiny preset: real videos (first TINY_CROP seconds), chosen to share classes across subsets
TINY_CROP = 60.0
TINY_VIDEOS = (
    "video_validation_0000053",  # Billiards
    "video_validation_0000057",  # Billiards
    "video_validation_0000154",  # CleanAndJerk
    "video_validation_0000161",  # CliffDiving + Diving
    "video_validation_0000174",  # CricketBowling
    "video_validation_0000182",  # CricketShot
    "video_test_0000004",        # CricketBowling + CricketShot
    "video_test_0000556",        # Billiards
    "video_test_0000635",        # CleanAndJerk
    "video_test_0000785",        # CliffDiving + Diving
)


@dataclass
class SimConfig:
    """Strengths of the simulated components (amplitudes are multiples of unit-norm vectors;
    noise is per feature dimension, so its projection on any unit direction has ``noise_std``)."""

    # action evidence
    action_amp: float = 1.8          # peak amplitude of the class prototype inside an instance
    action_jitter: float = 0.3       # per-instance amplitude factor ~ U[1 - j, 1 + j]
    ramp_seconds: float = 1.0        # linear ramp at each end (instances < 2 ramps never peak)
    actionness_share: float = 0.3    # cos between two class prototypes (shared "actionness")
    # scene context of a class around its instances
    context_amp: float = 1.0
    context_corr: float = 0.6        # cos between a class's context vector and its private direction
    context_before: float = 4.0      # mean seconds of context before an instance (per instance ~ U[.25, 1.75] x)
    context_after: float = 4.0       # ... after an instance
    context_ramp: float = 1.0        # soft edges of context regions
    context_gap_fill: float = 6.0    # gaps shorter than this between same-class instances are filled
    # generic background
    background_amp: float = 1.0
    background_drop: float = 0.5     # fraction of the background removed where an action is at full strength
    background_var: float = 0.3      # std of the slow relative variation of the background level
    background_seconds: float = 10.0  # time scale of that variation
    # noise and per-video variation
    noise_std: float = 0.4
    noise_corr_seconds: float = 1.0  # Gaussian smoothing (std, seconds) of the correlated part
    noise_smooth_frac: float = 0.5   # share of the noise variance that is temporally correlated
    video_scale_sigma: float = 0.2   # per-video scale ~ exp(N(0, sigma))
    video_offset_std: float = 0.2    # per-video offset vector ~ N(0, std^2 I)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_overrides(cls, overrides: dict | None = None, base: "SimConfig | None" = None) -> "SimConfig":
        """``base`` (default: the field defaults) with ``overrides`` applied, validated."""
        cfg = copy.deepcopy(base) if base is not None else cls()
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in (overrides or {}).items():
            if key not in names:
                raise NocoError(f"unknown simulation setting {key!r} (known: {', '.join(sorted(names))})")
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise NocoError(f"simulation setting {key!r} must be a number, found {value!r}") from None
            if not math.isfinite(value):
                raise NocoError(f"simulation setting {key!r} must be finite, found {value!r}")
            setattr(cfg, key, value)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        bad = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) < 0]
        if bad:
            raise NocoError(f"simulation settings must be non-negative: {', '.join(bad)}")
        for key in ("actionness_share", "context_corr", "noise_smooth_frac", "background_drop"):
            if getattr(self, key) > 1:
                raise NocoError(f"simulation setting {key!r} must be in [0, 1], found {getattr(self, key)}")
        if self.action_jitter >= 1:
            raise NocoError(f"simulation setting 'action_jitter' must be < 1, found {self.action_jitter}")


# ActivityNet time constants (see the module docstring for the reasons); amplitudes as thumos14-sim
ANET12_OVERRIDES = {
    "ramp_seconds": 4.0,
    "context_before": 8.0,
    "context_after": 8.0,
    "context_ramp": 3.0,
    "context_gap_fill": 15.0,
    "noise_corr_seconds": 3.0,
    "background_seconds": 20.0,
}
ANET12_CONFIG = SimConfig(**ANET12_OVERRIDES)


def preset_config(preset: str) -> SimConfig:
    """The default :class:`SimConfig` of a preset (a fresh copy)."""
    _check_preset(preset)
    return copy.deepcopy(ANET12_CONFIG) if preset == "anet12-sim" else SimConfig()


@dataclass(frozen=True)
class PresetSpec:
    """Feature grid and subsets of a preset."""

    fps: float
    feat_stride: int
    num_frames: int
    train_subset: str
    test_subset: str


def preset_spec(preset: str) -> PresetSpec:
    _check_preset(preset)
    if preset == "anet12-sim":
        return PresetSpec(ANET_FPS, ANET_FEAT_STRIDE, ANET_NUM_FRAMES, ANET_TRAIN_SUBSET, ANET_TEST_SUBSET)
    return PresetSpec(FPS, FEAT_STRIDE, NUM_FRAMES, TRAIN_SUBSET, TEST_SUBSET)


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise NocoError(f"unknown synth preset {preset!r} (choose from {', '.join(PRESETS)})")


# ---------------------------------------------------------------------- annotations
def activitynet12_annotations() -> dict:
    """The real ActivityNet v1.2 annotation file (every subset, taxonomy included), as shipped."""
    data = resources.files("noco").joinpath(ANET_RESOURCE).read_bytes()
    return json.loads(gzip.decompress(data).decode("utf-8"))


def _real_annotations() -> dict:
    text = resources.files("noco").joinpath("resources/thumos14.json").read_text(encoding="utf-8")
    return json.loads(text)


def real_classes(annotations: dict | None = None) -> list[str]:
    """THUMOS14 classes ordered by label_id (or any annotation object's classes: ordered by
    label_id when every instance has one, else sorted by name, as the dataset loader does)."""
    db = (annotations or _real_annotations())["database"]
    anns = [a for v in db.values() for a in v.get("annotations", [])]
    if anns and all("label_id" in a for a in anns):
        ids = {a["label"]: a["label_id"] for a in anns}
        return sorted(ids, key=ids.get)
    return sorted({a["label"] for a in anns})


def preset_classes(preset: str) -> list[str]:
    """Every class of a preset (also those a subsample lacks): THUMOS14's 20 by label_id, or
    ActivityNet v1.2's 100 sorted by name."""
    _check_preset(preset)
    return real_classes(activitynet12_annotations() if preset == "anet12-sim" else None)


def _stable_hash(texts: list[str]) -> np.ndarray:
    """64-bit hashes of strings that do not depend on the Python process (unlike ``hash``)."""
    return np.array([int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "big")
                     for t in texts], dtype=np.uint64)


def subsample_videos(db: dict, subset: str, n: int | None) -> list[str]:
    """A deterministic, seed-independent choice of ``n`` videos of ``subset`` (sorted ids; all when
    ``n`` is 0 or None).

    Videos are ranked by a stable hash of their id within each class. First comes one video per
    class (classes in the order of a stable hash of their name), so that any ``n`` at least the
    number of classes covers every class, and two subsamples of different sizes cover nested
    class sets (the first ``k`` classes of that order). Then each class's remaining videos follow
    at the quantiles ``(rank + 0.5) / count`` of the class (systematic proportional stratification):
    every class keeps its share of the subset, within about one video. Videos without an instance
    come last, in hash order.
    """
    vids = sorted(v for v, e in db.items() if e.get("subset") == subset)
    if n is None or n == 0:
        return vids
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise NocoError(f"the number of {subset!r} videos to keep must be a non-negative integer, found {n!r}")
    if n > len(vids):
        raise NocoError(f"cannot keep {n} videos of subset {subset!r}: it has {len(vids)}")
    if n == len(vids):
        return vids
    labels = [sorted({a["label"] for a in db[v].get("annotations", [])}) for v in vids]
    classes = sorted({c for ls in labels for c in ls})
    cidx = {c: i for i, c in enumerate(classes)}
    vh = _stable_hash(vids)
    pv = np.array([i for i, ls in enumerate(labels) for _ in ls], dtype=np.int64)  # (video, class) pairs
    pc = np.array([cidx[c] for ls in labels for c in ls], dtype=np.int64)
    key = 3.0 + np.zeros(len(vids))  # no instance: last
    if len(pv):
        order = np.lexsort((pv, vh[pv], pc))  # by class, then video hash
        pv, pc = pv[order], pc[order]
        count = np.bincount(pc, minlength=len(classes))
        first = np.cumsum(count) - count
        rank = np.arange(len(pc)) - first[pc]
        class_rank = np.empty(len(classes), dtype=np.int64)
        class_rank[np.lexsort((np.arange(len(classes)), _stable_hash(classes)))] = np.arange(len(classes))
        pair_key = np.where(rank == 0, class_rank[pc] / len(classes), 1.0 + (rank + 0.5) / count[pc])
        np.minimum.at(key, pv, pair_key)
    keep = np.lexsort((np.arange(len(vids)), vh, key))[:n]
    return [vids[i] for i in np.sort(keep)]


def build_annotations(preset: str, *, train_videos: int | None = None, test_videos: int | None = None) -> dict:
    """The annotation object a preset writes as ``annotations.json`` (ActivityNet layout), with the
    train/test subsets optionally subsampled (:func:`subsample_videos`)."""
    _check_preset(preset)
    if preset == "anet12-sim":
        real = activitynet12_annotations()
        db = real["database"]
        keep = set(subsample_videos(db, ANET_TRAIN_SUBSET, train_videos))
        keep |= set(subsample_videos(db, ANET_TEST_SUBSET, test_videos))
        out = {"version": real.get("version", "activitynet-1.2"),
               "database": {vid: v for vid, v in db.items() if vid in keep}}
        return _note_subsample(out, train_videos, test_videos)
    if train_videos or test_videos:
        full = build_annotations(preset)
        db = full["database"]
        keep = set(subsample_videos(db, TRAIN_SUBSET, train_videos))
        keep |= set(subsample_videos(db, TEST_SUBSET, test_videos))
        out = {**full, "database": {vid: v for vid, v in db.items() if vid in keep}}
        return _note_subsample(out, train_videos, test_videos)
    real = _real_annotations()
    if preset == "thumos14-sim":
        return real
    db = real["database"]
    out = {}
    for vid in TINY_VIDEOS:
        v = db[vid]
        dur = min(float(v["duration"]), TINY_CROP)
        anns = []
        for a in v["annotations"]:
            s, e = float(a["segment"][0]), min(float(a["segment"][1]), dur)
            if e > s:
                anns.append({"segment": [s, e], "label": a["label"], "label_id": a["label_id"]})
        out[vid] = {"subset": v["subset"], "duration": dur, "fps": v["fps"], "annotations": anns}
    return {"version": f"{real.get('version', 'thumos14')}-tiny{int(TINY_CROP)}s", "database": out}


def _note_subsample(ann: dict, train_videos: int | None, test_videos: int | None) -> dict:
    if train_videos or test_videos:
        ann["version"] = (f"{ann['version']} (noco subsample: {train_videos or 'all'} train / "
                          f"{test_videos or 'all'} test videos)")
    return ann


def dataset_description(preset: str, seed: int, dim: int, config: SimConfig, *,
                        train_videos: int | None = None, test_videos: int | None = None) -> dict:
    spec = preset_spec(preset)
    desc = {
        "annotations": "annotations.json",
        "features": "features",
        "fps": spec.fps,
        "feat_stride": spec.feat_stride,
        "num_frames": spec.num_frames,
        "train_subset": spec.train_subset,
        "test_subset": spec.test_subset,
        "classes": preset_classes(preset),
        "name": preset,
        "generator": {"program": "noco synth", "preset": preset, "seed": seed, "dim": dim,
                      "sim": config.to_dict()},
    }
    if preset == "anet12-sim":
        desc["source"] = (f"real ActivityNet v1.2 annotations ({ANET_SOURCE_FILE}; 'testing' left out: no "
                          f"annotations), simulated I3D-like features")
    if train_videos or test_videos:
        desc["generator"]["subsample"] = {"train_videos": train_videos or None, "test_videos": test_videos or None}
    return desc


# ---------------------------------------------------------------------- vectors
@dataclass
class Components:
    prototypes: np.ndarray  # [K, D] unit: class action directions
    context: np.ndarray     # [K, D] unit: class scene-context directions
    background: np.ndarray  # [D] unit: generic background direction


def make_components(num_classes: int, dim: int, seed: int, config: SimConfig) -> Components:
    rng = np.random.default_rng([seed, 1 << 33])  # 1 << 33 never equals a crc32

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    private = unit(rng.standard_normal((num_classes, dim)))
    shared = unit(rng.standard_normal(dim))
    g = config.actionness_share
    protos = unit(math.sqrt(1 - g) * private + math.sqrt(g) * shared)
    rho = config.context_corr
    ctx = unit(rho * private + math.sqrt(1 - rho * rho) * unit(rng.standard_normal((num_classes, dim))))
    bg = unit(rng.standard_normal(dim))
    return Components(protos.astype(np.float32), ctx.astype(np.float32), bg.astype(np.float32))


# ---------------------------------------------------------------------- tracks
def _trapezoid_tracks(rows, starts, ends, amps, ramp, num_rows, num_frames, fps) -> np.ndarray:
    """Per-frame tracks [num_rows, num_frames]: track[r, f] = max over intervals i with rows[i] == r
    of amps[i] * clip(min(t - s_i, e_i - t) / ramp, 0, 1), t = (f + 0.5) / fps (frame centre)."""
    out = np.zeros((num_rows, num_frames), dtype=np.float32)
    if len(starts) == 0:
        return out
    f0 = np.clip(np.floor(starts * fps - 0.5).astype(np.int64), 0, num_frames)
    f1 = np.clip(np.ceil(ends * fps + 0.5).astype(np.int64), 0, num_frames)
    f1 = np.maximum(f1, f0)
    lens = f1 - f0
    total = int(lens.sum())
    if total == 0:
        return out
    owner = np.repeat(np.arange(len(starts)), lens)
    first = np.cumsum(lens) - lens
    frame = f0[owner] + (np.arange(total) - first[owner])
    t = (frame + 0.5) / fps
    r = max(ramp, 1e-6)
    val = amps[owner] * np.clip(np.minimum(t - starts[owner], ends[owner] - t) / r, 0.0, 1.0)
    np.maximum.at(out.reshape(-1), rows[owner] * num_frames + frame, val.astype(np.float32))
    return out


def _window_mean(tracks: np.ndarray, num_snippets: int, stride: int, nf: int) -> np.ndarray:
    """Exact mean of per-frame tracks [R, F] over each snippet window -> [num_snippets, R]."""
    cs = np.zeros((tracks.shape[0], tracks.shape[1] + 1), dtype=np.float64)
    np.cumsum(tracks, axis=1, dtype=np.float64, out=cs[:, 1:])
    start = np.arange(num_snippets) * stride
    return ((cs[:, start + nf] - cs[:, start]) / nf).T.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, n: int, dim: int, sigma: float) -> np.ndarray:
    """Unit-variance Gaussian noise [n, dim] smoothed along axis 0 by a Gaussian of std ``sigma``."""
    if sigma < 0.5:
        return rng.standard_normal((n, dim), dtype=np.float32)
    half = int(math.ceil(4 * sigma))
    m = n + 2 * half
    z = rng.standard_normal((m, dim), dtype=np.float32)
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    k /= np.sqrt((k * k).sum())
    kernel = np.zeros(m)
    kernel[: half + 1] = k[half:]
    kernel[m - half:] = k[:half]
    y = np.fft.irfft(np.fft.rfft(z, axis=0) * np.fft.rfft(kernel)[:, None], n=m, axis=0)
    return y[half: half + n].astype(np.float32)


def simulate_video(video: dict, num_snippets: int, classes: list[str], comps: Components,
                   config: SimConfig, rng: np.random.Generator, *, fps: float,
                   feat_stride: int = FEAT_STRIDE, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Features [num_snippets, D] float32 of one video entry (ActivityNet layout)."""
    cfg = config
    dim = comps.prototypes.shape[1]
    dur = float(video["duration"])
    cidx = {c: i for i, c in enumerate(classes)}
    anns = video.get("annotations", [])
    segs = np.array([a["segment"] for a in anns], dtype=np.float64).reshape(-1, 2)
    labs = np.array([cidx[a["label"]] for a in anns], dtype=np.int64)
    segs = np.clip(segs, 0.0, dur)
    keep = segs[:, 1] > segs[:, 0]
    segs, labs = segs[keep], labs[keep]
    present, rows = np.unique(labs, return_inverse=True)
    n_frames = max(int(math.ceil(dur * fps)), (num_snippets - 1) * feat_stride + num_frames)
    n = len(labs)

    # draws, in a fixed order
    jitter = rng.uniform(1 - cfg.action_jitter, 1 + cfg.action_jitter, n)
    before = cfg.context_before * rng.uniform(0.25, 1.75, n)
    after = cfg.context_after * rng.uniform(0.25, 1.75, n)
    scale = math.exp(cfg.video_scale_sigma * rng.standard_normal())
    offset = cfg.video_offset_std * rng.standard_normal(dim).astype(np.float32)
    bg_slow = _smooth_noise(rng, num_snippets, 1, cfg.background_seconds * fps / feat_stride)[:, 0]
    white = rng.standard_normal((num_snippets, dim), dtype=np.float32)
    smooth = _smooth_noise(rng, num_snippets, dim, cfg.noise_corr_seconds * fps / feat_stride)

    # action tracks (one row per present class)
    act = _trapezoid_tracks(rows, segs[:, 0], segs[:, 1], jitter, cfg.ramp_seconds, len(present),
                            n_frames, fps)
    # context: around each instance, plus the gaps between close same-class neighbours
    order = np.lexsort((segs[:, 0], rows))
    r_sorted, s_sorted, e_sorted = rows[order], segs[order, 0], segs[order, 1]
    same = r_sorted[1:] == r_sorted[:-1]
    # running max of the ends within each class (classes are contiguous and ascending in `order`)
    big = dur + 1e3
    gap_start = (np.maximum.accumulate(e_sorted + r_sorted * big) - r_sorted * big)[:-1]
    gap_end = s_sorted[1:]
    fill = same & (gap_end - gap_start < cfg.context_gap_fill) & (gap_end > gap_start)
    cr = cfg.context_ramp
    c_rows = np.concatenate([rows, r_sorted[1:][fill]])
    c_start = np.concatenate([segs[:, 0] - before, gap_start[fill] - cr])
    c_end = np.concatenate([segs[:, 1] + after, gap_end[fill] + cr])
    ctx = _trapezoid_tracks(c_rows, c_start, c_end, np.ones(len(c_rows)), cr, len(present), n_frames, fps)

    a_snip = _window_mean(act, num_snippets, feat_stride, num_frames)  # [T, P]
    c_snip = _window_mean(ctx, num_snippets, feat_stride, num_frames)  # [T, P]
    any_action = a_snip.max(axis=1) if len(present) else np.zeros(num_snippets, np.float32)
    bg = (1.0 + cfg.background_var * bg_slow) * (1.0 - cfg.background_drop * np.clip(any_action, 0, 1))

    signal = (cfg.action_amp * a_snip) @ comps.prototypes[present]
    signal += (cfg.context_amp * c_snip) @ comps.context[present]
    signal += (cfg.background_amp * bg)[:, None] * comps.background[None, :]
    signal += offset[None, :]
    noise = math.sqrt(1 - cfg.noise_smooth_frac) * white + math.sqrt(cfg.noise_smooth_frac) * smooth
    feats = scale * signal + cfg.noise_std * noise
    return np.ascontiguousarray(feats, dtype=np.float32)


def video_rng(seed: int, video_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(video_id.encode("utf-8"))])


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


# ---------------------------------------------------------------------- driver
def generate(preset: str, out: str | Path, *, seed: int = 0, dim: int = DEFAULT_DIM, force: bool = False,
             config: SimConfig | None = None, progress: bool | None = None,
             train_videos: int | None = None, test_videos: int | None = None) -> Path:
    """Write a simulated dataset (layout of :mod:`noco.data.dataset`) to ``out``; returns ``out``.

    ``config`` defaults to the preset's (:func:`preset_config`). ``train_videos``/``test_videos``
    keep a deterministic, seed-independent subset of the train/test videos (0 or None: all).
    ``dataset.json`` is written last: a folder without it is an interrupted generation.
    """
    _check_preset(preset)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise NocoError(f"--seed must be a non-negative integer, found {seed!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise NocoError(f"--dim must be a positive integer, found {dim!r}")
    for flag, n in (("--train-videos", train_videos), ("--test-videos", test_videos)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise NocoError(f"{flag} must be a non-negative integer (0: all videos), found {n!r}")
    config = copy.deepcopy(config) if config is not None else preset_config(preset)
    config.validate()
    spec = preset_spec(preset)
    ann = build_annotations(preset, train_videos=train_videos, test_videos=test_videos)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NocoError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise NocoError(f"{out}: directory is not empty (use --force to write into it)")
    from ..io import check_writable_dir

    check_writable_dir(out)
    classes = preset_classes(preset)
    comps = make_components(len(classes), dim, seed, config)
    db = ann["database"]
    vids = sorted(db)
    if progress is None:
        from .dataset import _stderr_is_tty

        progress = _stderr_is_tty()
    from tqdm import tqdm

    feat_dir = out / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    for vid in tqdm(vids, desc=f"synth {preset}", unit="video", disable=not progress):
        v = db[vid]
        vfps = float(v.get("fps", spec.fps))
        t = expected_snippets(float(v["duration"]), vfps, spec.feat_stride, spec.num_frames)
        feats = simulate_video(v, t, classes, comps, config, video_rng(seed, vid), fps=vfps,
                               feat_stride=spec.feat_stride, num_frames=spec.num_frames)
        atomic_write_bytes(feat_dir / f"{vid}.npy", _npy_bytes(feats))
    atomic_write_text(out / "annotations.json", json.dumps(ann) + "\n")
    desc = dataset_description(preset, seed, dim, config, train_videos=train_videos, test_videos=test_videos)
    atomic_write_json(out / "dataset.json", desc, indent=1)
    log.info("%s: wrote %s (%d videos, feature dim %d, seed %d)", out, preset, len(vids), dim, seed)
    return out
