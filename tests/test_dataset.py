"""Dataset layout, validation (every problem at once), quirks, lazy features, W-TALC conversion."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from noco.cli import main as cli_main
from noco.data.dataset import Video, WeakVideo, expected_snippets, load_dataset
from noco.data.synth import build_annotations, generate
from noco.data.wtalc import convert_wtalc
from noco.errors import DataError, NocoError

D = 8


def make_dataset(root: Path, database: dict, *, feats: dict | None = None, cfg: dict | None = None,
                 skip_features=()) -> Path:
    """Hand-made dataset: 20-snippet float32 features for every video unless given in ``feats``."""
    root.mkdir(parents=True, exist_ok=True)
    config = {"fps": 30, "feat_stride": 4, "num_frames": 16, "train_subset": "Validation", "test_subset": "Test"}
    config.update(cfg or {})
    (root / "dataset.json").write_text(json.dumps(config))
    (root / "annotations.json").write_text(json.dumps({"database": database}))
    (root / "features").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for vid in database:
        if vid in skip_features or "/" in vid or ".." in vid:
            continue
        arr = (feats or {}).get(vid)
        if arr is None:
            entry = database[vid]
            dur = entry.get("duration", 1.0) if isinstance(entry, dict) else 1.0
            t = expected_snippets(dur, 30, 4, 16) if isinstance(dur, (int, float)) and dur > 0 else 20
            arr = rng.standard_normal((t, D)).astype(np.float32)
        if isinstance(arr, bytes):
            (root / "features" / f"{vid}.npy").write_bytes(arr)
        else:
            np.save(root / "features" / f"{vid}.npy", arr)
    return root


def video(subset="Validation", duration=10.0, anns=(), **extra) -> dict:
    v = {"subset": subset, "duration": duration,
         "annotations": [{"segment": list(s), "label": lab} for s, lab in anns]}
    v.update(extra)
    return v


def good_db() -> dict:
    return {"v_train": video("Validation", 10.0, [((1.0, 3.0), "Jump"), ((5.0, 6.0), "Run")]),
            "v_test": video("Test", 8.0, [((2.0, 4.0), "Run")])}


def problems_of(root) -> list[str]:
    with pytest.raises(DataError) as ei:
        load_dataset(root)
    return ei.value.problems


def find(problems, *parts) -> str:
    hits = [p for p in problems if all(x in p for x in parts)]
    assert hits, f"no problem mentions {parts}: {problems}"
    return hits[0]


# ------------------------------------------------------------------ happy paths
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate("tiny", tmp_path_factory.mktemp("tiny") / "ds", seed=0, dim=16, progress=False)


def test_loader_accepts_tiny_preset(tiny):
    ds = load_dataset(tiny)
    ann = build_annotations("tiny")["database"]
    assert ds.num_classes == 20 and ds.classes[4] == "CliffDiving" and ds.classes[7] == "Diving"
    assert ds.feat_dim == 16 and (ds.fps, ds.feat_stride, ds.num_frames) == (30.0, 4, 16)
    assert len(ds.subset("Validation")) == 6 and len(ds.subset("Test")) == 4
    assert [v.id for v in ds.subset("Test")] == sorted(v for v in ann if ann[v]["subset"] == "Test")
    for vid, v in ds.videos.items():
        assert len(v.labels) == len(ann[vid]["annotations"])
        assert v.num_snippets == int(np.floor((v.duration * v.fps - 16) / 4)) + 1
    assert ds.settings() == {"fps": 30.0, "feat_stride": 4, "num_frames": 16, "feat_dim": 16,
                             "classes": ds.classes}


def test_features_are_memory_mapped_float32(tiny):
    ds = load_dataset(tiny)
    vid = ds.subset("Test")[0].id
    f = ds.features(vid)
    assert isinstance(f, np.memmap) and f.dtype == np.float32 and not f.flags.writeable
    assert f.shape == (ds.videos[vid].num_snippets, 16)
    t = ds.features_tensor(vid)
    assert t.dtype == torch.float32 and torch.equal(t, torch.from_numpy(np.array(f)))
    with pytest.raises(NocoError, match="no video"):
        ds.features("nope")


def test_weak_view_has_no_segments(tiny):
    ds = load_dataset(tiny)
    weak = ds.weak("Validation")
    full = ds.subset("Validation")
    assert [w.id for w in weak] == [v.id for v in full]
    for w, v in zip(weak, full):
        assert isinstance(w, WeakVideo) and not isinstance(w, Video)
        assert not hasattr(w, "segments") and not hasattr(w, "labels")
        with pytest.raises(AttributeError):
            w.segments = v.segments  # frozen: nothing can be attached
        assert w.class_ids == tuple(sorted(set(v.labels.tolist())))
        assert (w.num_snippets, w.duration, w.fps) == (v.num_snippets, v.duration, v.fps)
    cliff = [w for w in weak if w.id == "video_validation_0000161"][0]
    assert cliff.class_ids == (4, 7)  # CliffDiving + Diving


def test_ground_truth_and_class_order(tmp_path):
    db = {"a": video("Validation", 10.0, []), "b": video("Test", 10.0, [])}
    db["a"]["annotations"] = [{"segment": [1, 2], "label": "Zeta", "label_id": 0},
                              {"segment": [3, 4.5], "label": "Alpha", "label_id": 1}]
    db["b"]["annotations"] = [{"segment": [0.5, 1], "label": "Alpha", "label_id": 1}]
    ds = load_dataset(make_dataset(tmp_path / "ids", db))
    assert ds.classes == ["Zeta", "Alpha"]  # by label_id
    gt = ds.ground_truth("Validation")
    assert list(gt) == ["a"]
    assert torch.allclose(gt["a"].segments, torch.tensor([[1.0, 2.0], [3.0, 4.5]]))
    assert gt["a"].labels.tolist() == [0, 1] and gt["a"].scores.tolist() == [1, 1]
    # a missing label_id anywhere -> sorted by name
    del db["b"]["annotations"][0]["label_id"]
    assert load_dataset(make_dataset(tmp_path / "names", db)).classes == ["Alpha", "Zeta"]
    # an explicit class list fixes the order (and may hold classes without instances)
    ds = load_dataset(make_dataset(tmp_path / "fixed", db, cfg={"classes": ["Alpha", "Other", "Zeta"]}))
    assert ds.classes == ["Alpha", "Other", "Zeta"] and ds.videos["a"].labels.tolist() == [2, 0]
    # inconsistent label ids are an error naming the field
    db["a"]["annotations"][1]["label_id"] = 5
    db["b"]["annotations"][0]["label_id"] = 1
    find(problems_of(make_dataset(tmp_path / "bad", db)), "annotations.json", "label_id", "Alpha")


def test_check_settings(tiny):
    ds = load_dataset(tiny)
    ds.check_settings(ds.settings())
    bad = dict(ds.settings(), feat_dim=2048)
    with pytest.raises(NocoError, match="feat_dim"):
        ds.check_settings(bad)


# ------------------------------------------------------------------ quirks
def test_real_quirks_survive(tmp_path, caplog):
    db = {
        # CliffDiving also labelled Diving with the same segment: both kept
        "cliff": video("Validation", 20.0, [((1, 4), "CliffDiving"), ((1, 4), "Diving")]),
        # past the duration: one clipped, one empty after clipping (dropped), one before 0 (clipped)
        "past": video("Test", 10.0, [((8, 12), "Diving"), ((11, 13), "Diving"), ((-1, 2), "Diving")]),
        "empty": video("Test", 5.0, []),  # no instances: kept
        "zero": video("Validation", 10.0, [((3, 3), "Diving"), ((4, 5), "Diving")]),  # zero length: dropped
    }
    with caplog.at_level(logging.INFO, logger="noco"):
        ds = load_dataset(make_dataset(tmp_path / "q", db))
    cl = ds.videos["cliff"]
    assert cl.labels.tolist() == [ds.classes.index("CliffDiving"), ds.classes.index("Diving")]
    assert np.array_equal(cl.segments, [[1, 4], [1, 4]])
    assert np.array_equal(ds.videos["past"].segments, [[8, 10], [0, 2]])
    assert len(ds.videos["empty"].labels) == 0 and ds.videos["empty"].segments.shape == (0, 2)
    assert np.array_equal(ds.videos["zero"].segments, [[4, 5]])
    assert ds.stats["instances_clipped"] == 2
    assert ds.stats["instances_dropped_after_clipping"] == 1
    assert ds.stats["instances_zero_length_dropped"] == 1
    assert ds.stats["videos_without_instances"] == 1
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("3 instances extend past [0, duration]: 2 clipped, 1 dropped" in m for m in msgs) == 1
    assert any("1 zero-length" in m for m in msgs)
    weak = {w.id: w for w in ds.weak("Test")}
    assert weak["past"].class_ids == (ds.classes.index("Diving"),) and weak["empty"].class_ids == ()
    assert ds.stats["videos_feature_length_mismatch"] == 0


def test_real_thumos_annotations_load(tmp_path):
    """The shipped THUMOS14 file itself (with tiny fake features): 30 past-duration instances dropped."""
    from importlib import resources

    real = json.loads(resources.files("noco").joinpath("resources/thumos14.json").read_text())
    root = tmp_path / "real"
    (root / "features").mkdir(parents=True)
    (root / "annotations.json").write_text(json.dumps(real))
    (root / "dataset.json").write_text(json.dumps({"fps": 30, "feat_stride": 4, "num_frames": 16,
                                                   "train_subset": "Validation", "test_subset": "Test"}))
    x = np.zeros((3, 2), np.float32)
    for vid in real["database"]:
        np.save(root / "features" / f"{vid}.npy", x)
    ds = load_dataset(root)
    assert len(ds.subset("Validation")) == 200 and len(ds.subset("Test")) == 212
    n = sum(len(v.labels) for v in ds.videos.values())
    assert ds.stats["instances_dropped_after_clipping"] == 30 and n == 3007 + 3358 - 30
    assert ds.classes[0] == "BaseballPitch" and ds.classes[19] == "VolleyballSpiking"
    assert ds.stats["videos_feature_length_mismatch"] == 412  # 3 snippets is far from the durations


# ------------------------------------------------------------------ bad input, one case at a time
def test_missing_dataset_json_and_annotations(tmp_path):
    with pytest.raises(DataError, match="dataset directory not found"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    find(problems_of(tmp_path / "empty"), "dataset.json", "no ActivityNet-style annotation file")
    root = make_dataset(tmp_path / "noann", good_db())
    (root / "annotations.json").unlink()
    find(problems_of(root), "annotations.json", "not found")


def test_dataset_json_fields(tmp_path):
    root = make_dataset(tmp_path / "cfg", good_db(), cfg={"feat_stride": 0, "fps": "30", "extra_key": 1})
    cfg = json.loads((root / "dataset.json").read_text())
    del cfg["num_frames"]
    (root / "dataset.json").write_text(json.dumps(cfg))
    probs = problems_of(root)
    find(probs, "dataset.json", "'feat_stride'", "positive integer")
    find(probs, "dataset.json", "'fps'", "positive number")
    find(probs, "dataset.json", "missing field 'num_frames'")
    find(probs, "dataset.json", "unknown field 'extra_key'")
    assert len(probs) == 4


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "ndim", "int", "object", "empty"])
def test_bad_feature_files(tmp_path, case):
    import io

    arr = np.ones((20, D), np.float32)
    if case == "text":
        arr = b"hello, not numpy"
    elif case == "truncated":
        buf = io.BytesIO()
        np.save(buf, arr)
        arr = buf.getvalue()[:-10]
    elif case == "ndim":
        arr = np.ones(20, np.float32)
    elif case == "int":
        arr = np.ones((20, D), np.int32)
    elif case == "object":
        buf = io.BytesIO()
        np.save(buf, np.array([np.ones(3), np.ones(4)], dtype=object), allow_pickle=True)
        arr = buf.getvalue()
    elif case == "empty":
        arr = np.ones((0, D), np.float32)
    root = make_dataset(tmp_path / case, good_db(), feats={"v_test": arr},
                        skip_features=("v_test",) if case == "missing" else ())
    probs = problems_of(root)
    assert len(probs) == 1
    expect = {"missing": "not found", "text": "not a readable .npy", "truncated": "truncated",
              "ndim": "2-D", "int": "floating point", "object": "floating point", "empty": "empty"}[case]
    find(probs, "features/v_test.npy", "video v_test", expect)
    if case in ("ndim", "int", "object", "empty"):
        find(probs, "field")


def test_feature_dim_mismatch(tmp_path):
    db = good_db()
    db["v3"] = video("Validation", 10.0, [((1, 2), "Jump")])
    root = make_dataset(tmp_path / "dim", db, feats={"v3": np.ones((20, D + 1), np.float32)})
    p = find(problems_of(root), "features/v3.npy", "video v3", "feature dim 9 differs from 8")
    assert "shape" in p


def test_transposed_features_named(tmp_path):
    """[D, T] files (same row count, varying columns) get one problem saying so, not one per video."""
    db = {f"v{k}": video("Validation" if k else "Test", 10.0 + 5 * k, [((1, 2), "Jump")]) for k in range(4)}
    feats = {f"v{k}": np.ones((16, expected_snippets(10.0 + 5 * k, 30, 4, 16)), np.float32) for k in range(4)}
    root = make_dataset(tmp_path / "tr", db, feats=feats)
    probs = problems_of(root)
    assert len(probs) == 1
    find(probs, "features", "[D, T]", "transpose")


def test_annotation_problems(tmp_path):
    cases = {
        "bad_order": (video("Validation", 10.0, [((5, 3), "Jump")]), ("video bad_order", "'segment'", "ends before")),
        "zero_dur": (video("Validation", 0.0, []), ("video zero_dur", "'duration'", "positive")),
        "neg_dur": (video("Test", -3.0, []), ("video neg_dur", "'duration'")),
        "no_dur": ({"subset": "Test", "annotations": []}, ("video no_dur", "missing field 'duration'")),
        "no_subset": ({"duration": 3.0, "annotations": []}, ("video no_subset", "'subset'", "missing")),
        "no_anns": ({"subset": "Test", "duration": 3.0}, ("video no_anns", "missing field 'annotations'")),
        "no_seg": ({"subset": "Test", "duration": 3.0, "annotations": [{"label": "Jump"}]},
                   ("video no_seg", "annotation 0", "missing field 'segment'")),
        "no_label": ({"subset": "Test", "duration": 3.0, "annotations": [{"segment": [1, 2]}]},
                     ("video no_label", "missing field 'label'")),
        "bad_fps": (video("Test", 3.0, [], fps=0), ("video bad_fps", "'fps'")),
        "dir/evil": (video("Test", 3.0, []), ("'dir/evil'", "path separator")),
        "..evil": (video("Test", 3.0, []), ("'..evil'", "'..'")),
    }
    for name, (entry, parts) in cases.items():
        db = good_db()
        db[name] = entry
        probs = problems_of(make_dataset(tmp_path / name.replace("/", "_").replace(".", "_"), db))
        assert len(probs) == 1, (name, probs)
        find(probs, "annotations.json", *parts)


def test_unknown_subset_and_label(tmp_path):
    root = make_dataset(tmp_path / "sub", good_db(), cfg={"train_subset": "Training"})
    p = find(problems_of(root), "dataset.json", "'train_subset'", "'Training'")
    assert "'Validation' (1 videos)" in p
    root = make_dataset(tmp_path / "lab", good_db(), cfg={"classes": ["Jump"]})
    find(problems_of(root), "annotations.json", "video v_train", "annotation 1", "'label'", "'Run'", "class list")


def test_many_problems_reported_together(tmp_path):
    db = good_db()
    db["v_train"]["annotations"].append({"segment": [4, 2], "label": "Jump"})
    db["v_bad_dur"] = video("Test", -1.0, [])  # and no feature file: both reported
    db["v_nofeat"] = video("Test", 5.0, [((1, 2), "Run")])
    db["v_int"] = video("Validation", 5.0, [((1, 2), "Run")])
    root = make_dataset(tmp_path / "many", db, feats={"v_int": np.ones((20, D), np.int64)},
                        skip_features=("v_nofeat", "v_bad_dur"))
    with pytest.raises(DataError) as ei:
        load_dataset(root)
    probs = ei.value.problems
    find(probs, "video v_train", "annotation 2", "'segment'")
    find(probs, "video v_bad_dur", "'duration'")
    find(probs, "v_nofeat.npy", "not found")
    find(probs, "v_int.npy", "floating point")
    find(probs, "v_bad_dur.npy", "video v_bad_dur", "not found")
    assert len(probs) == 5
    assert "5 problems" in str(ei.value) and str(ei.value).count("\n  - ") == 5


def test_nan_detected_when_read_and_by_check_values(tmp_path):
    bad = np.ones((20, D), np.float32)
    bad[7, 3] = np.nan
    worse = np.ones((20, D), np.float64)
    worse[2, 0] = np.inf
    db = good_db()
    db["v3"] = video("Test", 10.0, [])
    root = make_dataset(tmp_path / "nan", db, feats={"v_test": bad, "v3": worse})
    ds = load_dataset(root)  # headers only: loading does not read values
    assert ds.features("v_train").dtype == np.float32
    with pytest.raises(DataError, match=r"v_test\.npy: video v_test: .*NaN/inf.*snippet 7"):
        ds.features("v_test")
    with pytest.raises(DataError, match=r"v3\.npy.*snippet 2"):
        ds.features("v3")
    with pytest.raises(DataError) as ei:
        ds.check_values(chunk_rows=3, progress=False)
    assert len(ei.value.problems) == 2
    find(ei.value.problems, "v_test.npy", "1 NaN/inf", "snippet 7")
    find(ei.value.problems, "v3.npy", "snippet 2")


def test_float64_features_converted(tmp_path):
    x = np.random.default_rng(1).standard_normal((20, D))
    ds = load_dataset(make_dataset(tmp_path / "f64", good_db(), feats={"v_test": x}))
    f = ds.features("v_test")
    assert f.dtype == np.float32 and np.array_equal(f, x.astype(np.float32))


def test_cli_dataset_command(tiny, tmp_path, capsys):
    assert cli_main(["dataset", str(tiny), "--check"]) == 0
    assert "6 videos" in capsys.readouterr().out
    assert cli_main(["dataset", str(tmp_path / "none")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err


# ------------------------------------------------------------------ W-TALC conversion
def _obj(items) -> np.ndarray:
    a = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        a[i] = x
    return a


def make_wtalc(root: Path, names=("video_validation_1", "video_validation_2", "video_test_1"), bad_label=False):
    ann = root / "Toy-Annotations"
    ann.mkdir(parents=True)
    rng = np.random.default_rng(3)
    feats = [rng.standard_normal((t, 6)).astype(np.float32) for t in (30, 25, 40)]
    np.save(root / "Toy-I3D-JOINTFeatures.npy", _obj(feats), allow_pickle=True)
    np.save(ann / "videoname.npy", np.array([n.encode() for n in names]))
    np.save(ann / "subset.npy", np.array([b"validation", b"validation", b"test"]))
    np.save(ann / "classlist.npy", np.array([b"Jump", b"Run"]))
    np.save(ann / "duration.npy", np.array([[19.2], [16.0], [25.6]]))
    np.save(ann / "segments.npy", _obj([[[1.0, 3.5], [6.0, 9.0]], [[2.0, 4.0]], [[0.5, 1.5], [3.0, 20.0]]]),
            allow_pickle=True)
    labels = [["Run", "Jump"], ["Jump"], ["Run", "Swim" if bad_label else "Run"]]
    np.save(ann / "labels_all.npy", _obj(labels), allow_pickle=True)
    np.save(ann / "labels.npy", _obj([sorted(set(x)) for x in labels]), allow_pickle=True)  # video-level
    return feats


def test_convert_wtalc(tmp_path, capsys):
    src = tmp_path / "wtalc"
    feats = make_wtalc(src)
    out = tmp_path / "out"
    with pytest.raises(NocoError, match="--trust-pickle") as ei:
        convert_wtalc(src, out)
    assert "Toy-I3D-JOINTFeatures.npy" in str(ei.value) and "segments.npy" in str(ei.value)
    assert not out.exists()
    convert_wtalc(src, out, trust_pickle=True)
    ds = load_dataset(out)
    assert ds.classes == ["Jump", "Run"] and (ds.fps, ds.feat_stride, ds.num_frames) == (25.0, 16, 16)
    assert (ds.train_subset, ds.test_subset) == ("validation", "test")
    assert [v.id for v in ds.subset("validation")] == ["video_validation_1", "video_validation_2"]
    v1 = ds.videos["video_validation_1"]
    assert np.array_equal(v1.segments, [[1.0, 3.5], [6.0, 9.0]]) and v1.labels.tolist() == [1, 0]
    assert v1.duration == 19.2 and v1.num_snippets == 30
    assert np.array_equal(ds.features("video_test_1"), feats[2])
    assert np.array_equal(ds.videos["video_test_1"].segments, [[0.5, 1.5], [3.0, 20.0]])
    # CLI: refuses without --trust-pickle, converts with it (non-empty out needs --force)
    assert cli_main(["convert-wtalc", "--src", str(src), "--out", str(tmp_path / "o2")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert cli_main(["convert-wtalc", "--src", str(src), "--out", str(out), "--trust-pickle"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli_main(["convert-wtalc", "--src", str(src), "--out", str(out), "--trust-pickle", "--force",
                     "--fps", "30", "--feat-stride", "8"]) == 0
    ds = load_dataset(out)
    assert (ds.fps, ds.feat_stride) == (30.0, 8)


def test_convert_wtalc_bad_input(tmp_path):
    src = tmp_path / "badlabel"
    make_wtalc(src, bad_label=True)
    with pytest.raises(DataError) as ei:
        convert_wtalc(src, tmp_path / "o1", trust_pickle=True)
    find(ei.value.problems, "video_test_1", "'Swim'", "classlist.npy")
    src = tmp_path / "evil"
    make_wtalc(src, names=("../escape", "video_validation_2", "video_test_1"))
    with pytest.raises(DataError) as ei:
        convert_wtalc(src, tmp_path / "o2", trust_pickle=True)
    find(ei.value.problems, "videoname.npy", "'../escape'", "path separator")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "escape.npy").exists()
    (tmp_path / "nothing").mkdir()
    with pytest.raises(NocoError, match="no W-TALC annotation files"):
        convert_wtalc(tmp_path / "nothing", tmp_path / "o3")
