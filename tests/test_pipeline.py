"""The whole pipeline as a user runs it: `noco run` on the tiny simulated dataset, in a subprocess."""

import json
import subprocess
import sys

import pytest

FAST = ["--set", "wtal.epochs=3", "--set", "detector.epochs=2", "--set", "student.epochs=1"]


def _noco(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "noco", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("data") / "tiny"
    r = _noco("synth", "--preset", "tiny", "--out", str(d))
    assert r.returncode == 0, r.stderr
    return d


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
    # a second run (another row) reuses every cached stage: no training happens again
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    r2 = _noco("run", "--data", str(tiny), "--out", str(out), "--ablation", "b", *FAST)
    assert r2.returncode == 0, r2.stderr[-3000:]
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after
    assert "b: + CALA" in r2.stdout


def test_run_rejects_unknown_set_key(tiny, tmp_path):
    r = _noco("run", "--data", str(tiny), "--out", str(tmp_path / "W"), "--set", "wtal.epocs=3")
    assert r.returncode == 2
    assert "wtal.epochs" in r.stderr and "Traceback" not in r.stderr
