"""``noco eval``: detection mAP of a predictions file (ActivityNet protocol), or the quality of a
pseudo-label file, against a dataset's annotations.

    noco eval --data DIR --predictions P.json [--subset S] [--tiou 0.1:0.7:0.1] [--json OUT]
    noco eval --data DIR --labels L.json [--subset S] [--json OUT]
"""

from __future__ import annotations

import logging
import math

from ..errors import NocoError

DEFAULT_TIOU = "0.1:0.7:0.1"
_MAX_THRESHOLDS = 1000


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="detection mAP of a predictions file, or the quality of a pseudo-label file",
        description="With --predictions: mAP at each tIoU threshold (ActivityNet protocol) on a subset "
                    "(default: the test subset) and the paper's averages. With --labels: pseudo-label "
                    "quality on a subset (default: the train subset): frame mIoU, precision/recall at "
                    "tIoU 0.5, boundary error, recall by length, merge rate.")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset directory (dataset.json, or a standard layout: see README)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--predictions", metavar="P.json", help="detections in ActivityNet result format")
    what.add_argument("--labels", metavar="L.json", help="pseudo-labels in ActivityNet result format (score optional)")
    p.add_argument("--subset", help="subset to evaluate on (default: test subset for --predictions, "
                                    "train subset for --labels)")
    p.add_argument("--tiou", help=f"tIoU thresholds, 'start:stop:step' (inclusive) or a comma list "
                                  f"(default {DEFAULT_TIOU}; ActivityNet: 0.5:0.95:0.05); --predictions only")
    p.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    p.set_defaults(func=run_eval)


def parse_tiou(text: str) -> list[float]:
    """``'a:b:step'`` (both ends inclusive) or ``'x,y,z'`` -> thresholds in (0, 1], distinct."""
    t = (text or "").strip()
    bad = f"--tiou {text!r}"
    if not t:
        raise NocoError(f"{bad}: empty; use 'start:stop:step' (e.g. 0.1:0.7:0.1) or a comma list (e.g. 0.3,0.5,0.7)")

    def num(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise NocoError(f"{bad}: {s.strip()!r} is not a number") from None
        if not math.isfinite(v):
            raise NocoError(f"{bad}: {s.strip()!r} is not a finite number")
        return v

    if ":" in t:
        parts = t.split(":")
        if len(parts) != 3:
            raise NocoError(f"{bad}: a range is 'start:stop:step', e.g. 0.1:0.7:0.1")
        a, b, step = (num(x) for x in parts)
        if step <= 0:
            raise NocoError(f"{bad}: step must be > 0")
        if b < a:
            raise NocoError(f"{bad}: stop {b} is below start {a}")
        n = math.floor((b - a) / step + 1e-9) + 1
        if n > _MAX_THRESHOLDS:
            raise NocoError(f"{bad}: {n} thresholds is too many (at most {_MAX_THRESHOLDS})")
        vals = [round(a + i * step, 10) for i in range(n)]
    else:
        items = t.split(",")
        if any(not x.strip() for x in items):
            raise NocoError(f"{bad}: empty entry in the comma list")
        vals = [num(x) for x in items]
    for v in vals:
        if not 0.0 < v <= 1.0:
            raise NocoError(f"{bad}: threshold {v:g} is not in (0, 1]")
    if len(set(vals)) != len(vals):
        raise NocoError(f"{bad}: repeated threshold")
    return vals


def _pct(x) -> str:
    return "   n/a" if x is None else f"{100 * x:6.2f}"


def _write_json(path: str, obj) -> None:
    from ..io import atomic_write_json

    try:
        atomic_write_json(path, obj, indent=1)
    except NocoError:  # noco.errors.OutputError: already names the file and the problem
        raise
    except OSError as e:
        raise NocoError(f"{path}: cannot write results ({e.strerror or e})") from None
    logging.getLogger("noco").info(f"wrote {path}")


def run_eval(args) -> int:
    from ..data.dataset import load_dataset

    log = logging.getLogger("noco")
    if args.labels and args.tiou:
        raise NocoError("--tiou applies to --predictions only (label quality uses tIoU 0.3 and 0.5)")
    tiou = parse_tiou(args.tiou if args.tiou is not None else DEFAULT_TIOU) if args.predictions else None
    ds = load_dataset(args.data)  # before importing torch (via instances): bad data fails fast
    from ..labels.instances import read_instances

    subset = args.subset or (ds.test_subset if args.predictions else ds.train_subset)
    videos = ds.subset(subset)
    ids = [v.id for v in videos]
    gt = ds.ground_truth(subset)
    path = args.predictions or args.labels
    kind = "predictions file" if args.predictions else "labels file"
    stats: dict = {}
    warnings: list[str] = []  # shown only when the file is for this dataset (else: one error line)
    dets = read_instances(path, ds.classes, require_score=bool(args.predictions), videos=ids, what=kind,
                          warn=warnings.append, stats=stats)
    check_same_dataset(path, kind, ds, subset, ids, dets, stats)
    for w in warnings:
        log.warning(w)
    if args.predictions:
        return _report_detection(args, ds, subset, gt, dets, tiou)
    return _report_labels(args, ds, subset, videos, gt, dets)


def check_same_dataset(path, kind: str, ds, subset: str, ids: list[str], dets: dict, stats: dict) -> None:
    """A file that names none of the subset's videos, or whose every label is outside the class
    list, was made for another dataset (or subset): scoring it would print a meaningless mAP 0."""
    if ids and not dets:
        n = stats.get("videos_in_file", 0)
        found = f"none of the {n} videos of this {kind} is" if n else f"this {kind} lists no video; none is"
        raise NocoError(f"{path}: {found} in subset {subset!r} of dataset {ds.root} ({len(ids)} videos, e.g. "
                        f"{ids[0]!r}): a file for another dataset or subset? (--subset picks the subset)")
    n_lab, n_unknown = stats.get("entries", 0), stats.get("unknown_labels", 0)
    if n_lab and n_unknown == n_lab:
        raise NocoError(f"{path}: none of the {n_lab} labels of this {kind} is a class of dataset {ds.root} "
                        f"({ds.num_classes} classes, e.g. {ds.classes[0]!r}): a file for another dataset?")


def _report_detection(args, ds, subset, gt, dets, tiou) -> int:
    from ..eval.detection import evaluate, named_averages

    res = evaluate(gt, dets, ds.num_classes, tiou)
    avgs = named_averages(res["tiou"], res["mAP"])
    n_pred = sum(len(d) for d in dets.values())
    print(f"detection mAP (%) on subset {subset}: {len(gt)} videos, {res['num_gt']} ground-truth instances, "
          f"{n_pred} predictions")
    print("tIoU    " + " ".join(f"{t:6.2f}" for t in res["tiou"]))
    print("mAP     " + " ".join(_pct(m) for m in res["mAP"]))
    print("average " + " | ".join([f"{k} {_pct(v).strip()}" for k, v in avgs.items()]
                                  + [f"all {_pct(res['average']).strip()}"]))
    if args.json:
        out = {
            "kind": "detection",
            "data": str(ds.root),
            "subset": subset,
            "predictions": str(args.predictions),
            "num_videos": len(gt),
            "num_gt": res["num_gt"],
            "num_predictions": n_pred,
            "tiou": res["tiou"],
            "mAP": res["mAP"],
            "average": res["average"],
            "averages": avgs,
            "per_class": {ds.classes[c]: ap for c, ap in res["per_class"].items()},
        }
        _write_json(args.json, out)
    return 0


def _report_labels(args, ds, subset, videos, gt, dets) -> int:
    from ..eval.labels import label_quality

    q = label_quality(gt, dets, {v.id: v.duration for v in videos}, ds.num_classes)
    print(f"pseudo-label quality on subset {subset}: {q['num_videos']} videos, {q['num_gt']} ground-truth "
          f"instances, {q['num_labels']} labels")
    print(f"frame mIoU (classes + background)  {_pct(q['mIoU'])} %   (background {_pct(q['background_iou']).strip()} %)")
    print(f"precision / recall @ tIoU 0.5       {_pct(q['precision'])} % / {_pct(q['recall']).strip()} %")
    se, ee = q["start_error"], q["end_error"]
    print(f"boundary error @ tIoU 0.3 (s)       start {'n/a' if se is None else f'{se:.3f}'}, "
          f"end {'n/a' if ee is None else f'{ee:.3f}'} ({q['boundary_matches']} matched)")
    rb, nb = q["recall_by_length"], q["gt_by_length"]
    print("recall @ 0.5 by GT length           "
          f"<2 s {_pct(rb['short']).strip()} % ({nb['short']}), 2-6 s {_pct(rb['medium']).strip()} % ({nb['medium']}), "
          f">6 s {_pct(rb['long']).strip()} % ({nb['long']})")
    print(f"merge rate                          {_pct(q['merge_rate'])} %   ({q['merged_labels']} labels)")
    print(f"labels of a class absent from their video  {q['absent_class_labels']}")
    if args.json:
        out = dict(q)
        out["frame_iou"] = {ds.classes[c]: v for c, v in q["frame_iou"].items()}
        out.update({"kind": "labels", "data": str(ds.root), "subset": subset, "labels": str(args.labels)})
        _write_json(args.json, out)
    return 0
