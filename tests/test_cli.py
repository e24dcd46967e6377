"""Command-line conventions shared by every command."""

import subprocess
import sys


def _noco(*args):
    return subprocess.run([sys.executable, "-m", "noco", *args], capture_output=True, text=True, timeout=300)


def test_log_level_before_or_after_the_command(tmp_path):
    loud = _noco("synth", "--preset", "tiny", "--out", str(tmp_path / "a"))
    assert loud.returncode == 0 and "wrote tiny" in loud.stderr
    for args in (["--log-level", "warning", "synth"], ["synth", "--log-level", "WARNING"]):
        r = _noco(*args, "--preset", "tiny", "--out", str(tmp_path / ("b" + str(len(args[0])))))
        assert r.returncode == 0, r.stderr
        assert "wrote tiny" not in r.stderr


def test_bad_log_level_is_a_usage_error(tmp_path):
    r = _noco("synth", "--log-level", "chatty", "--preset", "tiny", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "invalid choice" in r.stderr
