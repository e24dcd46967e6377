"""``noco viz``: one video's timelines (ground truth, label files, predictions, a run's stages) as a PNG.

    noco viz --data DIR --video ID [--labels NAME=FILE ...] [--predictions FILE ...] --out fig.png
    noco viz --run W [--seed S] [--row R] --video ID --out fig.png      # the run's own sources
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import NocoError

log = logging.getLogger("noco")


# defaults of noco.viz (not imported here: it imports torch, which would slow every noco command)
DEFAULT_MIN_SCORE, DEFAULT_TOP, DEFAULT_POOL_TOP = 0.3, 50, 300


def register(sub) -> None:
    p = sub.add_parser(
        "viz", help="draw one video's timelines (ground truth, labels, predictions, a run's stages) as a PNG",
        description="One horizontal timeline per source for one video, one colour per class, x in seconds: "
                    "the ground truth, every --labels / --predictions file (ActivityNet result format), and "
                    "with --run W the run's WTAL proposals, baseline (a) and CALA (b) labels, the final "
                    "row's corrected labels and its student's predictions. Needs matplotlib.")
    p.add_argument("--data", metavar="DIR", help="dataset directory (default with --run: the run's dataset)")
    p.add_argument("--video", required=True, metavar="ID", help="video id (an id that starts with '-', as many ActivityNet ids do: --video=ID)")
    p.add_argument("--labels", action="append", default=[], metavar="NAME=FILE",
                   help="a label file to draw (score optional), repeatable; NAME is the track title")
    p.add_argument("--predictions", action="append", default=[], metavar="FILE",
                   help="a predictions file to draw (score >= --min-score, --top best), repeatable")
    p.add_argument("--run", type=Path, metavar="W", help="a run directory of `noco run` / `noco ablate`")
    p.add_argument("--seed", type=int, default=0, help="seed of the run to draw (default 0)")
    p.add_argument("--row", help="row whose labels/predictions to draw (default: the most corrected row present, g first)")
    p.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                   help=f"predictions below this score are not drawn (default {DEFAULT_MIN_SCORE})")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, help=f"at most this many predictions per track (default {DEFAULT_TOP})")
    p.add_argument("--pool-top", type=int, default=DEFAULT_POOL_TOP,
                   help=f"at most this many WTAL proposals, by score (default {DEFAULT_POOL_TOP})")
    p.add_argument("--title", help="figure title (default: video id and duration)")
    p.add_argument("--out", required=True, type=Path, metavar="FIG.png", help="output PNG")
    p.set_defaults(func=cmd_viz)


def _named(item: str) -> tuple[str, Path]:
    if "=" in item:
        name, path = item.split("=", 1)
        if not name.strip() or not path.strip():
            raise NocoError(f"--labels {item!r}: expected NAME=FILE")
        return name.strip(), Path(path.strip())
    return Path(item).stem, Path(item)


def cmd_viz(args) -> int:
    from ..data.dataset import load_dataset
    from ..labels.instances import Instances, read_instances
    from ..pipeline import ROWS
    from ..viz import Track, _mpl, check_video, ground_truth_track, run_tracks, top_instances, write_timeline

    if args.out.suffix.lower() != ".png":
        raise NocoError(f"--out {args.out}: the figure is a PNG, give a file name ending in .png")
    if args.top < 1 or args.pool_top < 1:
        raise NocoError("--top and --pool-top must be at least 1")
    if args.row is not None and args.row not in ROWS:
        raise NocoError(f"--row {args.row!r}: choose from {', '.join(ROWS)}")
    if args.run is not None and not args.run.is_dir():
        raise NocoError(f"--run {args.run}: no such run directory")
    _mpl()  # fail before any reading when matplotlib is missing
    if args.data:
        data = args.data
    elif args.run is not None:
        from ..viz import _load_run_dataset

        ds = _load_run_dataset(args.run)
        data = None
    else:
        raise NocoError("give --data DIR (or --run W, whose config names its dataset)")
    if data is not None:
        ds = load_dataset(data)
    check_video(ds, args.video)
    vid = args.video

    tracks = [ground_truth_track(ds, vid)]
    for item in args.labels:
        name, path = _named(item)
        got = read_instances(path, ds.classes, require_score=False, what="label file")
        if vid not in got:
            log.warning(f"noco: {path} has no entry for video {vid}; its track is empty")
        tracks.append(Track(name, got.get(vid, Instances.empty()), "labels"))
    for item in args.predictions:
        path = Path(item)
        got = read_instances(path, ds.classes, require_score=False, what="predictions file")
        if vid not in got:
            log.warning(f"noco: {path} has no entry for video {vid}; its track is empty")
        ins = top_instances(got.get(vid, Instances.empty()), args.top, args.min_score)
        tracks.append(Track(f"{path.stem} (score >= {args.min_score:g}, top {args.top})", ins, "pred"))
    if args.run is not None:
        found = run_tracks(args.run, vid, ds.classes, seed=args.seed, row=args.row, min_score=args.min_score,
                           top=args.top, pool_top=args.pool_top)
        if not found:
            log.warning(f"noco: {args.run} (seed {args.seed}) holds nothing for video {vid} yet")
        tracks += found
    v = ds.videos[vid]
    title = args.title or f"{vid} ({v.subset}, {v.duration:.1f} s)"
    path = write_timeline(args.out, tracks, ds.classes, v.duration, title)
    print(f"timeline of {vid} ({len(tracks)} tracks): {path}")
    return 0
