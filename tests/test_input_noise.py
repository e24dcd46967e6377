"""Input noise of the detector's training samples: absolute (input_noise) and relative to the
training features' std (input_noise_rel, measured by input_feature_std)."""

import logging

import pytest
import torch

from noco.detector.infer import downsample_features
from noco.detector.train import StaticLabels, input_feature_std, make_sample, train_detector

from test_detector import small_cfg  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_root):
    from noco.data.dataset import load_dataset

    return load_dataset(tiny_root)


def test_feature_std_is_the_std_of_the_network_input(tiny):
    videos = tiny.subset(tiny.train_subset)
    cfg = small_cfg()  # 2x down-sampling
    allx = torch.cat([downsample_features(torch.from_numpy(tiny.features(v.id).astype("float32")), 2) for v in videos])
    assert input_feature_std(tiny, videos, cfg) == pytest.approx(float(allx.double().std(unbiased=False)), rel=1e-6)
    # a sample: the first and the last video for max_videos=2
    two = torch.cat([downsample_features(torch.from_numpy(tiny.features(v.id).astype("float32")), 2)
                     for v in (videos[0], videos[-1])])
    assert input_feature_std(tiny, videos, cfg, max_videos=2) == pytest.approx(float(two.double().std(unbiased=False)),
                                                                                rel=1e-6)


def test_sample_noise_has_the_given_std(tiny):
    v = tiny.subset(tiny.train_subset)[0]
    ins = tiny.ground_truth(tiny.train_subset)[v.id]
    cfg = small_cfg(crop_ratio=[], max_seq_len=4096, input_noise=0.0)
    clean = make_sample(tiny, v, ins, cfg, torch.Generator().manual_seed(0))[0]
    noisy = make_sample(tiny, v, ins, cfg, torch.Generator().manual_seed(0), noise=0.5)[0]
    assert float((noisy - clean).std()) == pytest.approx(0.5, rel=0.05)
    assert torch.equal(make_sample(tiny, v, ins, cfg, None, noise=0.5)[0], clean)  # no generator: no noise


def test_training_uses_the_relative_noise(tiny, tmp_path, caplog, monkeypatch):
    """Every training sample gets input_noise + input_noise_rel x the features' std, and the log says so."""
    import noco.detector.train as train

    gt = tiny.ground_truth(tiny.train_subset)
    std = input_feature_std(tiny, tiny.subset(tiny.train_subset), small_cfg())
    seen = []

    def recording(*args, **kw):
        seen.append(kw.get("noise"))
        return make_sample(*args, **kw)

    monkeypatch.setattr(train, "make_sample", recording)
    with caplog.at_level(logging.INFO, logger="noco"):
        train_detector(tiny, StaticLabels(gt), small_cfg(epochs=1, input_noise=0.01, input_noise_rel=0.5), tmp_path / "r",
                       log_every=0)
    assert seen and all(n == pytest.approx(0.01 + 0.5 * std, rel=1e-9) for n in seen)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("input noise"))
    assert f"std {0.01 + 0.5 * std:.4g}" in line
