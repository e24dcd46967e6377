#!/usr/bin/env bash
# The prepared GPU check of issue #6 (run it once when a GPU machine is lent; <= 10 minutes on a
# recent data-centre GPU). Writes everything under ${OUT:-gpu-check}/:
#   run/              the cpu-preset pipeline on thumos14-sim, on CUDA (WTAL, row a, teacher, row g)
#   run_bf16.log      the same rows' detectors retrained with --precision bf16 (another run dir)
#   bench.json        `noco bench` at paper size on CUDA (videos/s, GFLOPs, s/step, memory)
#   nvidia-smi.txt    the card
# Then copy the numbers into docs/BENCHMARKS.md, marked with the card, the date and this script.
set -euo pipefail
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/torch.txt"
# 1. the README's main command on the GPU (same seed and preset as the CPU figures)
( time noco run --out "$OUT/run" --device cuda ) > "$OUT/run.log" 2>&1
# 2. bf16 detectors (WTAL and labels are reused from a copy of the run dir's cached stages)
cp -r "$OUT/run" "$OUT/run_bf16" && rm -rf "$OUT"/run_bf16/seed0/rows
( time noco run --out "$OUT/run_bf16" --device cuda --precision bf16 ) > "$OUT/run_bf16.log" 2>&1
# 3. inference speed, FLOPs, training step and memory at paper size
noco bench --size both --device cuda --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1
tail -n 30 "$OUT"/run.log "$OUT"/run_bf16.log "$OUT"/bench.txt
