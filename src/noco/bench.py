"""Speed and scale benchmark (``noco bench``): the TriDet student against the WTAL base model.

Everything runs in one process on the SAME random-feature videos, after a warm-up, and every time
is the median over ``repeats`` repetitions:

* inference videos/s. Student: ``noco.detector.infer.detect`` (forward on the padded video,
  Trident decoding, Soft-NMS with voting). WTAL base model: what ``noco wtal predict`` does per
  video (``infer_video`` on the preset's test view, class selection, the multi-threshold
  proposals, per-class NMS; see :func:`wtal_predict_video`). Feature file reading is excluded;
* forward FLOPs of both models at the input each sees for one such video, counted with
  ``torch.utils.flop_counter.FlopCounterMode`` (GFLOPs = FLOPs / 1e9, GMACs = FLOPs / 2e9);
* training seconds per optimizer step at the preset's batch size (forward, loss, backward,
  optimizer step; the student also clips gradients and updates its EMA teacher);
* ``noco eval`` seconds on a THUMOS14-sized case (``noco.eval.bench.make_case``);
* peak resident memory after each phase (``ru_maxrss``, a process-wide high-water mark) and,
  on CUDA, ``torch.cuda.max_memory_allocated`` per phase; parameter counts.

The videos are temporally correlated, non-negative random features (Gaussian noise box-filtered
over ``SMOOTH`` snippets, then softplus), and the models have their random initial weights: the
numbers measure the cost of the computation, not of a trained model's particular outputs (the
number of detections each path produces, which drives post-processing cost, is recorded).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .errors import NocoError

SMOOTH = 8            # temporal correlation of the random features (snippets)
FPS, FEAT_STRIDE, NUM_FRAMES = 30.0, 4, 16  # THUMOS14 I3D grid
NUM_CLASSES = 20      # THUMOS14


@dataclass
class BenchSize:
    """One benchmark size: the two presets, their overrides and the test videos' shape."""

    name: str
    feat_dim: int
    snippets: int = 2304
    detector_preset: str = "cpu"
    detector_overrides: dict[str, Any] = field(default_factory=dict)
    wtal_preset: str = "cpu"
    wtal_overrides: dict[str, Any] = field(default_factory=dict)
    num_classes: int = NUM_CLASSES


SIZES: dict[str, BenchSize] = {
    # THUMOS14 with I3D features: 2048-d, 2304 snippets (TriDet's max_seq_len, 307 s at 30 fps).
    "paper": BenchSize("paper", feat_dim=2048, snippets=2304, detector_preset="paper", wtal_preset="paper"),
    # The presets that train on two CPU cores (thumos14-sim, 128-d), same video length.
    "cpu": BenchSize("cpu", feat_dim=128, snippets=2304, detector_preset="cpu", wtal_preset="cpu"),
    # A few-second smoke size for tests (not a meaningful benchmark).
    "tiny": BenchSize(
        "tiny", feat_dim=16, snippets=128, detector_preset="cpu",
        detector_overrides=dict(embed_dim=16, head_dim=16, mlp_dim=16, max_seq_len=64, input_downsample=1,
                                batch_size=2),
        wtal_preset="cpu", wtal_overrides=dict(hidden_dim=16, num_segments=64, batch_size=2),
        num_classes=5,
    ),
}


# ------------------------------------------------------------------------------------- helpers
def make_videos(num: int, snippets: int, feat_dim: int, seed: int = 0) -> list[torch.Tensor]:
    """``num`` random-feature videos ``[snippets, feat_dim]`` float32 (see module docstring)."""
    if num < 1 or snippets < 1 or feat_dim < 1:
        raise NocoError(f"need at least one video, snippet and feature dimension "
                        f"(found {num} videos, {snippets} snippets, {feat_dim} dims)")
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for _ in range(num):  # per video (a handful)
        raw = torch.randn(1, feat_dim, snippets + SMOOTH - 1, generator=g)
        x = F.avg_pool1d(raw, SMOOTH, stride=1) * math.sqrt(SMOOTH)  # unit variance, correlated
        out.append(F.softplus(x)[0].T.contiguous())
    return out


def video_meta(snippets: int) -> dict:
    """Metadata of a ``snippets``-long video on the THUMOS14 grid (what both paths need)."""
    duration = ((snippets - 1) * FEAT_STRIDE + NUM_FRAMES) / FPS
    return {"fps": FPS, "duration": duration, "feat_stride": FEAT_STRIDE, "num_frames": NUM_FRAMES,
            "num_snippets": snippets}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_times(fn: Callable[[], Any], repeats: int, device: torch.device,
                  warmup: Callable[[], Any] | None = None) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after one untimed call of ``warmup`` (default
    ``fn``)."""
    (warmup or fn)()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def count_forward_flops(module: torch.nn.Module, fn: Callable[[], Any], parts: bool = False):
    """FLOPs that ``module``'s forward calls perform while ``fn()`` runs (FlopCounterMode; only
    matmul/convolution-like ops are counted, as is usual). ``parts=True`` also returns the FLOPs of
    each direct child module ``{name: flops}``."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    counts = counter.get_flop_counts()
    root = type(module).__name__
    mine = counts.get(root)
    total = int(sum((mine if mine is not None else counts.get("Global", {})).values()))
    if not parts:
        return total
    children: dict[str, int] = {}
    for k, v in counts.items():
        # outermost counted modules below the root (a ModuleList is never called itself, so the
        # entries of ``root.embed`` are ``root.embed.0``, ...), grouped by the root's child name
        path = k.split(".")
        if path[0] == root and len(path) > 1 and not any(
                ".".join(path[:i]) in counts for i in range(2, len(path))):
            name = k.split(".")[1]
            children[name] = children.get(name, 0) + int(sum(v.values()))
    return total, children


def peak_rss_mib() -> float:
    """Process peak resident set size in MiB (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1 << 20) if sys.platform == "darwin" else r / 1024


def _cuda_peak_start(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _memory(device: torch.device) -> dict[str, float]:
    m = {"peak_rss_mib": round(peak_rss_mib(), 1)}
    if device.type == "cuda":
        m["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / (1 << 20), 1)
    return m


def num_params(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, torch version and threads, device name, date and load (for the JSON)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
    }
    try:
        info["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


# ------------------------------------------------------------------------------------- WTAL path
def wtal_predict_video(model, cfg, feats: torch.Tensor, meta: dict, device):
    """One video as ``noco wtal predict`` processes it (``noco.wtal.train._run_inner``, mode
    "predict"): forward on the test view, classes above ``class_threshold`` (else the best), the
    dense multi-threshold proposals, per-class NMS. Returns ``(detections, pool size)``."""
    from .wtal.proposals import VideoMeta, nms_detections, select_classes, video_proposals
    from .wtal.train import infer_video

    cas, att, vs = infer_video(model, feats, cfg, device)
    classes = select_classes(vs, cfg.class_threshold)
    pool = video_proposals(
        cas, att, classes, vs, VideoMeta(int(feats.shape[0]), float(meta["duration"]), float(meta["fps"])),
        feat_stride=int(meta["feat_stride"]), num_frames=int(meta["num_frames"]),
        cas_thresholds=cfg.cas_thresholds, att_thresholds=cfg.att_thresholds,
        upsample_factor=cfg.upsample, min_points=cfg.min_points, flank_ratio=cfg.oic_flank,
        gamma=cfg.oic_gamma, score_mapping=cfg.score_mapping, oic_scale=cfg.oic_scale, min_score=None,
    )
    return nms_detections(pool, cfg.nms_threshold, cfg.max_detections), len(pool)


def _wtal_train_step(model, cfg, num_classes: int, feat_dim: int, device, seed: int) -> Callable[[], None]:
    from .wtal.model import wtal_losses

    g = torch.Generator().manual_seed(seed)
    b, t = cfg.batch_size, cfg.num_segments
    x = make_videos(1, b * t, feat_dim, seed)[0].reshape(b, t, feat_dim).to(device)
    valid = torch.ones(b, t, dtype=torch.bool, device=device)
    y = torch.zeros(b, num_classes)
    y[torch.arange(b), torch.randint(0, num_classes, (b,), generator=g)] = 1.0
    y = y.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step() -> None:
        model.train()
        losses = wtal_losses(model(x, valid), y, cfg)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()

    return step


# ------------------------------------------------------------------------------------- student path
def _student_train_step(model, cfg, device, seed: int) -> Callable[[], None]:
    """One step of ``train_detector``'s inner loop on a full-length random batch (``batch_size``
    crops of ``max_seq_len`` steps, 8 random instances each) without data loading."""
    from .correction.teacher import EMATeacher
    from .detector.assign import assign_labels
    from .detector.loss import detection_loss
    from .detector.train import make_optimizer

    g = torch.Generator().manual_seed(seed)
    b, length = cfg.batch_size, cfg.max_seq_len
    feats = make_videos(1, b * length, cfg.input_dim, seed)[0].reshape(b, length, cfg.input_dim)
    x = feats.transpose(1, 2).contiguous().to(device)
    mask = torch.ones(b, length, dtype=torch.bool, device=device)
    segs, labels = [], []
    for _ in range(b):  # per video of the batch
        n = 8
        lens = torch.rand(n, generator=g) * 0.05 * length + 2.0
        starts = torch.rand(n, generator=g) * (length - lens)
        segs.append(torch.stack([starts, starts + lens], 1).to(device))
        labels.append(torch.randint(0, cfg.num_classes, (n,), generator=g).to(device))
    opt = make_optimizer(model, cfg)
    ema = EMATeacher(model, cfg.ema_decay)
    state = {"norm": float(cfg.loss_norm_init)}

    def step() -> None:
        model.train()
        out = model(x, mask)
        targets = [assign_labels(out["points"], s, lab, torch.ones(len(lab), device=device), cfg.num_classes,
                                 cfg.center_sample_radius, out["mask"][i])
                   for i, (s, lab) in enumerate(zip(segs, labels))]
        cls_t, reg_t, w_t = (torch.stack(t) for t in zip(*targets))
        focal, diou, num_pos = detection_loss(out, cls_t, reg_t, w_t, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma,
                                              iou_power=cfg.iou_weight_power)
        m = cfg.loss_norm_momentum
        state["norm"] = m * state["norm"] + (1 - m) * max(num_pos, 1)
        loss = (focal + cfg.reg_loss_weight * diou) / state["norm"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(model)

    return step


# ------------------------------------------------------------------------------------- runners
def _rate_stats(times: list[float], num_videos: int) -> dict[str, Any]:
    rates = [num_videos / t for t in times]
    return {"videos_per_s": statistics.median(rates), "s_per_video": statistics.median(times) / num_videos,
            "repeat_seconds": [round(t, 6) for t in times]}


def bench_size(size: BenchSize, *, num_videos: int, repeats: int, device: str | torch.device = "cpu",
               skip_train: bool = False, seed: int = 0, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure both models at one size; returns the size's JSON record."""
    from .detector.config import make_config as detector_config
    from .detector.infer import detect, input_steps, padded_length
    from .detector.model import build_model
    from .wtal.config import make_config as wtal_config
    from .wtal.model import WtalModel
    from .wtal.train import _test_view

    say = log or (lambda s: None)
    device = torch.device(device)
    torch.manual_seed(seed)
    dcfg = detector_config(size.detector_preset, {**size.detector_overrides, "input_dim": size.feat_dim,
                                                  "num_classes": size.num_classes})
    wcfg = wtal_config(size.wtal_preset, size.wtal_overrides)
    student = build_model(dcfg).to(device).eval()
    wtal = WtalModel(size.feat_dim, size.num_classes, wcfg).to(device).eval()
    videos = make_videos(num_videos, size.snippets, size.feat_dim, seed)
    meta = video_meta(size.snippets)
    rec: dict[str, Any] = {
        "size": size.name, "feat_dim": size.feat_dim, "snippets": size.snippets, "num_videos": num_videos,
        "repeats": repeats, "num_classes": size.num_classes,
        "detector_preset": size.detector_preset, "wtal_preset": size.wtal_preset,
        "detector_overrides": dict(size.detector_overrides), "wtal_overrides": dict(size.wtal_overrides),
    }
    steps = input_steps(videos[0].shape[0], dcfg)
    s_in = [1, size.feat_dim, padded_length(steps, dcfg)]
    w_in = [1, int(_test_view(videos[0], wcfg).shape[0]), size.feat_dim]

    # ---- inference
    say(f"[{size.name}] student inference: {num_videos} videos x {repeats} repeats")
    _cuda_peak_start(device)
    n_det: list[int] = []

    def run_student(vids=videos) -> None:
        n_det.clear()
        for v in vids:  # per video
            n_det.append(len(detect(student, v, meta, dcfg)))

    warm = lambda: run_student(videos[:1])  # noqa: E731 - warm-up: one video
    st = _rate_stats(_median_times(run_student, repeats, device, warm), num_videos)
    st.update(input_shape=s_in, detections_per_video=statistics.mean(n_det), parameters=num_params(student),
              memory_infer=_memory(device))

    say(f"[{size.name}] WTAL inference: {num_videos} videos x {repeats} repeats")
    _cuda_peak_start(device)
    w_det: list[int] = []
    w_pool: list[int] = []

    def run_wtal(vids=videos) -> None:
        w_det.clear()
        w_pool.clear()
        for v in vids:  # per video
            dets, pool = wtal_predict_video(wtal, wcfg, v, meta, device)
            w_det.append(len(dets))
            w_pool.append(pool)

    warm = lambda: run_wtal(videos[:1])  # noqa: E731
    wt = _rate_stats(_median_times(run_wtal, repeats, device, warm), num_videos)
    wt.update(input_shape=w_in, test_sampling=wcfg.test_sampling, detections_per_video=statistics.mean(w_det),
              proposals_per_video=statistics.mean(w_pool), parameters=num_params(wtal),
              memory_infer=_memory(device))

    # ---- FLOPs (forward of each model at the input it sees for the first video)
    from .wtal.train import infer_video

    v0 = videos[0]
    s_flops, s_parts = count_forward_flops(student, lambda: detect(student, v0, meta, dcfg), parts=True)
    w_flops, w_parts = count_forward_flops(wtal, lambda: infer_video(wtal, v0, wcfg, device), parts=True)
    for r, fl, parts in ((st, s_flops, s_parts), (wt, w_flops, w_parts)):
        r.update(flops=fl, gflops=fl / 1e9, gmacs=fl / 2e9, gflops_by_module={k: v / 1e9 for k, v in parts.items()})
    # the WTAL model on every snippet ("full" test sampling) for comparison
    full_cfg = dataclasses.replace(wcfg, test_sampling="full")
    w_full = count_forward_flops(wtal, lambda: infer_video(wtal, v0, full_cfg, device))
    wt.update(gflops_full_video=w_full / 1e9, full_video_input_shape=[1, size.snippets, size.feat_dim])

    # ---- training
    if not skip_train:
        say(f"[{size.name}] student training step (batch {dcfg.batch_size} x {dcfg.max_seq_len})")
        _cuda_peak_start(device)
        train_model = build_model(dcfg).to(device)
        t = _median_times(_student_train_step(train_model, dcfg, device, seed + 1), repeats, device)
        st["train"] = {"s_per_step": statistics.median(t), "batch_size": dcfg.batch_size,
                       "seq_len": dcfg.max_seq_len, "repeat_seconds": [round(x, 6) for x in t],
                       "memory": _memory(device)}
        del train_model
        say(f"[{size.name}] WTAL training step (batch {wcfg.batch_size} x {wcfg.num_segments})")
        _cuda_peak_start(device)
        train_w = WtalModel(size.feat_dim, size.num_classes, wcfg).to(device)
        t = _median_times(_wtal_train_step(train_w, wcfg, size.num_classes, size.feat_dim, device, seed + 2),
                          repeats, device)
        wt["train"] = {"s_per_step": statistics.median(t), "batch_size": wcfg.batch_size,
                       "seq_len": wcfg.num_segments, "repeat_seconds": [round(x, 6) for x in t],
                       "memory": _memory(device)}
        del train_w
    rec["student"], rec["wtal"] = st, wt
    rec["speed_ratio"] = st["videos_per_s"] / wt["videos_per_s"]
    rec["flops_ratio"] = (w_flops / s_flops) if s_flops else float("nan")
    return rec


def bench_eval(num_videos: int = 212, preds_per_video: int = 2000, repeats: int = 5) -> dict[str, Any]:
    """Median seconds of ``noco.eval.detection.evaluate`` on ``noco.eval.bench.make_case``."""
    from .eval.bench import THUMOS_TIOU, make_case
    from .eval.detection import evaluate

    gt, preds = make_case(num_videos, preds_per_video)
    res: dict = {}

    def run() -> None:
        res.update(evaluate(gt, preds, NUM_CLASSES, THUMOS_TIOU))

    t = _median_times(run, repeats, torch.device("cpu"))
    return {"seconds": statistics.median(t), "videos": num_videos, "predictions": num_videos * preds_per_video,
            "repeats": repeats, "repeat_seconds": [round(x, 6) for x in t], "average_mAP": res.get("average"),
            "memory": _memory(torch.device("cpu"))}


def run_bench(sizes: list[str], *, num_videos: int = 3, repeats: int = 5, device: str = "cpu",
              threads: int | None = None, skip_train: bool = False, skip_eval: bool = False,
              eval_videos: int = 212, eval_preds: int = 2000, snippets: int | None = None, seed: int = 0,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole benchmark; returns the JSON-ready record (machine info, per size, eval)."""
    bad = [s for s in sizes if s not in SIZES]
    if bad or not sizes:
        raise NocoError(f"unknown bench size {', '.join(bad) or '(none)'} (choose from {', '.join(SIZES)})")
    for name, v in (("--videos", num_videos), ("--repeats", repeats), ("--eval-videos", eval_videos),
                    ("--eval-preds", eval_preds)):
        if v < 1:
            raise NocoError(f"{name} must be >= 1, found {v}")
    if snippets is not None and snippets < 1:
        raise NocoError(f"--snippets must be >= 1, found {snippets}")
    if threads is not None:
        if threads < 1:
            raise NocoError(f"--threads must be >= 1, found {threads}")
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NocoError("--device cuda requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise NocoError(f"--device must be cpu or cuda, found {device!r}")
    out: dict[str, Any] = {"machine": machine_info(dev), "sizes": {}}
    t0 = time.perf_counter()
    for name in sizes:
        size = SIZES[name]
        if snippets is not None:
            size = BenchSize(**{**size.__dict__, "snippets": int(snippets)})
        out["sizes"][name] = bench_size(size, num_videos=num_videos, repeats=repeats, device=dev,
                                        skip_train=skip_train, seed=seed, log=log)
    if not skip_eval:
        if log:
            log(f"eval: {eval_videos} videos x {eval_preds} predictions x {repeats} repeats")
        out["eval"] = bench_eval(eval_videos, eval_preds, repeats)
    out["machine"]["total_seconds"] = round(time.perf_counter() - t0, 1)
    try:
        out["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    out["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return out


# ------------------------------------------------------------------------------------- report
def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def format_table(res: dict[str, Any]) -> str:
    """Human-readable table of a :func:`run_bench` record."""
    m = res["machine"]
    lines = [f"noco bench  {m['date']}  {m['cpu']} ({m['cpu_usable']} usable of {m['cpu_count']} cores)  "
             f"torch {m['torch']}  {m['threads']} thread(s)  device {m['device_name']}"]
    if "load_average_start" in m:
        lines.append(f"load average at start {m['load_average_start']} (a shared machine slows every number)")
    rows: list[tuple[str, ...]] = []
    head = ["", ]
    for name, r in res["sizes"].items():
        head += [f"{name}: student", f"{name}: WTAL"]

    def row(label: str, get: Callable[[dict], str]) -> None:
        cells = [label]
        for r in res["sizes"].values():
            cells += [get(r["student"]), get(r["wtal"])]
        rows.append(tuple(cells))

    row("model input shape", lambda x: "x".join(map(str, x["input_shape"])))
    row("inference videos/s", lambda x: _fmt(x["videos_per_s"]))
    row("inference ms/video", lambda x: _fmt(1000 * x["s_per_video"], 1))
    row("forward GFLOPs", lambda x: _fmt(x["gflops"]))
    row("forward GMACs", lambda x: _fmt(x["gmacs"]))
    row("GFLOPs on all snippets", lambda x: _fmt(x["gflops_full_video"]) if "gflops_full_video" in x else "=")
    row("parameters (M)", lambda x: _fmt(x["parameters"] / 1e6, 3))
    row("detections/video", lambda x: _fmt(x["detections_per_video"], 0))
    row("train s/step", lambda x: _fmt(x["train"]["s_per_step"], 3) if "train" in x else "skipped")
    row("train batch x length", lambda x: f"{x['train']['batch_size']}x{x['train']['seq_len']}" if "train" in x else "-")
    row("peak RSS MiB after inference", lambda x: _fmt(x["memory_infer"]["peak_rss_mib"], 0))
    row("peak RSS MiB after train", lambda x: _fmt(x["train"]["memory"]["peak_rss_mib"], 0) if "train" in x else "-")
    if m["device"].startswith("cuda"):
        row("CUDA max alloc MiB (infer)", lambda x: _fmt(x["memory_infer"]["cuda_max_allocated_mib"], 0))
        row("CUDA max alloc MiB (train)", lambda x: _fmt(x["train"]["memory"]["cuda_max_allocated_mib"], 0)
            if "train" in x else "-")
    widths = [max(len(str(c[i])) for c in [tuple(head)] + rows) for i in range(len(head))]
    fmt_row = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths)))
    lines.append(fmt_row(head))
    lines += [fmt_row(r) for r in rows]
    for name, r in res["sizes"].items():
        paper = "; the paper (GPU): 6.67 vs 1.64 videos/s = 4.1x, 124.79 / 20.12 GFLOPs = 6.2x" \
            if name == "paper" else ""
        lines.append(f"{name}: student/WTAL speed {r['speed_ratio']:.2f}x, WTAL/student FLOPs "
                     f"{_fmt(r['flops_ratio'])}x ({r['num_videos']} videos x {r['repeats']} repeats, "
                     f"{r['snippets']} snippets of {r['feat_dim']}-d){paper}")
    if "eval" in res:
        e = res["eval"]
        lines.append(f"noco eval: {e['videos']} videos x {e['predictions'] // e['videos']} predictions: "
                     f"{e['seconds']:.3f} s (median of {e['repeats']})")
    lines.append(f"peak RSS of the process: {res['peak_rss_mib']:.0f} MiB; total {m.get('total_seconds', 0):.0f} s")
    return "\n".join(lines)
