"""Dataset commands: ``noco synth`` (simulated benchmark), ``noco convert-wtalc`` (W-TALC layout ->
noco layout) and ``noco dataset`` (validate a dataset directory and print its summary)."""

from __future__ import annotations

import argparse

from ..errors import NocoError


def _kv(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, found {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def register(sub) -> None:
    from ..data.synth import DEFAULT_DIM, PRESETS

    p = sub.add_parser(
        "synth", help="write a simulated dataset (real THUMOS14 or ActivityNet v1.2 annotations, simulated "
                      "features)",
        description="Write a simulated dataset in the noco layout. thumos14-sim keeps every real THUMOS14 video "
                    "(200 Validation + 212 Test) with its real duration, fps and instances; anet12-sim keeps "
                    "every annotated ActivityNet v1.2 video (4441 training + 2198 validation, 100 classes) with "
                    "features on the W-TALC I3D grid (25 fps, 16-frame snippets, stride 16); tiny is a handful "
                    "of cropped videos for tests.")
    p.add_argument("--preset", required=True, choices=PRESETS)
    p.add_argument("--out", required=True, help="output directory (must be empty unless --force)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed -> same bytes")
    p.add_argument("--dim", type=int, default=DEFAULT_DIM, help=f"feature dimension (default {DEFAULT_DIM})")
    p.add_argument("--train-videos", type=int, default=0, metavar="N",
                   help="keep N train videos (deterministic, independent of --seed, every class covered when "
                        "N >= number of classes; default 0: all)")
    p.add_argument("--test-videos", type=int, default=0, metavar="M",
                   help="keep M test videos (same rule; default 0: all)")
    p.add_argument("--set", dest="overrides", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="override a simulation setting (a SimConfig field) of the preset's defaults, "
                        "e.g. --set noise_std=0.5")
    p.add_argument("--force", action="store_true", help="write into a non-empty output directory")
    p.add_argument("--check", action="store_true", help="re-load the result and scan it for NaN/inf")
    p.set_defaults(func=_synth)

    c = sub.add_parser(
        "convert-wtalc", help="convert a W-TALC feature folder (pickled object arrays) to the noco layout",
        description="Convert W-TALC files (<name>-I3D-JOINTFeatures.npy and the videoname/subset/segments/"
                    "labels/duration/classlist .npy annotation files) to the noco dataset layout.")
    c.add_argument("--src", required=True, help="W-TALC folder")
    c.add_argument("--out", required=True, help="output directory (must be empty unless --force)")
    c.add_argument("--trust-pickle", action="store_true",
                   help="allow loading pickled object arrays (can run arbitrary code: trusted files only)")
    c.add_argument("--features", help="the per-video feature file (default: the one *Features.npy under --src)")
    c.add_argument("--annotations", help="the annotation folder (default: --src or its one sub-folder "
                                          "holding videoname.npy)")
    c.add_argument("--fps", type=float, default=25.0, help="frames per second of the features (default 25)")
    c.add_argument("--feat-stride", type=int, default=16, help="frames between snippets (default 16)")
    c.add_argument("--num-frames", type=int, default=16, help="frames per snippet (default 16)")
    c.add_argument("--train-subset", help="subset name used for training (default: detected)")
    c.add_argument("--test-subset", help="subset name used for evaluation (default: detected)")
    c.add_argument("--force", action="store_true", help="write into a non-empty output directory")
    c.add_argument("--check", action="store_true", help="scan the converted features for NaN/inf")
    c.set_defaults(func=_convert)

    d = sub.add_parser("dataset", help="validate a dataset directory and print its summary",
                       description="Validate a dataset directory (dataset.json, annotations, feature headers) "
                                   "and print a summary; --check also scans every feature value for NaN/inf.")
    d.add_argument("root", help="dataset directory (holding dataset.json, or a standard layout without "
                                "one: the description is then inferred and logged)")
    d.add_argument("--check", action="store_true", help="scan every feature file for NaN/inf")
    d.add_argument("--write-description", action="store_true",
                   help="write the (inferred) description to ROOT/dataset.json, to check and edit; "
                        "an existing dataset.json is never overwritten")
    d.add_argument("--dev-split", type=float, metavar="FRACTION",
                   help="write a development dataset to --dev-out: FRACTION of the training videos held out "
                        "as its evaluation subset, the rest its training subset, no test video; run "
                        "noco run / noco ablate on it to choose settings without the test subset")
    d.add_argument("--dev-out", help="output directory of --dev-split (features are not copied)")
    d.add_argument("--seed", type=int, default=0, help="seed of --dev-split's random split (default 0)")
    d.set_defaults(func=_dataset)


def _summarise(root, check: bool):
    from ..data.dataset import load_dataset

    ds = load_dataset(root)
    if check:
        ds.check_values()
    print(ds.summary())
    return ds


def _synth(args) -> int:
    from ..data.synth import SimConfig, generate, preset_config

    cfg = SimConfig.from_overrides(dict(args.overrides), base=preset_config(args.preset))
    if args.dim < 1:
        raise NocoError(f"--dim must be a positive integer, found {args.dim}")
    if args.seed < 0:
        raise NocoError(f"--seed must be a non-negative integer, found {args.seed}")
    for flag, n in (("--train-videos", args.train_videos), ("--test-videos", args.test_videos)):
        if n < 0:
            raise NocoError(f"{flag} must be a non-negative integer (0: all videos), found {n}")
    out = generate(args.preset, args.out, seed=args.seed, dim=args.dim, force=args.force, config=cfg,
                   train_videos=args.train_videos, test_videos=args.test_videos)
    _summarise(out, args.check)
    return 0


def _convert(args) -> int:
    from ..data.wtalc import convert_wtalc

    out = convert_wtalc(args.src, args.out, trust_pickle=args.trust_pickle, fps=args.fps,
                        feat_stride=args.feat_stride, num_frames=args.num_frames,
                        train_subset=args.train_subset, test_subset=args.test_subset,
                        features=args.features, annotations=args.annotations, force=args.force)
    _summarise(out, args.check)
    return 0


def _dataset(args) -> int:
    from ..data.dataset import DATASET_FILE, load_dataset
    from ..io import atomic_write_json

    ds = _summarise(args.root, args.check)
    if args.write_description:
        if ds.description is not None:
            raise NocoError(f"{ds.description} exists already; it was not changed")
        path = atomic_write_json(ds.root / DATASET_FILE, ds.describe(), indent=1)
        print(f"wrote {path}")
    if args.dev_split is not None:
        from ..data.devsplit import write_dev_split

        if not args.dev_out:
            raise NocoError("--dev-split needs --dev-out DIR (where the development dataset is written)")
        out = write_dev_split(ds, args.dev_out, args.dev_split, args.seed)
        print(load_dataset(out).summary())
    elif args.dev_out:
        raise NocoError("--dev-out is only used with --dev-split FRACTION")
    return 0
