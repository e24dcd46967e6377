"""Runtime options of the computing commands: bf16 mixed precision of the detector (tested on the
CPU, where bfloat16 autocast works too) and device selection."""

import dataclasses

import pytest
import torch

from noco.detector.config import DetectorConfig, make_config
from noco.detector.infer import detect, load_detector, video_meta
from noco.detector.train import (StaticLabels, _check_resume, check_precision, float_outputs, forward_precision,
                                 resolve_device, train_detector)
from noco.errors import NocoError
from noco.io import load_checkpoint
from noco.ops.intervals import pairwise_tiou

VIDEOS = ["video_validation_0000053", "video_validation_0000154"]
# Whole videos every epoch (no crop, noise or drop-path) and the loss normalised by each step's own
# positive count (momentum 0): the same batch every step, so the loss must go down.
CFG = dict(embed_dim=32, head_dim=32, mlp_dim=48, epochs=8, warmup_epochs=1, lr=2e-3, input_downsample=4,
           max_seq_len=128, drop_path=0.0, crop_ratio=[], input_noise=0.0, ema_decay=0.9, batch_size=2,
           loss_norm_momentum=0.0)

pytestmark = pytest.mark.usefixtures("one_thread")

from conftest import Restricted as _Restricted  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_root):
    from noco.data.dataset import load_dataset

    return load_dataset(tiny_root)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory, one_thread):
    """The same 8 training steps in fp32 and in bf16: {precision: checkpoint path}."""
    ds = _Restricted(tiny, VIDEOS)
    out = {}
    for precision in ("fp32", "bf16"):
        out[precision] = train_detector(ds, StaticLabels(ds.ground_truth(ds.train_subset)), make_config("cpu", CFG),
                                        tmp_path_factory.mktemp(precision), seed=1, log_every=0, precision=precision)
    return out


def test_bf16_training_loss_is_finite_decreases_and_tracks_fp32(trained):
    ck16, ck32 = load_checkpoint(trained["bf16"]), load_checkpoint(trained["fp32"])
    l16 = [h["loss"] for h in ck16["history"]]
    l32 = [h["loss"] for h in ck32["history"]]
    assert len(l16) == 8 and all(torch.isfinite(torch.tensor(l16)))
    assert all(b < a for a, b in zip(l16, l16[1:])), l16  # the same batch every step: monotone here
    assert l16[-1] < 0.9 * l16[0]
    assert l16 == pytest.approx(l32, rel=0.02)
    assert l16 != l32  # bf16 autocast really ran (bit-equal losses would mean it did not)
    # a runtime choice: recorded with the run, not a config field (configs are cache fingerprints)
    assert (ck16["precision"], ck32["precision"]) == ("bf16", "fp32")
    assert ck16["config"] == ck32["config"]
    assert "precision" not in {f.name for f in dataclasses.fields(DetectorConfig)}
    # ... so a bf16 checkpoint resumes in fp32 (and the other way round)
    cfg = DetectorConfig.from_dict(ck16["config"])
    _check_resume(ck16, cfg, trained["bf16"], world=1, seed=1, hpm=True, val_fraction=0.0, precision="fp32",
                  log_it=False)
    with pytest.raises(NocoError, match="seed"):
        _check_resume(ck16, cfg, trained["bf16"], world=1, seed=2, hpm=True, val_fraction=0.0, precision="fp32",
                      log_it=False)


def test_bf16_inference_is_close_to_fp32(trained, tiny):
    model, _ = load_detector(trained["fp32"])
    k = 10
    for v in tiny.subset(tiny.test_subset):
        x = tiny.features_tensor(v.id)
        a = detect(model, x, video_meta(tiny, v))
        with forward_precision(model, "bf16"):
            b = detect(model, x, video_meta(tiny, v))
        assert len(a) >= k and len(b) >= k
        assert b.segments.dtype == torch.float32 and bool((b.segments[:, 1] <= v.duration + 1e-4).all())
        # every one of fp32's top-k has a same-class bf16 detection at tIoU >= 0.8
        iou = pairwise_tiou(a.segments[:k], b.segments) * (a.labels[:k, None] == b.labels[None])
        assert float(iou.max(dim=1).values.min()) >= 0.8, v.id
        torch.testing.assert_close(b.scores[:k], a.scores[:k], rtol=0.05, atol=0.0)
    assert not torch.equal(a.scores, b.scores)  # bf16 was in effect


def test_forward_precision_hooks(trained):
    model, _ = load_detector(trained["fp32"])
    cfg = model.cfg
    x = torch.randn(1, cfg.input_dim, 64, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 64, dtype=torch.bool)
    ref = model(x, mask)
    seen = []
    h = model.cls_head.out.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with forward_precision(model, "bf16"):
        out = model(x, mask)
        with pytest.raises(ValueError):  # not a multiple of the largest stride: the forward raises ...
            model(x[..., :63], mask[:, :63])
        assert not torch.is_autocast_enabled("cpu")  # ... and autocast is left off all the same
    h.remove()
    assert seen == [torch.bfloat16]  # the heads ran in bf16 (the failing call stopped before them)
    assert all(t.dtype == ref[k].dtype for k, t in out.items())  # fp32 (and bool) outputs
    assert out["cls"].dtype == torch.float32 and not torch.equal(out["cls"], ref["cls"])
    torch.testing.assert_close(out["cls"], ref["cls"], atol=0.1, rtol=0.05)
    # hooks are gone after the block: the forward is fp32 again, bit for bit
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert torch.equal(model(x, mask)["cls"], ref["cls"])
    with forward_precision(model, "fp32"):
        assert not model._forward_hooks and torch.equal(model(x, mask)["cls"], ref["cls"])
    # float_outputs leaves non-floating entries alone
    o = float_outputs({"a": torch.ones(2, dtype=torch.bfloat16), "m": torch.ones(2, dtype=torch.bool)})
    assert o["a"].dtype == torch.float32 and o["m"].dtype == torch.bool


def test_precision_values_are_checked(tiny, tmp_path):
    with pytest.raises(NocoError, match="precision"):
        check_precision("fp16")
    ds = _Restricted(tiny, VIDEOS)
    with pytest.raises(NocoError, match="precision"):
        train_detector(ds, StaticLabels({}), make_config("cpu", CFG), tmp_path, precision="fp16")
    assert not (tmp_path / "checkpoint.pt").exists()
    from noco.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["detector", "predict", "--ckpt", "c", "--data", "d", "--out", "o",
                                   "--precision", "fp16"])
    assert e.value.code == 2
    args = build_parser().parse_args(["detector", "train", "--data", "d", "--out", "o", "--precision", "bf16"])
    assert args.precision == "bf16" and args.device is None


# ------------------------------------------------------------------------------------ devices
def test_resolve_device():
    cuda = torch.cuda.is_available()
    assert resolve_device(None) == torch.device("cuda" if cuda else "cpu")
    assert resolve_device("auto") == resolve_device(None)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(NocoError, match="not a torch device"):
        resolve_device("cdua")
    with pytest.raises(NocoError, match="CUDA"):
        resolve_device("cuda:99" if cuda else "cuda")


@pytest.mark.parametrize("argv", [
    ["wtal", "train", "--data", "D", "--out", "W"],
    ["wtal", "predict", "--data", "D", "--ckpt", "C", "--out", "P"],
    ["wtal", "propose", "--data", "D", "--ckpt", "C", "--out", "P"],
    ["detector", "train", "--data", "D", "--out", "W"],
    ["detector", "predict", "--data", "D", "--ckpt", "C", "--out", "P"],
])
def test_every_computing_command_defaults_to_cuda_when_available(argv):
    from noco.cli import build_parser

    assert build_parser().parse_args(argv).device is None  # resolved by resolve_device(None)


def test_bad_device_is_one_line_error(trained, tiny, tmp_path, capsys):
    from noco.cli import main

    rc = main(["detector", "predict", "--data", str(tiny.root), "--ckpt", str(trained["fp32"]),
               "--out", str(tmp_path / "p.json"), "--device", "cdua"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("noco: error: --device 'cdua'")
    if not torch.cuda.is_available():
        rc = main(["wtal", "train", "--data", str(tiny.root), "--out", str(tmp_path / "w"), "--device", "cuda",
                   "--epochs", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err[-1] == ("noco: error: --device cuda: CUDA is not available on this machine "
                                       "(use --device cpu)")


def test_bf16_predict_command_writes_close_detections(trained, tiny, tmp_path):
    from noco.cli import main
    from noco.labels.instances import read_instances

    for p in ("fp32", "bf16"):
        assert main(["detector", "predict", "--data", str(tiny.root), "--ckpt", str(trained["fp32"]), "--out",
                     str(tmp_path / f"{p}.json"), "--precision", p, "--device", "cpu"]) == 0
    a = read_instances(tmp_path / "fp32.json", tiny.classes)
    b = read_instances(tmp_path / "bf16.json", tiny.classes)
    assert a.keys() == b.keys() == {v.id for v in tiny.subset(tiny.test_subset)}
    for v in a:
        iou = pairwise_tiou(a[v].segments[:5], b[v].segments) * (a[v].labels[:5, None] == b[v].labels[None])
        assert float(iou.max(dim=1).values.min()) >= 0.8
