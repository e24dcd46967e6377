"""`noco detector train | predict`: the TriDet detector (the student; the only network at inference)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("noco")


from ..io import progress_enabled as _progress  # noqa: E402


def _train(args) -> int:
    from ..data.dataset import load_dataset
    from ..detector.config import make_config
    from ..detector.train import StaticLabels, train_detector
    from ..labels.instances import read_instances
    from .wtal import _parse_set, _rank

    overrides = _parse_set(args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    cfg = make_config(args.preset, overrides)
    ds = load_dataset(args.data)
    train_ids = [v.id for v in ds.subset(ds.train_subset)]
    if args.labels:
        labels = read_instances(args.labels, ds.classes, require_score=False, videos=train_ids, what="label file")
        missing = [v for v in train_ids if v not in labels]
        if len(missing) == len(train_ids):
            from ..errors import NocoError

            raise NocoError(f"{args.labels}: no labels for any video of the training subset {ds.train_subset!r}")
        if missing:
            log.warning(f"{args.labels}: no entry for {len(missing)} of {len(train_ids)} training videos "
                        f"(trained as videos without instances)")
        what = f"labels from {args.labels}"
    else:
        labels = ds.ground_truth(ds.train_subset)
        what = f"ground truth of {ds.train_subset} (fully-supervised oracle)"
    log.info(f"detector train: {sum(len(v) for v in labels.values())} instances, {what}")
    path = train_detector(ds, StaticLabels(labels), cfg, args.out, init=args.init, device=args.device,
                          seed=args.seed, resume=args.resume, val_fraction=args.val_fraction,
                          hpm=not args.no_hpm, log_every=args.log_every, precision=args.precision,
                          tensorboard=args.tensorboard)
    if _rank() == 0:
        print(path)
    return 0


def _predict(args) -> int:
    from ..data.dataset import load_dataset
    from ..detector.infer import load_detector, predict_detector
    from ..detector.train import forward_precision, resolve_device
    from ..labels.instances import write_instances
    from .wtal import _only_rank0

    if _only_rank0("detector predict"):
        return 0
    ds = load_dataset(args.data)
    dev = resolve_device(args.device)
    model, ckpt = load_detector(args.ckpt, dev)
    ds.check_settings(ckpt["dataset"], what=f"checkpoint {args.ckpt}")
    with forward_precision(model, args.precision):  # bf16 forward; decoding and Soft-NMS in fp32
        dets = predict_detector(model, ds, args.subset, device=dev, progress=_progress())
    write_instances(args.out, dets, ds.classes, with_weight=False)
    log.info(f"detector predict: {sum(len(d) for d in dets.values())} detections on {len(dets)} videos -> {args.out}")
    return 0


def add_precision_argument(q, what: str) -> None:
    q.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help=f"{what} precision: bf16 runs the network's forward under bfloat16 autocast "
                        f"(the loss, Trident decoding and NMS stay fp32); fp32 is the reference")


def register(sub) -> None:
    from .wtal import add_device_argument, add_preset_argument

    p = sub.add_parser("detector", help="train or run the TriDet detector",
                       description="The TriDet detector (stage 2 student; the only network run at inference).")
    dsub = p.add_subparsers(dest="detector_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    t = dsub.add_parser("train", help="train TriDet from instance labels (default: the ground truth = oracle)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--data", required=True, help="dataset directory (dataset.json, or a standard layout: see README)")
    t.add_argument("--out", required=True, help="output directory (checkpoint.pt is written there every epoch)")
    t.add_argument("--labels", help="label file (ActivityNet result format, optional 'score' and 'weight'); "
                                    "default: the ground truth of the training subset")
    add_preset_argument(t, "detector")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config option (repeatable)")
    t.add_argument("--epochs", type=int, help="number of epochs (overrides the preset)")
    t.add_argument("--seed", type=int, default=0)
    add_device_argument(t)
    add_precision_argument(t, "training")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--init", help="checkpoint whose weights initialise the model (e.g. the teacher)")
    t.add_argument("--no-hpm", action="store_true", help="ignore instance weights (every weight 1)")
    t.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                   help="write TensorBoard scalars (losses, lr, held-out mAP) to DIR")
    t.add_argument("--val-fraction", type=float, default=0.0,
                   help="hold out this fraction of training videos and log mAP on them against their labels")
    t.add_argument("--log-every", type=int, default=50, help="log every N steps")
    t.set_defaults(func=_train)

    r = dsub.add_parser("predict", help="detect actions with a trained checkpoint (its EMA weights)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("--ckpt", required=True, help="checkpoint written by `noco detector train`")
    r.add_argument("--data", required=True, help="dataset directory")
    r.add_argument("--subset", help="subset to run on (default: the dataset's test subset)")
    r.add_argument("--out", required=True, help="output predictions file (ActivityNet result format)")
    add_device_argument(r)
    add_precision_argument(r, "inference")
    r.set_defaults(func=_predict)
