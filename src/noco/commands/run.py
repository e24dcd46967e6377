"""`noco run` (one ablation row end to end, every stage cached in W) and `noco ablate` (all rows,
several seeds, a markdown table)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger("noco")


def _common(p) -> None:
    p.add_argument("--data", default=None,
                   help="dataset directory, or a synth preset name generated once into OUT/data/ "
                        "(default: the preset's data; thumos14-sim = real THUMOS14 annotations, simulated features)")
    p.add_argument("--out", required=True, type=Path, help="run directory W (stages are cached here)")
    from ..presets import names

    p.add_argument("--preset", default="cpu", metavar="NAME|FILE.yaml",
                   help=f"configuration: a shipped preset ({', '.join(names())}) or a YAML file such as a "
                        "previous run's W/config.yaml (default cpu = thumos14-cpu)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="fraction of training videos held out for epoch/threshold choices (never the test subset; default: the preset's, 0.1)")
    p.add_argument("--proposals", type=Path, default=None,
                   help="use another WTAL method's training-subset proposal pool (ActivityNet result format, "
                        "with scores) instead of training the built-in base model")
    p.add_argument("--wtal-predictions", type=Path, default=None,
                   help="that method's test-subset detections, for the WTAL row of the table (optional)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set wtal.epochs=5 (sections: wtal, detector, student, correction)")


def register(sub) -> None:
    p = sub.add_parser("run", help="run the NoCo pipeline (WTAL -> CALA -> teacher -> corrected student) end to end")
    _common(p)
    p.add_argument("--ablation", default="g", choices=["a", "b", "c", "d", "e", "f", "g", "oracle"],
                   help="which row of the ablation to run (default g = NoCo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="do not also run row a beside the chosen row")
    p.set_defaults(func=cmd_run)

    q = sub.add_parser("ablate", help="all ablation rows over several seeds; writes a markdown table")
    _common(q)
    q.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    q.add_argument("--rows", default="oracle,a,b,c,d,e,f,g", help="comma-separated rows")
    q.set_defaults(func=cmd_ablate)


def _setup(args):
    import torch

    from ..data.dataset import load_dataset
    from ..io import atomic_write_json, atomic_write_text, check_writable_dir
    from ..pipeline import make_pipeline_config, resolve_data

    cfg = make_pipeline_config(args.preset, args.sets, val_fraction=args.val_fraction)
    out = check_writable_dir(args.out)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data_dir = resolve_data(args.data or cfg.data, out, None if args.data else cfg.synth)
    ds = load_dataset(data_dir)
    atomic_write_json(out / "config.json", {"data": str(data_dir), "device": device, **cfg.to_dict()}, indent=1)
    import yaml

    atomic_write_text(out / "config.yaml", "# written by noco; reuse with --preset " + str(out / "config.yaml")
                      + "\n" + yaml.safe_dump(cfg.to_preset(str(data_dir)), sort_keys=False))
    return ds, cfg, device, out


def cmd_run(args) -> int:
    from ..io import atomic_write_bytes, atomic_write_json
    from ..pipeline import Pipeline, collect_metrics, results_table

    ds, cfg, device, out = _setup(args)
    t0 = time.perf_counter()
    pipe = Pipeline(ds, out, cfg, seed=args.seed, device=device, proposals=args.proposals,
                    wtal_predictions=args.wtal_predictions)
    rows = (["wtal"] if pipe.has_wtal_row else []) + ([] if args.no_baseline or args.ablation == "a" else ["a"]) + [args.ablation]
    report = {"data": str(ds.root), "seed": args.seed, "preset": args.preset, "rows": {}}
    for r in rows:
        report["rows"][r] = pipe.metrics(r)
    final = out / f"seed{args.seed}" / ("wtal" if args.ablation == "wtal" else f"rows/{args.ablation}") / "predictions.json"
    atomic_write_bytes(out / "predictions.json", final.read_bytes())
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["stage_seconds"] = {k: round(v, 1) for k, v in pipe.timings.items()}
    atomic_write_json(out / "report.json", report, indent=1)
    from ..viz import write_run_report_safely

    write_run_report_safely(out, dataset=ds, seed=args.seed, row=args.ablation)
    table = results_table(collect_metrics(out))
    from ..pipeline import simulated_note

    note = simulated_note(ds)
    note = f"\n({note})" if note else ""
    print(f"\nTest-subset mAP (%) on {ds.root}{note}\n{table}\n")
    print(f"predictions: {out / 'predictions.json'}\nreport: {out / 'report.json'}  ({report['seconds']:.0f} s)")
    return 0


def cmd_ablate(args) -> int:
    from ..io import atomic_write_text
    from ..pipeline import ROWS, Pipeline, collect_metrics, results_table
    from ..errors import NocoError

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise NocoError(f"--rows: unknown rows {bad}; choose from {', '.join(ROWS)}")
    if args.seeds < 1:
        raise NocoError("--seeds must be at least 1")
    ds, cfg, device, out = _setup(args)
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        pipe = Pipeline(ds, out, cfg, seed=seed, device=device, proposals=args.proposals,
                        wtal_predictions=args.wtal_predictions)
        if pipe.has_wtal_row:
            pipe.metrics("wtal")
        for r in rows:
            log.info(f"noco ablate: seed {seed}, row {r}")
            pipe.metrics(r)
    found = collect_metrics(out)
    found = {r: {s: m for s, m in v.items() if s < args.seeds} for r, v in found.items() if r in ["wtal", *rows]}
    table = results_table(found, markdown=True)
    from ..pipeline import simulated_note

    sim = simulated_note(ds)
    header = (f"# Ablation on {ds.root.name}\n\n"
              + (f"{sim}.\n\n" if sim else "")
              + f"Test-subset mAP (%), mean ± std over {args.seeds} seeds; preset `{args.preset}`; "
              f"label columns: quality of the training labels each row ends on (frame mIoU %, mean boundary "
              f"error s, recall of GT < 2 s at tIoU 0.5 %, merge rate %). {time.perf_counter() - t0:.0f} s.\n\n")
    atomic_write_text(out / "ablation.md", header + table + "\n")
    from ..viz import write_run_report_safely

    write_run_report_safely(out, dataset=ds, seeds=range(args.seeds), rows=rows, seed=0)
    print(header + table)
    return 0
