"""A `noco run` killed with SIGKILL in the middle of training, started again, ends with exactly the
predictions of an uninterrupted run (CPU, same seed)."""

import os
import signal
import subprocess
import sys
import time

import pytest

ARGS = ["--set", "wtal.epochs=3", "--set", "detector.epochs=3", "--set", "student.epochs=2",
        "--set", "correction.cala_conf=0.1", "--set", "correction.baseline_conf=0.1"]  # tiny's 3-epoch WTAL model reaches confidence ~0.16


def _cmd(data, out):
    return [sys.executable, "-m", "noco", "run", "--data", str(data), "--out", str(out), *ARGS]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("data") / "tiny"
    subprocess.run([sys.executable, "-m", "noco", "synth", "--preset", "tiny", "--out", str(d)], check=True,
                   capture_output=True)
    return d


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    ref = tmp_path_factory.mktemp("ref")
    r = subprocess.run(_cmd(tiny, ref), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return ref


@pytest.mark.parametrize("victim", ["rows/a/train/checkpoint.pt", "rows/g/train/checkpoint.pt"])
def test_killed_run_resumes_to_identical_predictions(tiny, reference, tmp_path, victim):
    ref = reference

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(tiny, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = out / "seed0" / victim
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # after its first epoch checkpoint, mid-training
    proc.wait()
    assert not (out / "predictions.json").exists()

    r = subprocess.run(_cmd(tiny, out), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resum" in r.stderr.lower()
    assert (out / "predictions.json").read_bytes() == (ref / "predictions.json").read_bytes()
