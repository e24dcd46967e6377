"""`noco wtal train | predict | propose`: the weakly-supervised base model (stage 1)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("noco")


from ..io import progress_enabled as _progress  # noqa: E402


def _threads(args) -> None:
    if args.threads is not None:
        import torch

        from ..errors import NocoError

        if args.threads < 1:
            raise NocoError(f"--threads must be >= 1, found {args.threads}")
        torch.set_num_threads(args.threads)


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    from ..detector.train import dist_info

    return dist_info()[1]


def _only_rank0(what: str) -> bool:
    """Under torchrun, prediction-like commands run on rank 0 only; True when this rank should skip."""
    from ..detector.train import dist_info

    world, rank, _ = dist_info()
    if world > 1 and rank > 0:
        log.info(f"{what}: not distributed; rank {rank} leaves it to rank 0")
        return True
    return False


def add_device_argument(q) -> None:
    """``--device`` of a computing command: default None = CUDA when available, else the CPU."""
    q.add_argument("--device", default=None,
                   help="torch device: cpu, cuda or cuda:N (default: cuda when available, else cpu; "
                        "under torchrun each process uses cuda:LOCAL_RANK)")


def add_preset_argument(q, section: str) -> None:
    """``--preset``: a shipped preset name or a YAML file (its ``section`` is used), as `noco run`."""
    from ..presets import names

    q.add_argument("--preset", default="cpu", metavar="NAME|FILE.yaml",
                   help=f"configuration: a shipped preset ({', '.join(names())}) or a YAML file (its "
                        f"'{section}' section), e.g. a run's W/config.yaml (default cpu = thumos14-cpu)")


def _parse_set(items: list[str] | None) -> dict:
    import yaml

    from ..errors import NocoError

    out = {}
    for item in items or []:
        if "=" not in item:
            raise NocoError(f"--set expects KEY=VALUE, found {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise NocoError(f"--set {k}: cannot parse value {v!r}") from None
    return out


def _train(args) -> int:
    _threads(args)
    from ..data.dataset import load_dataset
    from ..wtal.config import make_config
    from ..wtal.train import train_wtal

    overrides = _parse_set(args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    cfg = make_config(args.preset, overrides)
    ds = load_dataset(args.data)
    path = train_wtal(ds, cfg, args.out, device=args.device, seed=args.seed, val_fraction=args.val_fraction,
                      resume=args.resume, progress=_progress(), tensorboard=args.tensorboard)
    if _rank() == 0:
        print(path)
    return 0


def _infer(args, what: str, fn):
    """Shared by predict and propose: rank 0 only, then ``fn`` over the subset, written to --out."""
    _threads(args)
    from ..data.dataset import load_dataset
    from ..labels.instances import write_instances

    if _only_rank0(f"wtal {what}"):
        return None, None
    ds = load_dataset(args.data)
    dets = fn(args.ckpt, ds, args.subset, device=args.device, progress=_progress(), overrides=_parse_set(args.set))
    write_instances(args.out, dets, ds.classes, with_weight=False)
    log.info(f"wtal {what}: {sum(len(d) for d in dets.values())} {'detections' if what == 'predict' else 'proposals'} "
             f"on {len(dets)} videos -> {args.out}")
    return ds, dets


def _predict(args) -> int:
    from ..wtal.train import predict_wtal

    _infer(args, "predict", predict_wtal)
    return 0


def _propose(args) -> int:
    from ..labels.instances import write_instances
    from ..wtal.train import filter_baseline, propose_wtal

    ds, pool = _infer(args, "propose", propose_wtal)
    if pool is None:
        return 0
    if args.baseline_out:
        base = filter_baseline(pool, conf=args.baseline_conf, nms=args.baseline_nms)
        write_instances(args.baseline_out, base, ds.classes)
        log.info(f"wtal propose: baseline labels (conf > {args.baseline_conf}, NMS {args.baseline_nms}): "
                 f"{sum(len(d) for d in base.values())} instances -> {args.baseline_out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("wtal", help="weakly-supervised base model (ASM-Loc base): train, predict, propose",
                       description="Stage 1: the WTAL base model trained from video-level labels only.")
    wsub = p.add_subparsers(dest="wtal_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    def common(q, ckpt: bool):
        q.add_argument("--data", required=True, type=Path, help="dataset directory (dataset.json, or a standard layout: see README)")
        if ckpt:
            q.add_argument("--ckpt", required=True, type=Path, help="WTAL checkpoint (W/wtal.pt)")
        add_device_argument(q)
        q.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a WTAL config option (repeatable), e.g. --set hidden_dim=512")
        q.add_argument("--threads", type=int, default=None,
                       help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy machine)")

    t = wsub.add_parser("train", help="train on the training subset's video-level labels",
                        description="Train the WTAL base model. Writes W/wtal.pt (selected epoch) and "
                                    "W/last.pt (latest epoch, for --resume). Under torchrun (see "
                                    "docs/SCALING.md) trains with DistributedDataParallel; the batch size "
                                    "is per process.")
    common(t, ckpt=False)
    t.add_argument("--out", required=True, type=Path, help="output directory W")
    add_preset_argument(t, "wtal")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                   help="write TensorBoard scalars (train loss, held-out loss and video mAP) to DIR")
    t.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of training videos held out to select the epoch (default 0.1)")
    t.add_argument("--resume", action="store_true", help="continue from W/last.pt")
    t.add_argument("--epochs", type=int, default=None, help="override the preset's epoch count")
    t.set_defaults(func=_train)

    pr = wsub.add_parser("predict", help="detections (post-NMS) in ActivityNet result format",
                         description="Detections on a subset (default: the test subset), for `noco eval`.")
    common(pr, ckpt=True)
    pr.add_argument("--out", required=True, type=Path, help="output result file P.json")
    pr.add_argument("--subset", default=None, help="subset to predict (default: the dataset's test subset)")
    pr.set_defaults(func=_predict)

    po = wsub.add_parser("propose", help="dense pre-NMS proposal pool O on the training subset",
                         description="The dense proposal pool (pre-NMS, restricted to each video's known "
                                     "classes) that CALA consumes; scores are confidences in [0, 1].")
    common(po, ckpt=True)
    po.add_argument("--out", required=True, type=Path, help="output pool file O.json")
    po.add_argument("--subset", default=None, help="subset (default: the dataset's training subset)")
    po.add_argument("--baseline-out", type=Path, default=None,
                    help="also write the baseline labels (row a: conf > 0.5 after NMS) to this file")
    po.add_argument("--baseline-conf", type=float, default=0.5)
    po.add_argument("--baseline-nms", type=float, default=0.45)
    po.set_defaults(func=_propose)
