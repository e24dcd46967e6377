"""Side by side: noco's evaluator against the widely used pandas-based ActivityNet evaluator.

The other evaluator is not part of noco (its code is not copied here): pass the path of
ActionFormer's ``libs/utils/metrics.py`` (a py3 adaptation of ActivityNet's ``eval_detection.py``;
needs pandas and joblib). Both evaluate the same input as ``noco bench`` (212 videos x 2,000
predictions, 20 classes, tIoU 0.1:0.7 by default) and the script prints both mAP rows, their largest
difference and the wall times (best of ``--repeats``).

    pip install pandas joblib
    python tools/compare_eval.py --official /path/to/actionformer_release/libs/utils/metrics.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", required=True, type=Path, help="path of ActionFormer's libs/utils/metrics.py")
    ap.add_argument("--videos", type=int, default=212)
    ap.add_argument("--preds", type=int, default=2000, help="predictions per video")
    ap.add_argument("--workers", type=int, default=1,
                    help="joblib workers of the pandas evaluator (default 1, as noco's 1 thread; more run as "
                         "threads in this process)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import pandas as pd
    import torch

    from noco.eval.bench import make_case
    from noco.eval.detection import evaluate

    if not hasattr(np, "float"):  # the other evaluator still spells float64 as np.float (NumPy < 1.24)
        np.float = float  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location("official_metrics", args.official)
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)

    torch.set_num_threads(1)
    tious = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    gt, preds = make_case(args.videos, args.preds, 20)
    with tempfile.TemporaryDirectory() as tmp:
        ant = Path(tmp) / "gt.json"
        db = {vid: {"subset": "test", "annotations": [{"segment": s, "label_id": int(c)} for s, c in
                                                       zip(ins.segments.tolist(), ins.labels.tolist())]}
              for vid, ins in gt.items()}
        ant.write_text(json.dumps({"database": db}))
        rows = [(vid, s, e, int(c), float(sc)) for vid, ins in preds.items()
                for (s, e), c, sc in zip(ins.segments.tolist(), ins.labels.tolist(), ins.scores.tolist())]
        df = pd.DataFrame(rows, columns=["video-id", "t-start", "t-end", "label", "score"])

        import joblib

        t_off, m_off = [], None
        backend = joblib.parallel_backend("threading", n_jobs=args.workers)
        backend.__enter__()
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            det = official.ANETdetection(str(ant), split="test", tiou_thresholds=np.array(tious),
                                         num_workers=args.workers)
            m_off = det.evaluate(df.copy(), verbose=False)[0]  # (mAP, average[, recall])
            t_off.append(time.perf_counter() - t0)
        backend.__exit__(None, None, None)
    t_noco, res = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = evaluate(gt, preds, 20, tious)
        t_noco.append(time.perf_counter() - t0)
    m_noco = np.array(res["mAP"])
    print(f"input: {args.videos} videos x {args.preds} predictions, 20 classes, tIoU {tious}")
    print("pandas-based mAP: " + " ".join(f"{x:.6f}" for x in m_off))
    print("noco mAP:         " + " ".join(f"{x:.6f}" for x in m_noco))
    print(f"largest difference: {np.abs(m_off - m_noco).max():.2e}")
    print(f"pandas-based: {min(t_off):.2f} s (best of {args.repeats}, {args.workers} workers); "
          f"noco: {min(t_noco):.3f} s (1 thread); speed-up {min(t_off) / min(t_noco):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
