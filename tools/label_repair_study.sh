#!/bin/bash
# What each kind of pseudo-label noise costs the detector (docs/BENCHMARKS.md, "What the gap is made of").
#
#   tools/label_repair_study.sh DATA LABELS OUT SEED [VARIANT ...]
#
# LABELS: a training-subset label set (e.g. W/seed0/rows/b/labels.json, the CALA labels of row b).
# Each VARIANT is a '+'-joined subset of snap, drop-false, add-missed ('none' = the labels as they
# are): `python -m noco.eval.repair` removes that noise against the ground truth, then the row-b
# detector (cpu preset, HPM off, seed SEED) trains on the result and is scored on the test subset.
# Default variants: all eight combinations. Writes OUT/VARIANT/{labels.json,model,preds.json,eval.json}
# and prints one line per variant: label quality after the repair, test avg mAP 0.3:0.7.
set -euo pipefail
data=$1; labels=$2; out=$3; seed=$4; shift 4
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(none snap drop-false add-missed snap+drop-false snap+add-missed \
    drop-false+add-missed snap+drop-false+add-missed)
mkdir -p "$out"
for v in "${variants[@]}"; do
  d="$out/$v-s$seed"; mkdir -p "$d"
  flags=(); [ "$v" != none ] && for f in ${v//+/ }; do flags+=("--$f"); done
  python -m noco.eval.repair --data "$data" --labels "$labels" --out "$d/labels.json" "${flags[@]}" > "$d/repair.txt"
  [ -f "$d/model/done" ] || { python -m noco detector train --data "$data" --labels "$d/labels.json" --out "$d/model" \
      --seed "$seed" --no-hpm > "$d/train.log" 2>&1 && touch "$d/model/done"; }
  python -m noco detector predict --ckpt "$d/model/checkpoint.pt" --data "$data" --out "$d/preds.json" > /dev/null 2>&1
  python -m noco eval --data "$data" --predictions "$d/preds.json" --json "$d/eval.json" > /dev/null
  python - "$d" "$v" "$seed" <<'PY'
import json, sys
d, v, seed = sys.argv[1:]
e = json.load(open(f"{d}/eval.json"))
avg = e.get("averages") or {}
after = [l for l in open(f"{d}/repair.txt") if l.startswith("after")][0].strip()
print(f"{v} (seed {seed}): test avg mAP 0.3:0.7 {100 * avg['0.3:0.7']:.1f} | labels {after[7:]}")
PY
done
