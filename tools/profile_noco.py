"""Profile the cpu preset with torch.profiler: detector training steps and inference on one video.

python tools/profile_noco.py DATA TRAINED_CHECKPOINT [--precision fp32|bf16] [--device cpu|cuda]
"""
import argparse
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

from noco.data.dataset import load_dataset
from noco.detector.config import make_config
from noco.detector.infer import detect, load_detector, video_meta
from noco.detector.train import StaticLabels, forward_precision, resolve_device, train_detector

p = argparse.ArgumentParser()
p.add_argument("data")
p.add_argument("checkpoint")
p.add_argument("--precision", default="fp32")
p.add_argument("--device", default="cpu")
p.add_argument("--videos", type=int, default=12, help="training videos profiled (batch 2: videos / 2 steps)")
a = p.parse_args()
torch.set_num_threads(1)
dev = resolve_device(a.device)
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
ds = load_dataset(a.data)


class FirstVideos:  # the dataset restricted to its first N training videos
    def __init__(self, ds, n):
        self._ds, self._n = ds, n

    def subset(self, name):
        vs = self._ds.subset(name)
        return vs[: self._n] if name == self._ds.train_subset else vs

    def __getattr__(self, k):
        return getattr(self._ds, k)


sub = FirstVideos(ds, a.videos)
cfg = make_config("cpu", {"epochs": 1, "warmup_epochs": 1})
with tempfile.TemporaryDirectory() as out:  # one warm-up epoch, then the profiled one
    train_detector(sub, StaticLabels(ds.ground_truth(ds.train_subset)), cfg, out, seed=0, log_every=0,
                   precision=a.precision, device=dev)
    with profile(activities=acts) as prof:
        train_detector(sub, StaticLabels(ds.ground_truth(ds.train_subset)), cfg, out + "/p", seed=0,
                       log_every=0, precision=a.precision, device=dev)
print(f"== training: {a.videos // 2} steps of batch 2 (cpu preset), {a.precision} on {dev}")
print(prof.key_averages().table(sort_by=key, row_limit=12))
phases = [e for e in prof.key_averages() if e.key.startswith("noco.train.")]
for e in sorted(phases, key=lambda e: -e.cpu_time_total):
    print(f"{e.key:24s} {e.cpu_time_total / 1e3:9.1f} ms total ({e.count} calls)")

model, _ = load_detector(a.checkpoint, dev)
v = max(ds.subset(ds.test_subset), key=lambda v: v.num_snippets)  # the longest test video
x = ds.features_tensor(v.id)
with forward_precision(model, a.precision):
    detect(model, x, video_meta(ds, v))  # warm-up
    with profile(activities=acts) as prof:
        dets = detect(model, x, video_meta(ds, v))
print(f"== inference: video {v.id}, {v.num_snippets} snippets ({v.duration:.0f} s), {len(dets)} detections")
print(prof.key_averages().table(sort_by=key, row_limit=12))
