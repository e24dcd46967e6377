"""Bad input, driven as a user would: ``python -m noco ...`` in a subprocess on real files.

Every case corrupts a copy of the tiny dataset (or a checkpoint, a feature file, a predictions
file, a flag) and expects: exit code 2, no Python traceback, ONE ``noco: error: ...`` line on
stderr naming the file (or flag) and the problem (a multi-problem DataError may list its problems
on the following ``  - `` lines), and no output file (nor a stray temp file) left behind.
Positive controls run the same commands on the uncorrupted inputs and must succeed, so a case
fails for its corruption and not for some unrelated reason.

Subprocesses are slow to start (torch import), so the module fixture prepares every case and
runs them all, two at a time, while a 1-epoch detector trains for the checkpoint cases; each
test then checks one recorded outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
    [str(SRC)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
# A detector small enough to train one epoch on the tiny preset in seconds.
SMALL_DETECTOR = ["--epochs", "1", "--set", "embed_dim=16", "--set", "head_dim=16", "--set", "mlp_dim=16",
                  "--set", "num_levels=2", "--set", "regression_ranges=[[0,4],[4,10000]]",
                  "--set", "max_seq_len=64", "--set", "pre_nms_topk=50", "--set", "max_segments=50"]


def noco(*args, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "noco", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)


@dataclass
class Case:
    argv: list                  # noco arguments
    out: Path | None            # the output file that must not appear (or must, for a control)
    needles: list[str]          # what the error message must say (file or flag, and the problem)
    ok: bool = False            # a positive control: exit 0 and the output written
    multi: bool = False         # a DataError listing several problems on following lines
    extra: dict = field(default_factory=dict)


@dataclass
class Ctx:
    root: Path                  # scratch folder of this case
    tiny: Path                  # the valid tiny dataset (never modified)
    good: Path                  # a valid predictions file for its test subset
    test_video: str             # a test-subset video id
    ckpt: Path | None = None    # a trained detector checkpoint (checkpoint cases only)

    def copy(self) -> Path:
        d = self.root / "ds"
        shutil.copytree(self.tiny, d)
        return d

    def feature(self, d: Path) -> Path:
        return d / "features" / f"{self.test_video}.npy"


CASES: dict[str, tuple[bool, object]] = {}


def case(needs_ckpt: bool = False):
    def deco(fn):
        CASES[fn.__name__] = (needs_ckpt, fn)
        return fn
    return deco


def _ann(d: Path) -> dict:
    return json.loads((d / "annotations.json").read_text())


def _write_ann(d: Path, a: dict) -> None:
    (d / "annotations.json").write_text(json.dumps(a))


def _eval(c: Ctx, d: Path, needles: list[str], **kw) -> Case:
    """`noco eval` on dataset ``d`` with the valid predictions; its --json output must not appear."""
    out = c.root / "res.json"
    return Case(["eval", "--data", d, "--predictions", c.good, "--json", out], out, needles, **kw)


# ------------------------------------------------------------------ feature files
@case()
def truncated_feature_file(c: Ctx) -> Case:
    d = c.copy()
    f = c.feature(d)
    f.write_bytes(f.read_bytes()[:1000])
    return _eval(c, d, [str(f), "not a readable .npy file", "truncated"])


@case()
def non_npy_feature_file(c: Ctx) -> Case:
    d = c.copy()
    f = c.feature(d)
    f.write_text("video,features\n1,2\n")
    return _eval(c, d, [str(f), "not a readable .npy file"])


@case()
def integer_features(c: Ctx) -> Case:
    d = c.copy()
    f = c.feature(d)
    np.save(f, np.load(f).astype(np.int32))
    return _eval(c, d, [str(f), "must be floating point", "int32"])


@case()
def one_dimensional_features(c: Ctx) -> Case:
    d = c.copy()
    f = c.feature(d)
    np.save(f, np.load(f).ravel())
    return _eval(c, d, [str(f), "must be 2-D"])


@case()
def zero_length_video_features(c: Ctx) -> Case:
    d = c.copy()
    f = c.feature(d)
    np.save(f, np.zeros((0, np.load(f).shape[1]), np.float32))
    return _eval(c, d, [str(f), "features are empty", "(0, "])


@case(needs_ckpt=True)
def nan_features(c: Ctx) -> Case:
    # only a pass over the values finds NaN: detector predict reads the features
    d = c.copy()
    f = c.feature(d)
    a = np.load(f)
    a[3, 5] = np.nan
    np.save(f, a)
    out = c.root / "P.json"
    return Case(["detector", "predict", "--ckpt", c.ckpt, "--data", d, "--out", out], out,
                [str(f), c.test_video, "NaN", "snippet 3"])


# ------------------------------------------------------------------ annotations / dataset.json
@case()
def empty_annotation_file(c: Ctx) -> Case:
    d = c.copy()
    (d / "annotations.json").write_text("  \n")
    return _eval(c, d, [str(d / "annotations.json"), "is empty"])


@case()
def missing_fields(c: Ctx) -> Case:
    d = c.copy()
    a = _ann(d)
    v = a["database"][c.test_video]
    del v["duration"]
    del v["annotations"][0]["segment"]
    _write_ann(d, a)
    return _eval(c, d, [str(d / "annotations.json"), f"video {c.test_video}: missing field 'duration'",
                        f"video {c.test_video}, annotation 0: missing field 'segment'", "2 problems"], multi=True)


@case()
def unknown_class(c: Ctx) -> Case:
    d = c.copy()
    a = _ann(d)
    a["database"][c.test_video]["annotations"][0]["label"] = "Skateboarding"
    _write_ann(d, a)
    return _eval(c, d, [str(d / "annotations.json"), c.test_video, "'Skateboarding' is not in the class list"])


@case()
def segment_end_before_start(c: Ctx) -> Case:
    d = c.copy()
    a = _ann(d)
    seg = a["database"][c.test_video]["annotations"][0]["segment"]
    a["database"][c.test_video]["annotations"][0]["segment"] = [seg[1], seg[0]]
    _write_ann(d, a)
    return _eval(c, d, [str(d / "annotations.json"), c.test_video, "annotation 0", "ends before it starts"])


@case()
def zero_length_segment_is_dropped_with_a_warning(c: Ctx) -> Case:
    # Decision (the loader's): end == start happens in real annotations; such an instance is dropped
    # with a warning naming the file, not an error. end < start is an error (case above).
    d = c.copy()
    a = _ann(d)
    seg = a["database"][c.test_video]["annotations"][0]["segment"]
    a["database"][c.test_video]["annotations"][0]["segment"] = [seg[0], seg[0]]
    _write_ann(d, a)
    return _eval(c, d, [str(d / "annotations.json"), "dropped 1 zero-length"], ok=True)


@case()
def non_utf8_annotation_file(c: Ctx) -> Case:
    d = c.copy()
    text = (d / "annotations.json").read_text().replace("Billiards", "Billi\u00e4rds")
    (d / "annotations.json").write_bytes(text.encode("latin-1"))
    return _eval(c, d, [str(d / "annotations.json"), "not UTF-8"])


@case()
def video_ids_naming_paths(c: Ctx) -> Case:
    # a video id names its feature file: separators and '..' could reach outside the features folder
    d = c.copy()
    a = _ann(d)
    db = a["database"]
    others = sorted(v for v in db if v != c.test_video)
    for new_id, old_id in zip(["../outside", "sub/video", ".."], [c.test_video] + others):
        db[new_id] = db.pop(old_id)
    _write_ann(d, a)
    return _eval(c, d, [str(d / "annotations.json"), "video id '../outside' contains a path separator",
                        "video id 'sub/video' contains a path separator", "video id '..' contains '..'"], multi=True)


@case()
def zero_duration_video(c: Ctx) -> Case:
    d = c.copy()
    a = _ann(d)
    a["database"][c.test_video]["duration"] = 0
    _write_ann(d, a)
    return _eval(c, d, [str(d / "annotations.json"), c.test_video, "'duration' must be a positive number"])


# ------------------------------------------------------------------ predictions files (noco eval)
@case()
def predictions_for_another_dataset(c: Ctx) -> Case:
    # Decision: a file with none of the subset's videos is an error (not a warning and mAP 0).
    p = c.root / "other.json"
    p.write_text(json.dumps({"results": {"v_other_1": [{"segment": [1, 2], "label": "Billiards", "score": 0.9}],
                                         "v_other_2": []}}))
    out = c.root / "res.json"
    return Case(["eval", "--data", c.tiny, "--predictions", p, "--json", out], out,
                [str(p), "none of the 2 videos", "subset 'Test'", "another dataset"])


@case()
def predictions_with_foreign_classes(c: Ctx) -> Case:
    p = c.root / "classes.json"
    p.write_text(json.dumps({"results": {c.test_video: [{"segment": [1, 2], "label": "Skateboarding", "score": 0.9},
                                                        {"segment": [3, 4], "label": "Surfing", "score": 0.8}]}}))
    out = c.root / "res.json"
    return Case(["eval", "--data", c.tiny, "--predictions", p, "--json", out], out,
                [str(p), "none of the 2 labels", "another dataset"])


@case()
def malformed_predictions(c: Ctx) -> Case:
    p = c.root / "bad.json"
    # json.dumps writes NaN as the (non-standard) literal NaN, which Python's reader accepts
    p.write_text(json.dumps({"results": {c.test_video: [
        {"segment": [5, 2], "label": "Billiards", "score": 0.5},
        {"segment": [1, 2], "label": "Billiards", "score": float("nan")},
        {"segment": [1, 2], "label": "Billiards"}]}}))
    out = c.root / "res.json"
    return Case(["eval", "--data", c.tiny, "--predictions", p, "--json", out], out,
                [str(p), "entry 0: field 'segment' ends before it starts", "entry 1: field 'score' must be a finite",
                 "entry 2: missing field 'score'"], multi=True)


@case()
def eval_control(c: Ctx) -> Case:
    return _eval(c, c.tiny, [], ok=True)


# ------------------------------------------------------------------ checkpoints
@case(needs_ckpt=True)
def infer_feature_dim_differs_from_checkpoint(c: Ctx) -> Case:
    f = c.root / "clip.npy"
    np.save(f, np.zeros((40, 64), np.float32))
    out = c.root / "dets.json"
    return Case(["infer", "--checkpoint", c.ckpt, "--features", f, "--out", out], out,
                [str(f), "feature dimension 64", "checkpoint's 128"])


@case(needs_ckpt=True)
def infer_control(c: Ctx) -> Case:
    out = c.root / "dets.json"
    return Case(["infer", "--checkpoint", c.ckpt, "--features", c.feature(c.tiny), "--out", out], out, [],
                ok=True)


def _edited_checkpoint(c: Ctx, edit) -> Path:
    import torch

    ck = torch.load(c.ckpt, weights_only=True)
    edit(ck)
    path = c.root / "edited.pt"
    torch.save(ck, path)
    return path


@case(needs_ckpt=True)
def checkpoint_weights_do_not_fit(c: Ctx) -> Case:
    path = _edited_checkpoint(c, lambda ck: ck["config"].update(embed_dim=32))
    out = c.root / "P.json"
    return Case(["detector", "predict", "--ckpt", path, "--data", c.tiny, "--out", out], out,
                [str(path), "do not fit"])


@case(needs_ckpt=True)
def checkpoint_from_dataset_with_other_classes(c: Ctx) -> Case:
    d = c.copy()
    cfg = json.loads((d / "dataset.json").read_text())
    cfg["classes"] = list(reversed(cfg["classes"]))  # same names, other order: other class ids
    (d / "dataset.json").write_text(json.dumps(cfg))
    out = c.root / "P.json"
    return Case(["detector", "predict", "--ckpt", c.ckpt, "--data", d, "--out", out], out,
                [str(c.ckpt), "does not match the dataset", "'classes'", str(d)])


class _RunsCode:
    """Unpickling this creates a marker file: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@case(needs_ckpt=True)
def checkpoint_pickling_arbitrary_objects(c: Ctx) -> Case:
    import torch

    path = c.root / "evil.pt"
    marker = c.root / "code_ran"
    torch.save({"config": {}, "ema": _RunsCode(marker), "dataset": {}}, path)
    out = c.root / "P.json"
    return Case(["detector", "predict", "--ckpt", path, "--data", c.tiny, "--out", out], out,
                [str(path), "refused by weights_only=True", "Python objects"], extra={"marker": marker, "pickle": path})


@case(needs_ckpt=True)
def checkpoint_garbage_bytes(c: Ctx) -> Case:
    path = c.root / "garbage.pt"
    path.write_bytes(bytes(range(256)) * 8)
    out = c.root / "dets.json"
    return Case(["infer", "--checkpoint", path, "--features", c.feature(c.tiny), "--out", out], out,
                [str(path), "not a loadable noco checkpoint"])


@case(needs_ckpt=True)
def predict_control(c: Ctx) -> Case:
    out = c.root / "P.json"
    return Case(["detector", "predict", "--ckpt", c.ckpt, "--data", c.tiny, "--out", out], out, [], ok=True)


# ------------------------------------------------------------------ flags and outputs
@case()
def unknown_set_key_suggests(c: Ctx) -> Case:
    w = c.root / "W"
    return Case(["run", "--data", c.tiny, "--out", w, "--set", "wtal.epocs=3"], w / "config.json",
                ["wtal.epocs", "did you mean wtal.epochs"], extra={"run_dir": w})


@case(needs_ckpt=True)
def output_path_is_a_directory(c: Ctx) -> Case:
    out = c.root / "results"
    out.mkdir()
    return Case(["infer", "--checkpoint", c.ckpt, "--features", c.feature(c.tiny), "--out", out], out,
                [str(out), "a directory has this name"], extra={"dir": out})


# ------------------------------------------------------------------ running
def _prepare_and_run(names: list[str], ctx_of, pool) -> dict:
    cases = {n: CASES[n][1](ctx_of(n)) for n in names}
    futures = {n: pool.submit(noco, *k.argv, cwd=ctx_of(n).root) for n, k in cases.items()}
    return {n: (cases[n], futures[n].result()) for n in names}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_input")
    tiny = base / "tiny"
    r = noco("synth", "--preset", "tiny", "--out", tiny)
    assert r.returncode == 0, r.stderr
    ann = json.loads((tiny / "annotations.json").read_text())["database"]
    test_ids = sorted(v for v, e in ann.items() if e["subset"] == "Test")
    good = base / "good.json"
    good.write_text(json.dumps({"results": {
        v: [{"segment": a["segment"], "label": a["label"], "score": 0.9} for a in ann[v]["annotations"]]
        for v in test_ids}}))
    train_log = base / "train.log"
    with open(train_log, "w") as log_file:
        train = subprocess.Popen([sys.executable, "-m", "noco", "detector", "train", "--data", str(tiny),
                                  "--out", str(base / "W"), *SMALL_DETECTOR], env=ENV, stdout=log_file,
                                 stderr=subprocess.STDOUT)
    ckpt = None

    def ctx_of(name):
        root = base / name
        root.mkdir(exist_ok=True)
        return Ctx(root, tiny, good, test_ids[0], ckpt)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            # the cases that need no checkpoint run while the detector trains
            res = _prepare_and_run([n for n, (ck, _) in CASES.items() if not ck], ctx_of, pool)
            train.wait(timeout=300)
            ckpt = base / "W" / "checkpoint.pt"
            assert train.returncode == 0 and ckpt.is_file(), train_log.read_text()[-3000:]
            res.update(_prepare_and_run([n for n, (ck, _) in CASES.items() if ck], ctx_of, pool))
    finally:
        if train.poll() is None:
            train.kill()
            train.wait()
    return res


def test_enough_distinct_cases():
    bad = [n for n in CASES if not n.endswith("control") and "dropped" not in n]
    assert len(bad) >= 15


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(outcomes, name):
    k, r = outcomes[name]
    err = r.stderr
    assert "Traceback" not in err, err
    if k.ok:
        assert r.returncode == 0, err[-3000:]
        assert k.out.is_file()
        for needle in k.needles:  # e.g. a warning the control must print
            assert needle in err, err
        return
    assert r.returncode == 2, (r.returncode, err[-3000:])
    lines = err.rstrip("\n").splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("noco: error: ")]
    assert len(starts) == 1, err
    # nothing before the error line (no warning clutter), and after it only the problem list
    assert starts[0] == 0, err
    after = lines[1:]
    if k.multi:
        assert after and all(ln.startswith("  - ") for ln in after), err
    else:
        assert not after, err
    for needle in k.needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert r.stdout == ""
    # no output, and no temp file of an interrupted atomic write
    if "dir" in k.extra:
        assert k.out.is_dir() and not any(k.out.iterdir())
    else:
        assert not k.out.exists()
    assert not list(k.out.parent.glob(f".{k.out.name}.*.tmp"))
    if "marker" in k.extra:
        assert not k.extra["marker"].exists(), "unpickling ran code from the checkpoint"
        import torch

        torch.load(k.extra["pickle"], weights_only=False)  # the file is truly hostile: a plain load runs it
        assert k.extra["marker"].exists()
    if "run_dir" in k.extra:
        w = k.extra["run_dir"]
        assert not w.exists() or not any(w.iterdir()), list(w.iterdir())


def test_output_folder_probe_is_private_to_each_run(tmp_path):
    """Runs of other rows on the same W start together: their writability probes must not collide
    (one run used to delete the other's probe file and stop with 'not writable')."""
    import threading

    from noco.errors import NocoError
    from noco.io import check_writable_dir

    errors = []

    def probe():
        for _ in range(200):
            try:
                check_writable_dir(tmp_path / "W")
            except Exception as e:  # noqa: BLE001 - any failure is the defect
                errors.append(e)

    threads = [threading.Thread(target=probe) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and list((tmp_path / "W").iterdir()) == []  # no probe left behind
    (tmp_path / "file").write_text("x")
    with pytest.raises(NocoError, match="file.*not writable"):
        check_writable_dir(tmp_path / "file")
