"""Distributed training: 2 gloo processes on CPU with per-process batch 1 reach the same weights as
one process with batch 2 (same global batch; augmentations are seeded per global batch slot)."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from noco.detector.config import make_config
from noco.detector.train import StaticLabels, train_detector
from noco.io import load_checkpoint

VIDEOS = ["video_validation_0000053", "video_validation_0000057", "video_validation_0000154",
          "video_validation_0000174"]
# Drop-path draws per process, so it is off; input noise and random crops stay on.
CFG = dict(input_dim=128, embed_dim=32, head_dim=32, mlp_dim=48, epochs=2, warmup_epochs=1, lr=5e-4,
           input_downsample=2, max_seq_len=256, drop_path=0.0, ema_decay=0.9)


from conftest import Restricted as _Restricted  # noqa: E402


def _run(root, out, batch_size):
    from noco.data.dataset import load_dataset

    ds = _Restricted(load_dataset(root), VIDEOS)
    gt = ds.ground_truth(ds.train_subset)
    return train_detector(ds, StaticLabels(gt), make_config("cpu", {**CFG, "batch_size": batch_size}), out,
                          seed=5, log_every=0)


def _worker(rank, world, port, root, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        _run(root, out, batch_size=1)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from noco.data.synth import generate

    return str(generate("tiny", tmp_path_factory.mktemp("tiny_ddp") / "data", seed=0))


def test_two_gloo_processes_match_one_process(tiny_root, tmp_path, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    single = load_checkpoint(_run(tiny_root, tmp_path / "single", batch_size=2))
    mp.spawn(_worker, args=(2, _free_port(), tiny_root, str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["step"] == single["step"] == 4  # 4 videos, global batch 2, 2 epochs
    assert ddp["loss_norm"] == pytest.approx(single["loss_norm"], rel=1e-9)
    worst = 0.0
    for key in ("model", "ema"):
        for name, t in single[key].items():
            worst = max(worst, float((t - ddp[key][name]).abs().max()))
    assert worst < 1e-5, worst
    # ... and training did move the weights (so the comparison is not between two untouched inits)
    from noco.detector.model import TriDet

    torch.manual_seed(5)
    fresh = TriDet(make_config("cpu", {**CFG, "num_classes": 20})).state_dict()
    assert float((single["model"]["cls_head.out.weight"] - fresh["cls_head.out.weight"]).abs().max()) > 1e-4
