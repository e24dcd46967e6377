"""Distributed training with 2 gloo processes on CPU against one process with the same global batch.

One spawn runs every distributed scenario (the process start-up dominates the cost):
- TriDet on static labels: 2 x batch 1 reaches the weights of 1 x batch 2 (augmentations are seeded
  per global batch slot; drop-path draws per process, so it is off);
- the WTAL base model: 2 x batch 3 = 1 x batch 6 with uneven shards (3 + 2 videos), and 2 x batch
  2 = 1 x batch 4 with a last global batch that leaves rank 1 without a video (dropout off: it
  draws per process); a 2-process run resumed on 1 process continues as the single-process run;
- NoCo's online correction: each rank corrects the videos of its shard, the checkpoint holds the
  union of both ranks' corrections, the final label set equals the single process's, and a run
  stopped after epoch 1 on 2 processes resumes on 1 process to the uninterrupted result.
"""

import dataclasses
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from noco.correction.config import CorrectionConfig
from noco.correction.loop import OnlineCorrection
from noco.detector.config import make_config
from noco.detector.train import StaticLabels, train_detector
from noco.io import load_checkpoint
from noco.labels.instances import Instances

VIDEOS = ["video_validation_0000053", "video_validation_0000057", "video_validation_0000154",
          "video_validation_0000174"]
# Drop-path draws per process, so it is off; input noise and random crops stay on.
CFG = dict(input_dim=128, embed_dim=32, head_dim=32, mlp_dim=48, epochs=2, warmup_epochs=1, lr=5e-4,
           input_downsample=2, max_seq_len=256, drop_path=0.0, ema_decay=0.9)
# Every dropout draws per process: off, so that 2 processes can equal one.
WTAL = dict(hidden_dim=32, num_segments=64, epochs=2, lr=1e-3, input_dropout=0.0, snippet_dropout=0.0,
            feature_dropout=0.0)
# The teacher (2 epochs on the ground truth) is weak: its scores are ~0.03, so the thresholds are
# set on that scale to make AIC and MIC act on every video.
# video_classes off: this 2-epoch teacher's detections of other classes are what corrects some videos
CORR = dict(alpha=0.9, aic_conf=0.02, aic_iou=0.3, mic_conf=0.028, mic_iou=0.2, video_classes=False,
            hpm_normalize=True)
STOP_STEP = 2  # 4 videos / global batch 2 = 2 steps per epoch: stop at the first step of epoch 2


from conftest import Restricted as _Restricted  # noqa: E402


def _dataset(root):
    from noco.data.dataset import load_dataset

    return _Restricted(load_dataset(root), VIDEOS)


def _run(root, out, batch_size, source=None, init=None, resume=False):
    ds = _dataset(root)
    source = source if source is not None else StaticLabels(ds.ground_truth(ds.train_subset))
    return train_detector(ds, source, make_config("cpu", {**CFG, "batch_size": batch_size}), out, init=init,
                          seed=5, log_every=0, resume=resume)


def _wtal(root, out, batch_size, epochs=2, resume=False, val_fraction=0.2):
    from noco.data.dataset import load_dataset
    from noco.wtal.config import make_config as wtal_config
    from noco.wtal.train import train_wtal

    cfg = wtal_config("cpu", {**WTAL, "batch_size": batch_size, "epochs": epochs})
    return train_wtal(load_dataset(root), cfg, out, seed=3, val_fraction=val_fraction, resume=resume, progress=False)


class _Stop(Exception):
    pass


class _Recording(OnlineCorrection):
    """Writes each rank's own corrections (before the exchange) to ``log_dir``; stops at ``stop_at``."""

    stop_at: int | None = None
    log_dir: str | None = None
    syncs = 0

    def labels_for(self, video_ids, step):
        if self.stop_at is not None and step >= self.stop_at:
            raise _Stop
        return super().labels_for(video_ids, step)

    def sync_distributed(self, all_gather):
        if self.log_dir:
            rank = int(os.environ.get("RANK", "0"))
            mine = {v: {"step": self.last_corrected[v],
                        "state": {k: t.tolist() for k, t in self.labels[v].state().items()}} for v in self._dirty}
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.log_dir) / f"rank{rank}_sync{self.syncs}.json").write_text(json.dumps(mine))
        self.syncs += 1
        super().sync_distributed(all_gather)


def _initial(ds) -> dict[str, Instances]:
    """Noisy labels: ground truth with boundaries moved inwards by 20 % / 10 % of the length and
    every third instance missing, so that AIC has boundaries to move and MIC instances to add."""
    out = {}
    gts = ds.ground_truth(ds.train_subset)
    for vid in VIDEOS:
        g = gts[vid].select(torch.nonzero(torch.arange(len(gts[vid])) % 3 != 2).reshape(-1))
        length = g.segments[:, 1] - g.segments[:, 0]
        segs = g.segments + torch.stack((0.2 * length, -0.1 * length), dim=1)
        out[vid] = Instances(segs, g.labels, g.scores, torch.full((len(g),), 0.8))
    return out


def _online(root, teacher_ck, stop_at=None, log_dir=None) -> _Recording:
    from noco.detector.infer import detect, load_detector, video_meta

    ds = _dataset(root)
    teacher, _ = load_detector(teacher_ck)
    metas = {v.id: video_meta(ds, v) for v in ds.subset(ds.train_subset)}
    tcfg = dataclasses.replace(teacher.cfg, pre_nms_thresh=0.02)

    def detect_fn(model, feats, vid):
        return detect(model, feats, metas[vid], tcfg)

    src = _Recording(_initial(ds), teacher, detect_fn, features_fn=ds.features_tensor,
                     cfg=CorrectionConfig(**CORR))
    src.stop_at, src.log_dir = stop_at, log_dir
    return src


def _worker(rank, world, port, root, base, teacher_ck):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        _run(root, f"{base}/ddp", batch_size=1)
        _wtal(root, f"{base}/wtal_ddp", batch_size=3)  # 5 videos: shards of 3 and 2
        _wtal(root, f"{base}/wtal_idle_ddp", batch_size=2, val_fraction=0.0)  # 6 videos: 4, then 2 + none
        _run(root, f"{base}/online_ddp", 1, _online(root, teacher_ck, log_dir=f"{base}/online_log"), teacher_ck)
        try:
            _run(root, f"{base}/stopped_ddp", 1, _online(root, teacher_ck, stop_at=STOP_STEP), teacher_ck)
        except _Stop:
            pass
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
def runs(tiny_root, tmp_path_factory, one_thread):
    """Single-process references and one 2-process spawn running every distributed scenario."""
    base = tmp_path_factory.mktemp("ddp_runs")
    with pytest.MonkeyPatch.context() as mp_env:
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            mp_env.delenv(k, raising=False)
        single = _run(tiny_root, base / "single", batch_size=2)  # also the teacher of the online runs
        mp.spawn(_worker, args=(2, _free_port(), tiny_root, str(base), str(single)), nprocs=2, join=True)
        _wtal(tiny_root, base / "wtal_single", batch_size=6)
        _wtal(tiny_root, base / "wtal_idle_single", batch_size=4, val_fraction=0.0)
        _run(tiny_root, base / "online_single", 2, _online(tiny_root, single), single)
    return base


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _label_sets(ck: dict) -> dict[str, Instances]:
    return {v: Instances.from_state(s) for v, s in ck["label_source"]["labels"].items()}


def _assert_same_labels(a: dict[str, Instances], b: dict[str, Instances], atol=1e-4):
    assert a.keys() == b.keys()
    for v in a:
        assert len(a[v]) == len(b[v]), v
        assert torch.equal(a[v].labels, b[v].labels), v
        torch.testing.assert_close(a[v].segments, b[v].segments, atol=atol, rtol=0)
        torch.testing.assert_close(a[v].weights, b[v].weights, atol=atol, rtol=0)


def test_two_gloo_processes_match_one_process(runs):
    single = load_checkpoint(runs / "single" / "checkpoint.pt")
    ddp = load_checkpoint(runs / "ddp" / "checkpoint.pt")
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["step"] == single["step"] == 4  # 4 videos, global batch 2, 2 epochs
    assert ddp["loss_norm"] == pytest.approx(single["loss_norm"], rel=1e-9)
    # the logged loss is the global batch's (all-reduced), not rank 0's share
    for a, b in zip(ddp["history"], single["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    worst = max(_max_diff(single[key], ddp[key]) for key in ("model", "ema"))
    assert worst < 1e-5, worst
    # ... and training did move the weights (so the comparison is not between two untouched inits)
    from noco.detector.model import TriDet

    torch.manual_seed(5)
    fresh = TriDet(make_config("cpu", {**CFG, "num_classes": 20})).state_dict()
    assert float((single["model"]["cls_head.out.weight"] - fresh["cls_head.out.weight"]).abs().max()) > 1e-4


def test_wtal_two_processes_match_one_and_resume_on_one(runs, tiny_root):
    """Uneven shards (3 + 2 videos of a global batch of 5) carry weights 3/5 and 2/5: the gradient of
    one process with batch 6; rank 0 evaluates on the held-out video and writes the checkpoints."""
    single = load_checkpoint(runs / "wtal_single" / "last.pt")
    ddp = load_checkpoint(runs / "wtal_ddp" / "last.pt")
    assert (ddp["world_size"], single["world_size"]) == (2, 1)
    assert ddp["step"] == single["step"] == 2  # 5 training videos, global batch 6, 2 epochs
    assert ddp["train_videos"] == single["train_videos"] and len(single["train_videos"]) == 5
    assert (runs / "wtal_ddp" / "wtal.pt").is_file()
    assert _max_diff(single["model"], ddp["model"]) < 1e-5
    for a, b in zip(ddp["history"], single["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)  # the global batch's loss
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert len(ddp["rng"]["torch_ranks"]) == 2
    from noco.wtal.config import make_config as wtal_config
    from noco.wtal.model import WtalModel

    torch.manual_seed(3)
    fresh = WtalModel(128, 20, wtal_config("cpu", WTAL)).state_dict()
    assert _max_diff(single["model"], fresh) > 1e-3  # training moved the weights
    # resume both on ONE process with batch 6 (the same global batch): the same third epoch
    for name in ("wtal_single", "wtal_ddp"):
        shutil.copytree(runs / name, runs / f"{name}_3")
        _wtal(tiny_root, runs / f"{name}_3", batch_size=6, epochs=3, resume=True)
    a = load_checkpoint(runs / "wtal_single_3" / "last.pt")
    b = load_checkpoint(runs / "wtal_ddp_3" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and b["world_size"] == 1
    assert _max_diff(a["model"], b["model"]) < 1e-5
    assert _max_diff(a["model"], single["model"]) > 1e-4
    # batch_size may change on resume only when the global batch stays the same
    from noco.errors import NocoError

    with pytest.raises(NocoError, match="batch_size"):
        _wtal(tiny_root, runs / "wtal_ddp_3", batch_size=3, epochs=4, resume=True)


def test_wtal_rank_without_videos_contributes_nothing(runs):
    """6 videos, global batch 4 = 2 x 2: in the last step rank 1 has no video; its stand-in has weight 0."""
    single = load_checkpoint(runs / "wtal_idle_single" / "last.pt")
    ddp = load_checkpoint(runs / "wtal_idle_ddp" / "last.pt")
    assert ddp["step"] == single["step"] == 4 and ddp["val_videos"] == []
    assert _max_diff(single["model"], ddp["model"]) < 1e-5
    for a, b in zip(ddp["history"], single["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_online_correction_gathers_every_rank_and_matches_one_process(runs, tiny_root):
    single = load_checkpoint(runs / "online_single" / "checkpoint.pt")
    ddp = load_checkpoint(runs / "online_ddp" / "checkpoint.pt")
    initial = _initial(_dataset(tiny_root))
    final = _label_sets(ddp)
    assert final.keys() == set(VIDEOS)
    # the correction did something on every video (so the comparison is not between untouched sets)
    for v in VIDEOS:
        changed = len(final[v]) != len(initial[v]) or not torch.allclose(final[v].segments, initial[v].segments)
        assert changed, v
    # each rank corrected only the videos of its shards; the checkpoint (written by rank 0) holds the
    # union, each video as the rank that corrected it last left it
    logs = runs / "online_log"
    for sync in (0, 1):  # one exchange per epoch
        r0 = json.loads((logs / f"rank0_sync{sync}.json").read_text())
        r1 = json.loads((logs / f"rank1_sync{sync}.json").read_text())
        assert r0 and r1 and not (r0.keys() & r1.keys())
        assert r0.keys() | r1.keys() == set(VIDEOS)  # every video is in one batch per epoch
    for v, rec in {**r0, **r1}.items():  # the last exchange
        mine = Instances.from_state({k: torch.tensor(x) for k, x in rec["state"].items()})
        assert torch.equal(final[v].segments, mine.segments) and torch.equal(final[v].labels, mine.labels)
        assert torch.equal(final[v].weights, mine.weights)
        assert ddp["label_source"]["last_corrected"][v] == rec["step"]
    # ... and it equals the single process's set, corrections and statistics
    _assert_same_labels(final, _label_sets(single))
    assert ddp["label_source"]["last_corrected"] == single["label_source"]["last_corrected"]
    assert ddp["label_source"]["stats"] == single["label_source"]["stats"]
    assert ddp["label_source"]["stats"]["corrections"] == 8  # 4 videos x 2 epochs, each counted once
    # Adam divides by the root of tiny second moments: all-reduce rounding (~1e-7) of near-zero
    # gradients moves single weights by up to ~1e-5 (the weights themselves moved by ~1e-3)
    assert _max_diff(ddp["label_source"]["teacher"]["model"], single["label_source"]["teacher"]["model"]) < 5e-5
    assert _max_diff(ddp["model"], single["model"]) < 5e-5


def test_online_correction_resumes_on_another_world_size(runs, tiny_root):
    """2 processes x batch 1 stopped in epoch 2, resumed on 1 process x batch 2 (the same global
    batch): the uninterrupted single-process result, labels included."""
    stopped = load_checkpoint(runs / "stopped_ddp" / "checkpoint.pt")
    assert (stopped["epoch"], stopped["step"], stopped["world_size"]) == (1, 2, 2)
    # the epoch-1 checkpoint already holds both ranks' corrections
    assert set(stopped["label_source"]["last_corrected"]) == set(VIDEOS)
    teacher = runs / "single" / "checkpoint.pt"
    _run(tiny_root, runs / "stopped_ddp", 2, _online(tiny_root, teacher), teacher, resume=True)
    resumed = load_checkpoint(runs / "stopped_ddp" / "checkpoint.pt")
    single = load_checkpoint(runs / "online_single" / "checkpoint.pt")
    assert (resumed["epoch"], resumed["step"], resumed["world_size"]) == (2, 4, 1)
    _assert_same_labels(_label_sets(resumed), _label_sets(single))
    assert resumed["label_source"]["stats"] == single["label_source"]["stats"]
    assert _max_diff(resumed["model"], single["model"]) < 5e-5
    # another global batch is refused only when batch_size changed too (here: 1 x 1 process = 1 != 2)
    from noco.errors import NocoError

    with pytest.raises(NocoError, match="global batch"):
        _run(tiny_root, runs / "stopped_ddp", 1, _online(tiny_root, teacher), teacher, resume=True)


def test_sync_distributed_merge_rules():
    """Newest correction wins per video (ties: the lowest rank); statistics add up; exact round trip."""
    from torch import nn

    def source():
        init = {"a": Instances.create([[0.0, 1.0]], [0]), "b": Instances.create([[2.0, 3.0]], [1]),
                "c": Instances.create([[4.0, 5.0]], [0])}
        return OnlineCorrection(init, nn.Linear(1, 1), lambda m, v: Instances.empty(),
                                cfg=CorrectionConfig(video_classes=False))

    x = Instances.create([[0.1, 0.9], [1.0 / 3.0, 0.7]], [0, 1], [0.5, 0.25], [0.3, 1.0 / 7.0])
    y = Instances.create([[2.5, 2.75]], [1])
    z0, z1 = Instances.create([[4.0, 4.5]], [0]), Instances.create([[4.25, 5.0]], [0])
    r0, r1 = source(), source()
    # rank 0 corrected a (step 3) and c (step 5); rank 1 corrected b (step 4) and c (step 5)
    for src, vid, ins, step in ((r0, "a", x, 3), (r0, "c", z0, 5), (r1, "b", y, 4), (r1, "c", z1, 5)):
        src.labels[vid] = ins
        src.last_corrected[vid] = step
        src._dirty.add(vid)
        src.stats["corrections"] += 1
    payloads: list = []  # what all_gather_object would exchange, in rank order
    for src in (r0, r1):
        src.sync_distributed(lambda obj: payloads.append(obj) or [obj])
    json.dumps(payloads)  # plain data only
    for me in range(2):
        src = source()
        src.sync_distributed(lambda obj: payloads)
        for k in ("segments", "labels", "scores", "weights"):
            assert torch.equal(getattr(src.labels["a"], k), getattr(x, k)), k  # float32 round trip is exact
        assert torch.equal(src.labels["b"].segments, y.segments)
        assert torch.equal(src.labels["c"].segments, z0.segments)  # both at step 5: rank 0's copy
        assert src.last_corrected == {"a": 3, "b": 4, "c": 5}
        assert src.stats["corrections"] == 4 and not src._dirty
    # a later correction by rank 1 wins over an earlier one by rank 0
    late = [dict(payloads[0]), {"labels": {"c": payloads[1]["labels"]["c"]}, "last_corrected": {"c": 9},
                                "stats": {k: 0 for k in payloads[0]["stats"]}}]
    src = source()
    src.sync_distributed(lambda obj: late)
    assert torch.equal(src.labels["c"].segments, z1.segments) and src.last_corrected["c"] == 9
