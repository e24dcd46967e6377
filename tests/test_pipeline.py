"""The whole pipeline as a user runs it: `noco run` on the tiny simulated dataset, in a subprocess."""

import json
import subprocess
import sys

import pytest

# a 3-epoch WTAL model on tiny reaches confidence ~0.16: thresholds of 0.1 give the detectors labels
FAST = ["--set", "wtal.epochs=3", "--set", "detector.epochs=2", "--set", "student.epochs=1",
        "--set", "correction.cala_conf=0.1", "--set", "correction.baseline_conf=0.1"]


def _noco(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "noco", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return tiny_root


def test_run_end_to_end_and_cache(tiny, tmp_path):
    out = tmp_path / "W"
    r = _noco("run", "--data", str(tiny), "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    preds = json.loads((out / "predictions.json").read_text())
    assert preds["results"], "no detections written"
    report = json.loads((out / "report.json").read_text())
    assert set(report["rows"]) == {"wtal", "a", "g"}
    for row in report["rows"].values():
        assert len(row["mAP"]) == 7 and all(0.0 <= x <= 1.0 for x in row["mAP"])
    assert "g: f + HPM (NoCo)" in r.stdout and "WTAL base model" in r.stdout
    # the online correction wrote the label set it ended on
    assert (out / "seed0" / "rows" / "g" / "labels.json").is_file()
    # the resolved configuration is saved, as a preset file the next run can be given
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"] == str(tiny) and saved["wtal"]["epochs"] >= 1
    # a second run (another row) reuses every cached stage: no training happens again
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    r2 = _noco("run", "--data", str(tiny), "--out", str(out), "--ablation", "b", *FAST)
    assert r2.returncode == 0, r2.stderr[-3000:]
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after
    assert "b: + CALA" in r2.stdout
    # correction.teacher_hpm: row g gets its own teacher, trained on row b's labels with the HPM loss;
    # row b (the teacher of rows c-f) is left as it was
    import torch

    r3 = _noco("run", "--data", str(tiny), "--out", str(out), *FAST, "--set", "correction.teacher_hpm=true")
    assert r3.returncode == 0, r3.stderr[-3000:]
    rows = out / "seed0" / "rows"
    assert {p: p.stat().st_mtime_ns for p in before if "rows/b/" in p.as_posix()} == \
        {p: t for p, t in before.items() if "rows/b/" in p.as_posix()}
    assert (rows / "g" / "model.pt").stat().st_mtime_ns != before[rows / "g" / "model.pt"]  # retrained
    ck = lambda r: torch.load(rows / r / "model.pt", map_location="cpu", weights_only=True)
    assert ck("bh")["hpm"] is True and ck("b")["hpm"] is False
    assert "teacher of row bh" in r3.stderr


def test_run_rejects_unknown_set_key(tiny, tmp_path):
    r = _noco("run", "--data", str(tiny), "--out", str(tmp_path / "W"), "--set", "wtal.epocs=3")
    assert r.returncode == 2
    assert "wtal.epochs" in r.stderr and "Traceback" not in r.stderr


def test_no_pseudo_label_is_an_error_not_a_silent_detector(tiny, tmp_path):
    """A confidence scale that leaves no label above the threshold stops the run with what to change."""
    r = _noco("run", "--data", str(tiny), "--out", str(tmp_path / "W"), *FAST, "--set", "wtal.oic_scale=1000")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no pseudo-label to train a detector on" in r.stderr and "wtal.oic_scale" in r.stderr
    # row a has its own threshold, and both the problem and the hint name it
    assert "label set 'a'" in r.stderr and "correction.baseline_conf = 0.1" in r.stderr
    assert "and correction.baseline_conf, or pass" in r.stderr and "{setting}" not in r.stderr
    assert not (tmp_path / "W" / "seed0" / "labels" / "a.json").exists()


def test_external_base_model_proposals(tiny, tmp_path):
    """Another WTAL method's proposals (ActivityNet result format) replace the built-in base model."""
    import torch

    from noco.data.dataset import load_dataset
    from noco.labels.instances import Instances, write_instances

    ds = load_dataset(tiny)
    gt = ds.ground_truth(ds.train_subset)
    # a "method" whose proposals are the ground truth widened by 0.5 s, scored 0.9, plus a weak duplicate
    pool = {}
    for vid, g in gt.items():
        wide = g.segments + torch.tensor([-0.5, 0.5])
        pool[vid] = Instances.cat([Instances.create(wide, g.labels, torch.full((len(g),), 0.9)),
                                   Instances.create(g.segments, g.labels, torch.full((len(g),), 0.3))])
    prop = write_instances(tmp_path / "other_method.json", pool, ds.classes, with_weight=False)
    out = tmp_path / "W"
    r = _noco("run", "--data", str(tiny), "--out", str(out), "--ablation", "b", "--no-baseline",
              "--proposals", str(prop), *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (out / "seed0" / "wtal" / "wtal.pt").exists()  # the built-in base model never trained
    labels = json.loads((out / "seed0" / "labels" / "b.json").read_text())["results"]
    n = sum(len(v) for v in labels.values())
    assert n == sum(len(g) for g in gt.values())
    # CALA pulled each widened seed toward the exact (lower-scored) proposal: boundaries moved inward
    vid = next(v for v, g in gt.items() if len(g))
    got = torch.tensor(sorted(x["segment"] for x in labels[vid]))
    wide = torch.sort(pool[vid].segments[: len(gt[vid])], dim=0).values
    assert (got[:, 0] >= wide[:, 0] - 1e-4).all() and (got[:, 1] <= wide[:, 1] + 1e-4).all()
    assert (got[:, 0] > wide[:, 0] + 1e-3).any() and (got[:, 1] < wide[:, 1] - 1e-3).any()


def test_run_under_torchrun_two_processes(tiny, tmp_path):
    """`torchrun -m noco run` (gloo on the CPU): training stages on both ranks, the rest on rank 0;
    one set of outputs, the same rows as a single process, both ranks exit 0."""
    out = tmp_path / "W"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "noco", "run", "--data", str(tiny), "--out", str(out), "--device", "cpu",
           "--set", "detector.batch_size=1", *FAST]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["rows"]) == {"wtal", "a", "g"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["world_size"] == 2
    assert r.stdout.count("g: f + HPM (NoCo)") == 1  # the table is printed once (rank 0)
    assert json.loads((out / "predictions.json").read_text())["results"]


def test_paired_gains_hand_computed():
    """g − a per seed, and its mean ± sample std, from two rows' metrics."""
    from noco.pipeline import paired_gains

    t = [0.3, 0.4, 0.5, 0.6, 0.7]

    def m(x):
        return {"tiou": t, "mAP": [x] * 5}

    found = {"a": {0: m(0.40), 1: m(0.50), 2: m(0.45)}, "g": {0: m(0.42), 1: m(0.51), 2: m(0.48)},
             "oracle": {0: m(0.9), 1: m(0.9)}, "b": {0: m(0.41)}}
    lines = paired_gains(found).splitlines()
    assert lines == ["- g − a, avg 0.3:0.7: +2.0, +1.0, +3.0 (seeds 0, 1, 2); mean +2.00 ± 1.00"]
    assert paired_gains({"g": found["g"]}) == ""


def test_gap_closed_hand_computed():
    """(g − a) / (oracle − a) from the rows' means over the seeds all three have (seeds 0 and 1:
    a 45, g 46.5, oracle 90 -> 1.5 / 45 = 3.3 %)."""
    from noco.pipeline import gap_closed

    t = [0.3, 0.4, 0.5, 0.6, 0.7]

    def m(x):
        return {"tiou": t, "mAP": [x] * 5}

    found = {"a": {0: m(0.40), 1: m(0.50), 2: m(0.45)}, "g": {0: m(0.42), 1: m(0.51), 2: m(0.48)},
             "oracle": {0: m(0.9), 1: m(0.9)}}
    assert gap_closed(found).splitlines() == [
        "- (g − a) / (oracle − a), avg 0.3:0.7: (46.5 − 45.0) / (90.0 − 45.0) = 3.3 % (means over seeds 0, 1)"]
    perfect = {**found, "g": found["oracle"]}
    assert "= 100.0 %" in gap_closed(perfect)
    assert gap_closed({"a": found["a"], "g": found["g"]}) == ""  # no oracle row


def test_ablate_two_seeds_writes_the_table_with_paired_gains(tiny, tmp_path):
    """`noco ablate`: rows over seeds, mean ± std, the gains over row a paired by seed; with
    correction.teacher_hpm row g's own teacher (helper row bh) is reported too."""
    out = tmp_path / "W"
    r = _noco("ablate", "--data", str(tiny), "--out", str(out), "--seeds", "2", "--rows", "a,g,s", *FAST,
              "--set", "correction.teacher_hpm=true")
    assert r.returncode == 0, r.stderr[-3000:]
    table = (out / "ablation.md").read_text()
    for title in ("WTAL base model", "a: WTAL labels > 0.5", "g: f + HPM (NoCo)", "b + HPM (teacher of g)",
                  "s: b + student, labels uncorrected"):
        row = next((line for line in table.splitlines() if line.startswith(f"| {title} |")), None)
        assert row is not None, title
        assert row.split("|")[2].strip() == "2" and "±" in row  # two seeds, mean ± std
    assert "- g − a, avg 0.3:0.7:" in table and "- s − a, avg 0.3:0.7:" in table and "(seeds 0, 1)" in table
    assert table.index("| g: f + HPM") < table.index("| s: b + student")  # diagnostic rows come last
    for s in (0, 1):
        assert (out / f"seed{s}" / "rows" / "bh" / "metrics.json").is_file()
        # row s trains on row b's labels as they are: its final label set is its initial one
        final = json.loads((out / f"seed{s}" / "rows" / "s" / "labels.json").read_text())["results"]
        initial = json.loads((out / f"seed{s}" / "labels" / "b.json").read_text())["results"]
        assert final == initial
    bad = _noco("ablate", "--data", str(tiny), "--out", str(out), "--rows", "a,zz")
    assert bad.returncode == 2 and "unknown rows" in bad.stderr


def test_correction_key_holds_only_the_options_a_row_uses():
    from noco.correction.config import make_config
    from noco.pipeline import ROW_SPEC, correction_key

    online = [r for r in ROW_SPEC if "teacher" in ROW_SPEC[r]]
    assert online == ["c", "d", "e", "f", "g", "s"]
    base = make_config("cpu")

    def changed(**kw):
        other = make_config("cpu", kw)
        return {r for r in online if correction_key(base, ROW_SPEC[r]) != correction_key(other, ROW_SPEC[r])}

    assert changed(baseline_conf=0.4) == set()          # row a's filter
    assert changed(cala_conf=0.2) == set()              # keyed with the label set
    assert changed(replace_conf=0.4) == {"c"}
    assert changed(aic_iou=0.4, mic_conf=0.4, hpm_power=2.0) == {"d", "e", "f", "g"}  # row s uses none of them
    assert changed(aic_iou=0.4) == {"d", "f", "g"}
    assert changed(mic_conf=0.4) == {"e", "f", "g"}
    assert changed(hpm_power=2.0) == {"g"}
    assert changed(aic_decay_unsupported=True) == {"g"}  # only the HPM loss reads the weights
    assert changed(hpm_normalize=False) == {"g"}             # the cpu preset normalises
    assert changed(replace_fallback="class") == {"c"}
    assert changed(mic_pool_conf=0.0) == {"e", "f", "g"}    # the cpu preset confirms MIC's candidates
    assert changed(mic_pool_iou=0.3) == {"e", "f", "g"}
    off = make_config("cpu", {"mic_pool_conf": 0.0})
    # without the pool's confirmation its IoU is unused, and the key is the one from before the option
    assert correction_key(off, ROW_SPEC["g"]) == correction_key(make_config("cpu", {"mic_pool_conf": 0.0,
                                                                                     "mic_pool_iou": 0.3}), ROW_SPEC["g"])
    assert "mic_pool_conf" not in correction_key(off, ROW_SPEC["g"])
    assert changed(alpha=0.9) == set(online)
    assert changed(video_classes=False) == set(online)
