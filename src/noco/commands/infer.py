"""`noco infer`: detections for new feature files with a trained detector checkpoint, no
annotations needed. The checkpoint carries the model config, the class names and the dataset's
grid settings (fps, feat_stride, num_frames); flags override the grid settings."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from pathlib import Path

import numpy as np

from ..errors import DataError, NocoError

log = logging.getLogger("noco")


def register(sub) -> None:
    p = sub.add_parser("infer", help="detect actions in new .npy feature files with a trained checkpoint")
    p.add_argument("--checkpoint", required=True, type=Path, help="a detector checkpoint (e.g. W/seed0/rows/g/model.pt)")
    p.add_argument("--features", required=True, type=Path, help="one .npy file [T, D] or a folder of them")
    p.add_argument("--out", default="-", help="output file (default: standard output)")
    p.add_argument("--csv", action="store_true", help="write CSV rows video,label,start,end,score instead of JSON")
    p.add_argument("--fps", type=float, default=None, help="frames per second of the videos (default: the checkpoint's)")
    p.add_argument("--feat-stride", type=int, default=None, help="frames between snippets (default: the checkpoint's)")
    p.add_argument("--num-frames", type=int, default=None, help="frames per snippet (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16 runs the network under bfloat16 autocast (decoding stays fp32)")
    p.set_defaults(func=cmd_infer)


def load_feature_file(path: Path, dim: int) -> np.ndarray:
    """A float [T, dim] array from ``path``; every problem is a DataError naming the file."""
    from ..data.dataset import read_npy_header

    if path.suffix != ".npy":
        raise DataError(f"{path}: not a .npy feature file")
    try:
        shape, dtype, _ = read_npy_header(path)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy file ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects (a pickle); feature files must be plain float arrays")
    if len(shape) != 2:
        raise DataError(f"{path}: features must have shape [T, D], found shape {tuple(shape)}")
    if dtype.kind != "f":
        raise DataError(f"{path}: features must be floating point, found dtype {dtype}")
    if shape[1] != dim:
        raise DataError(f"{path}: feature dimension {shape[1]} differs from the checkpoint's {dim}")
    if shape[0] < 1:
        raise DataError(f"{path}: zero-length video (no snippets)")
    x = np.load(path, mmap_mode="r", allow_pickle=False)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: features contain NaN or inf values")
    return np.array(x, dtype=np.float32)  # an owned, writable copy


def cmd_infer(args) -> int:
    import torch

    from ..detector.infer import detect, load_detector
    from ..io import atomic_write_text
    from ..labels.instances import instances_to_results

    from ..detector.train import forward_precision, resolve_device

    model, ckpt = load_detector(args.checkpoint, device=resolve_device(args.device))
    settings = ckpt.get("dataset") or {}
    classes = settings.get("classes")
    if not classes or len(classes) != model.cfg.num_classes:
        raise NocoError(f"{args.checkpoint}: checkpoint lacks the class names of its {model.cfg.num_classes} classes")
    fps = args.fps or settings.get("fps")
    stride = args.feat_stride or settings.get("feat_stride")
    frames = args.num_frames or settings.get("num_frames")
    for name, v in (("fps", fps), ("feat_stride", stride), ("num_frames", frames)):
        if not v or v <= 0:
            raise NocoError(f"--{name.replace('_', '-')} must be positive (the checkpoint does not set it)")
    src = args.features
    if src.is_dir():
        files = sorted(src.glob("*.npy"))
        if not files:
            raise NocoError(f"{src}: no .npy feature files in this folder")
    elif src.exists():
        files = [src]
    else:
        raise NocoError(f"{src}: no such feature file or folder")
    dim = model.cfg.input_dim
    problems, arrays = [], {}
    for f in files:
        try:
            arrays[f.stem] = load_feature_file(f, dim)
        except DataError as e:
            problems.extend(e.problems)
    if problems:
        raise DataError(problems, header="cannot run inference")
    dets = {}
    with torch.inference_mode(), forward_precision(model, args.precision):
        for vid, x in arrays.items():
            t = x.shape[0]
            duration = ((t - 1) * stride + frames) / fps
            meta = {"fps": fps, "duration": duration, "feat_stride": stride, "num_frames": frames}
            dets[vid] = detect(model, torch.from_numpy(x), meta)
    if args.csv:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["video", "label", "start", "end", "score"])
        for vid, ins in dets.items():
            for (s, e), c, sc in zip(ins.segments.tolist(), ins.labels.tolist(), ins.scores.tolist()):
                w.writerow([vid, classes[c], f"{s:.3f}", f"{e:.3f}", f"{sc:.6f}"])
        text = buf.getvalue()
    else:
        text = json.dumps(instances_to_results(dets, classes, with_weight=False)) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        atomic_write_text(args.out, text)
        log.info(f"noco infer: {sum(len(d) for d in dets.values())} detections in {len(dets)} videos -> {args.out}")
    return 0
