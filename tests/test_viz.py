"""Pictures and reports: `noco viz` timelines, the helpers behind them, and W/report.md."""

import json
import logging
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")

from noco import viz  # noqa: E402
from noco.cli import main  # noqa: E402
from noco.data.dataset import load_dataset  # noqa: E402
from noco.eval.labels import label_quality  # noqa: E402
from noco.io import atomic_save_torch, atomic_write_json  # noqa: E402
from noco.labels.instances import Instances, write_instances  # noqa: E402

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIG, f"{path} is not a PNG"
    w, h = struct.unpack(">II", data[16:24])  # IHDR
    return w, h


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("data") / "tiny"
    assert main(["synth", "--preset", "tiny", "--out", str(d)]) == 0
    return d


@pytest.fixture(scope="module")
def ds(tiny):
    return load_dataset(tiny)


def _ins(segs, labels, scores=None, weights=None):
    return Instances.create(torch.as_tensor(segs, dtype=torch.float32).reshape(-1, 2),
                            torch.as_tensor(labels, dtype=torch.long),
                            None if scores is None else torch.as_tensor(scores, dtype=torch.float32),
                            None if weights is None else torch.as_tensor(weights, dtype=torch.float32))


def _metrics(row, seed, gt, labels, durations, num_classes, m=0.1):
    return {"row": row, "seed": seed, "tiou": [0.3, 0.5, 0.7], "mAP": [m, m / 2, m / 4], "average": m / 2,
            "averages": {}, "labels": label_quality(gt, labels, durations, num_classes)}


@pytest.fixture(scope="module")
def handmade(tmp_path_factory, tiny, ds):
    """A run directory written by hand: rows a and g only (b..f and oracle missing), two seeds."""
    W = tmp_path_factory.mktemp("run") / "W"
    train = ds.subset(ds.train_subset)
    test = ds.subset(ds.test_subset)
    tv, sv = train[0], test[0]
    gen = torch.Generator().manual_seed(0)
    c = int(tv.labels[0]) if len(tv.labels) else 0
    starts = torch.rand(400, generator=gen) * (tv.duration - 3)
    pool = _ins(torch.stack([starts, starts + 2.0], 1), [c] * 400, torch.rand(400, generator=gen))
    gt_train = ds.ground_truth(ds.train_subset)
    durations = {v.id: v.duration for v in train}
    a = {tv.id: _ins([[1.0, 9.0]], [c])}
    g = {tv.id: _ins([[1.0, 4.0], [5.0, 9.0], [12.0, 13.0]], [c, c, c], weights=[1.0, 0.6, 0.3])}
    preds = {sv.id: _ins(torch.stack([torch.arange(80.0) * 0.5, torch.arange(80.0) * 0.5 + 1.0], 1),
                         [0] * 80, torch.linspace(0.01, 0.99, 80))}
    atomic_write_json(W / "config.json", {"data": str(tiny), "preset": "cpu", "device": "cpu"})
    for seed in (0, 1):
        s = W / f"seed{seed}"
        write_instances(s / "wtal" / "pool.json", {tv.id: pool}, ds.classes, with_weight=False)
        write_instances(s / "labels" / "a.json", a, ds.classes)
        write_instances(s / "labels" / "b.json", g, ds.classes)
        write_instances(s / "rows" / "a" / "labels.json", a, ds.classes)
        write_instances(s / "rows" / "g" / "labels.json", g, ds.classes)
        write_instances(s / "rows" / "g" / "predictions.json", preds, ds.classes, with_weight=False)
        for row, lab, m in (("a", a, 0.1), ("g", g, 0.2 + 0.1 * seed)):
            atomic_write_json(s / "rows" / row / "metrics.json",
                              _metrics(row, seed, gt_train, lab, durations, ds.num_classes, m))
        atomic_save_torch(s / "wtal" / "last.pt", {"history": [{"epoch": 1, "train_loss": 2.0, "val_loss": 2.5},
                                                               {"epoch": 2, "train_loss": 1.5}]})
        atomic_save_torch(s / "rows" / "g" / "train" / "checkpoint.pt",
                          {"history": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]})
    return W, tv.id, sv.id


# ----------------------------------------------------------------------------- helpers
def test_overlap_lanes_matches_brute_force():
    gen = torch.Generator().manual_seed(3)
    s = torch.rand(60, generator=gen) * 50
    segs = torch.stack([s, s + torch.rand(60, generator=gen) * 10], 1)
    segs[7] = segs[3]  # an exact tie: input order decides
    got = viz.overlap_lanes(segs, max_lanes=3)
    ref = []
    for i in range(60):
        d = 0
        for j in range(60):
            earlier = segs[j, 0] < segs[i, 0] or (segs[j, 0] == segs[i, 0] and j < i)
            d += int(earlier and segs[j, 1] > segs[i, 0])
        ref.append(d % 3)
    assert got.tolist() == ref
    # disjoint segments share lane 0; a segment starting inside another gets another lane
    assert viz.overlap_lanes(torch.tensor([[0.0, 1.0], [1.0, 2.0], [5.0, 6.0]])).tolist() == [0, 0, 0]
    assert viz.overlap_lanes(torch.tensor([[0.0, 10.0], [2.0, 3.0]])).tolist() == [0, 1]
    assert viz.overlap_lanes(torch.zeros(0, 2)).numel() == 0


def test_merged_labels_hand_case_and_label_quality_agree():
    gt = _ins([[0.0, 2.0], [3.0, 5.0], [10.0, 12.0]], [0, 0, 0])
    labels = _ins([[0.0, 5.5], [0.0, 5.5], [9.0, 12.0], [1.0, 4.0], [1.5, 4.0]], [0, 1, 0, 0, 0])
    # [0,5.5] c0 covers both of the first two; c1 matches nothing; [9,12] covers one; [1,4] covers
    # exactly half of [0,2] and of [3,5]; [1.5,4] covers only a quarter of [0,2]
    assert viz.merged_labels(labels, gt).tolist() == [True, False, False, True, False]
    q = label_quality({"v": gt}, {"v": labels}, {"v": 20.0}, num_classes=2)
    assert q["merged_labels"] == 2
    assert viz.merged_labels(Instances.empty(), gt).numel() == 0


def test_top_instances_filters_then_keeps_the_best():
    ins = _ins([[i, i + 1.0] for i in range(6)], [0] * 6, [0.1, 0.9, 0.3, 0.29, 0.5, 0.95])
    out = viz.top_instances(ins, top=2, min_score=0.3)
    assert out.scores.tolist() == pytest.approx([0.95, 0.9])
    assert viz.top_instances(ins, top=50, min_score=0.3).scores.tolist() == pytest.approx([0.95, 0.9, 0.5, 0.3])
    assert len(viz.top_instances(ins, top=3)) == 3


def test_pick_videos_three_distinct_kinds():
    gt = {
        "v1": _ins([[0, 10], [20, 30], [40, 50], [60, 70]], [0, 0, 0, 0]),  # most instances
        "v2": _ins([[0, 1], [5, 6], [9, 9.5]], [0, 0, 0]),  # most short ones
        "v3": _ins([[0, 3], [4, 7]], [1, 1]),
        "v4": _ins([[0, 3]], [0]),
    }
    labels = {"v1": _ins([[0, 30]], [0]), "v3": _ins([[0, 7]], [1])}  # v1 merged too, but taken already
    got = viz.pick_videos(gt, labels)
    assert [(k, v) for k, v, _ in got] == [("most", "v1"), ("short", "v2"), ("merged", "v3")]
    assert "(4)" in got[0][2] and "(3)" in got[1][2] and "(1)" in got[2][2]
    # no short instance and no merge: only the first kind
    assert [k for k, _, _ in viz.pick_videos({"a": _ins([[0, 5]], [0])}, None)] == ["most"]


# ----------------------------------------------------------------------------- run sources
def test_run_tracks_pick_up_the_run_sources(handmade, ds):
    W, tv, sv = handmade
    tracks = viz.run_tracks(W, tv, ds.classes)
    assert [(t.name, t.kind, len(t.instances)) for t in tracks] == [
        ("WTAL proposals (top 300)", "pool", 300),
        ("a: baseline labels", "labels", 1),
        ("b: CALA labels", "labels", 3),
        ("g: corrected labels", "labels", 3),
    ]
    pool = tracks[0].instances
    assert (pool.scores[:-1] >= pool.scores[1:]).all()  # the best 300 by score
    t = viz.run_tracks(W, sv, ds.classes, min_score=0.3)
    assert len(t) == 1 and t[0].kind == "pred" and t[0].name.startswith("g: student predictions")
    n_above = int((torch.linspace(0.01, 0.99, 80) >= 0.3).sum())
    assert len(t[0].instances) == min(50, n_above) and float(t[0].instances.scores.min()) >= 0.3
    assert viz.final_row(W / "seed0") == "g"
    with pytest.raises(viz.NocoError, match="seed 7"):
        viz.run_tracks(W, tv, ds.classes, seed=7)


# ----------------------------------------------------------------------------- noco viz
def test_viz_cli_writes_a_png(tiny, ds, tmp_path, handmade):
    W, tv, _ = handmade
    v = ds.subset(ds.train_subset)[0]
    lab = tmp_path / "mine.json"
    lab.write_text(json.dumps({"results": {v.id: [{"segment": [1.0, 4.0], "label": ds.classes[0]},
                                                  {"segment": [6.0, 7.5], "label": ds.classes[-1], "score": 0.4}]}}))
    out = tmp_path / "fig" / "t.png"
    assert main(["viz", "--data", str(tiny), "--video", v.id, "--labels", f"mine={lab}",
                 "--predictions", str(lab), "--out", str(out)]) == 0
    w, h = png_size(out)
    assert w > 300 and h > 100 and out.stat().st_size > 1000
    # with --run the dataset comes from the run's config and the run adds its tracks (taller figure)
    out2 = tmp_path / "run.png"
    assert main(["viz", "--run", str(W), "--video", tv, "--out", str(out2)]) == 0
    assert png_size(out2)[1] > h
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temp file


def test_viz_unknown_video_is_one_line_exit_2(tiny, ds, capsys):
    rc = main(["viz", "--data", str(tiny), "--video", "no_such_video", "--out", "/tmp/never.png"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("noco: error:") and "no_such_video" in err
    assert sorted(ds.videos)[0] in err and "Traceback" not in err
    assert not Path("/tmp/never.png").exists()


def _hide_matplotlib(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib...` now raises ImportError


def test_viz_without_matplotlib_is_a_clear_error(tiny, ds, tmp_path, capsys, monkeypatch):
    _hide_matplotlib(monkeypatch)
    rc = main(["viz", "--data", str(tiny), "--video", sorted(ds.videos)[0], "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "pip install matplotlib" in err
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- report
def _figures(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def test_report_with_missing_rows_and_seed_filter(handmade):
    W, _, _ = handmade
    path = viz.write_run_report(W, strict=True)
    md = path.read_text()
    figs = _figures(md)
    assert set(figs) >= {"figures/label_noise.png", "figures/loss.png", "figures/timeline_most.png"}
    for f in figs:
        assert png_size(W / f)[0] > 0
    assert "| a: WTAL labels > 0.5 | 2 |" in md and "| g: f + HPM (NoCo) | 2 |" in md
    assert "b: + CALA" not in md.split("## Label noise")[0]  # rows that were never run are left out
    assert "## Notes" not in md  # no section failed
    assert "25.0 ± 7.1" in md  # row g mAP at 0.3 over the two seeds: 20 and 30
    # restricted to seed 0 and row g (as `noco ablate --seeds 1 --rows g` would)
    md0 = viz.write_run_report(W, seeds=[0], rows=["g"], strict=True).read_text()
    assert "| g: f + HPM (NoCo) | 1 | 20.0 |" in md0 and "WTAL labels > 0.5 |" not in md0


def test_report_without_matplotlib_writes_markdown_and_one_warning(handmade, tmp_path, monkeypatch, caplog):
    import shutil

    W = tmp_path / "W"
    shutil.copytree(handmade[0], W, ignore=shutil.ignore_patterns("figures", "report.md"))
    _hide_matplotlib(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="noco"):
        path = viz.write_run_report(W, strict=True)
    md = path.read_text()
    assert "## Results" in md and "| g: f + HPM (NoCo) |" in md and "### `" in md
    assert _figures(md) == [] and not (W / "figures").exists()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "matplotlib" in warnings[0].getMessage()


def test_report_safely_never_raises(tmp_path, caplog):
    W = tmp_path / "W"
    (W / "seed0" / "rows" / "a").mkdir(parents=True)
    (W / "seed0" / "rows" / "a" / "metrics.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="noco"):
        assert viz.write_run_report_safely(W) is None
    assert any("report.md" in r.getMessage() for r in caplog.records)


@pytest.fixture(scope="module")
def real_run(tiny, tmp_path_factory):
    """`noco run` on the tiny dataset (row b only, short schedules): cmd_run writes W/report.md."""
    W = tmp_path_factory.mktemp("real") / "W"
    r = subprocess.run([sys.executable, "-m", "noco", "run", "--data", str(tiny), "--out", str(W),
                        "--ablation", "b", "--no-baseline", "--set", "wtal.epochs=2", "--set", "detector.epochs=1",
                        "--set", "correction.cala_conf=0.1", "--set", "correction.baseline_conf=0.1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return W, r


def test_noco_run_writes_a_report_with_existing_pngs(real_run):
    W, r = real_run
    md = (W / "report.md").read_text()
    assert "b: + CALA" in md and "WTAL base model" in md
    figs = _figures(md)
    assert "figures/loss.png" in figs and any(f.startswith("figures/timeline_") for f in figs)
    for f in figs:
        assert png_size(W / f)[0] > 0
    assert "skipped" not in r.stderr and "could not write" not in r.stderr
