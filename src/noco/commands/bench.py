"""``noco bench``: speed and scale of the TriDet student against the WTAL base model.

    noco bench [--size paper|cpu|both] [--videos N] [--repeats 5] [--json OUT] [--device cpu|cuda]
               [--threads N] [--skip-train] [--skip-eval]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import NocoError

log = logging.getLogger("noco")

DEFAULT_VIDEOS = 3


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="inference speed, FLOPs, training step time, eval time and memory of student and WTAL model",
        description="Measures, in one process after a warm-up (median over --repeats), on the same "
                    "random-feature THUMOS-length videos: inference videos/s of the TriDet student "
                    "(forward + decoding + Soft-NMS) and of the WTAL base model (forward + multi-threshold "
                    "proposals + NMS, as `noco wtal predict`), their forward GFLOPs, training seconds per "
                    "step, `noco eval` seconds on 212 videos x 2000 predictions, peak memory and "
                    "parameter counts. Prints a table; --json writes everything with machine info.")
    p.add_argument("--size", default="both", choices=["paper", "cpu", "both", "tiny"],
                   help="paper: 2048-d features and the paper presets; cpu: 128-d and the cpu presets; "
                        "both (default); tiny: a seconds-long smoke run")
    p.add_argument("--videos", type=int, default=DEFAULT_VIDEOS, metavar="N",
                   help=f"random-feature videos per timed repeat (default {DEFAULT_VIDEOS})")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after the warm-up; medians are "
                                                          "reported (default 5)")
    p.add_argument("--snippets", type=int, default=None,
                   help="snippets per video (default 2304: TriDet's THUMOS max_seq_len)")
    p.add_argument("--json", metavar="OUT", help="write all numbers and machine info to this JSON file")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--skip-train", action="store_true", help="do not time training steps (slow at paper size on CPU)")
    p.add_argument("--skip-eval", action="store_true", help="do not time `noco eval`")
    p.add_argument("--eval-videos", type=int, default=212, help=argparse.SUPPRESS)
    p.add_argument("--eval-preds", type=int, default=2000, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help="seed of the random features and weights (default 0)")
    p.set_defaults(func=run_bench_cmd)


def run_bench_cmd(args) -> int:
    from ..bench import format_table, run_bench
    from ..detector.train import resolve_device
    from ..io import atomic_write_json, check_writable_dir

    sizes = ["cpu", "paper"] if args.size == "both" else [args.size]  # small first: ru_maxrss only grows
    if args.json:
        out = Path(args.json)
        if out.is_dir():
            raise NocoError(f"--json {out}: is a directory")
        check_writable_dir(out.parent if str(out.parent) else Path("."))
    res = run_bench(sizes, num_videos=args.videos, repeats=args.repeats, device=str(resolve_device(args.device)),
                    threads=args.threads, skip_train=args.skip_train, skip_eval=args.skip_eval,
                    eval_videos=args.eval_videos, eval_preds=args.eval_preds, snippets=args.snippets,
                    seed=args.seed, log=log.info)
    res["args"] = {k: v for k, v in vars(args).items() if k not in ("func", "command", "log_level")}
    print(format_table(res))
    if args.json:
        atomic_write_json(args.json, res, indent=2)
        log.info(f"bench: wrote {args.json}")
    return 0
