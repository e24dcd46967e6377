"""Presets are YAML files shipped in the package; a run's resolved config.yaml is itself a preset."""

import dataclasses

import pytest
import yaml

from noco import presets
from noco.errors import NocoError
from noco.pipeline import make_pipeline_config


def test_shipped_presets_load_and_build_valid_configs():
    names = presets.names()
    assert {"cpu", "paper", "thumos14", "thumos14-cpu"} <= set(names)
    for name in names:
        cfg = make_pipeline_config(name)
        assert cfg.tiou and all(0 < t <= 1 for t in cfg.tiou)
        assert 0 <= cfg.val_fraction < 1


def test_aliases_are_the_thumos14_files():
    a, b = make_pipeline_config("cpu"), make_pipeline_config("thumos14-cpu")
    assert a.to_dict() | {"preset": ""} == b.to_dict() | {"preset": ""}
    assert make_pipeline_config("paper").detector.embed_dim == 512
    assert make_pipeline_config("cpu").detector.embed_dim == 128


def test_student_section_and_set_order():
    cfg = make_pipeline_config("paper")
    assert cfg.student.epochs == 20 and cfg.detector.epochs == 40       # the preset's student section
    cfg = make_pipeline_config("paper", ["detector.lr=3e-4", "student.epochs=5"])
    assert cfg.detector.lr == pytest.approx(3e-4) and cfg.student.lr == pytest.approx(3e-4)
    assert cfg.student.epochs == 5 and cfg.detector.epochs == 40


def test_resolved_config_round_trips(tmp_path):
    cfg = make_pipeline_config("cpu", ["correction.aic_conf=0.25", "wtal.epochs=3"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_preset("somewhere")))
    again = make_pipeline_config(str(path))
    for s in ("wtal", "detector", "student", "correction"):
        assert dataclasses.asdict(getattr(again, s)) == dataclasses.asdict(getattr(cfg, s)), s
    assert again.tiou == cfg.tiou and again.data == "somewhere"


@pytest.mark.parametrize("text, match", [
    ("detector:\n  embed_dimm: 64\n", r"detector\.embed_dimm.*did you mean detector\.embed_dim"),
    ("wtal: 3\n", "section 'wtal' must be a mapping"),
    ("tiou: [0.5, 2]\n", "'tiou' must be"),
    ("detectr: {}\n", "unknown key 'detectr'.*did you mean 'detector'"),
    ("a: [\n", "not valid YAML"),
])
def test_bad_preset_files_are_clear_errors(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(NocoError, match=match) as e:
        make_pipeline_config(str(path))
    if "YAML" not in match:
        assert str(path) in str(e.value)


def test_unknown_preset_name_suggests():
    with pytest.raises(NocoError, match="did you mean 'thumos14'"):
        make_pipeline_config("thumos15")
    with pytest.raises(NocoError, match="no such file"):
        make_pipeline_config("missing/file.yaml")


def test_stage_configs_coerce_yaml_and_command_line_spellings():
    from noco.correction.config import make_config as corr
    from noco.detector.config import make_config as det
    from noco.wtal.config import make_config as wtal

    d = det("cpu", {"pad_invariant": "false", "epochs": "3", "lr": 2, "regression_ranges": [[0, 4]] * 6})
    assert d.pad_invariant is False and d.epochs == 3 and d.lr == 2.0 and d.regression_ranges[0] == [0.0, 4.0]
    assert corr("cpu", {"refresh": "7", "use_aic": "no"}).refresh_every == 7
    assert wtal("cpu", {"epochs": 5.0}).epochs == 5
    for make, bad, match in ((det, {"lr": True}, "detector config option 'lr'"),
                             (det, {"epochs": 2.5}, "'epochs': cannot use 2.5"),
                             (wtal, {"cas_thresholds": ["x"]}, "WTAL config option 'cas_thresholds'"),
                             (corr, {"use_mic": "maybe"}, "correction config option 'use_mic'"),
                             (wtal, {"epochz": 3}, "unknown WTAL config option 'epochz'.*did you mean 'epochs'")):
        with pytest.raises(NocoError, match=match):
            make("cpu", bad)
