"""The whole NoCo pipeline as cached stages, and the ablation rows of the paper's Table 3.

Stages (each one's outputs live in the run directory W and are reused when present)::

    data (a dataset dir, or a synth preset generated once into W/data/<preset>)
    W/seed<S>/wtal/            WTAL base model (video-level labels only)     -> wtal.pt
    W/seed<S>/wtal/test.json   its test-subset detections (the "WTAL" row)
    W/seed<S>/wtal/pool.json   dense proposal pool O on the training subset
    W/seed<S>/labels/a.json    baseline labels: confidence > 0.5 after NMS, weight 1
    W/seed<S>/labels/b.json    CALA labels (P_aug, W_aug)
    W/seed<S>/rows/<row>/      one TriDet per ablation row: train/, predictions.json,
                               labels.json (the labels it ended training on), metrics.json

Rows: oracle (ground truth), a (baseline), b (+CALA; also the pre-trained teacher of c..g),
c (+teacher-student, teacher's confident detections replace the labels), d (c+AIC), e (c+MIC),
f (c+AIC+MIC), g (f+HPM = NoCo).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from .errors import NocoError
from .io import atomic_write_json, check_writable_dir, read_json
from .labels.instances import Instances, read_instances, write_instances

log = logging.getLogger("noco")

ROWS = ["oracle", "a", "b", "c", "d", "e", "f", "g"]
ROW_TITLES = {
    "wtal": "WTAL base model",
    "oracle": "oracle (ground-truth labels)",
    "a": "a: WTAL labels > 0.5",
    "b": "b: + CALA",
    "c": "c: + teacher-student",
    "d": "d: c + AIC",
    "e": "e: c + MIC",
    "f": "f: c + AIC + MIC",
    "g": "g: f + HPM (NoCo)",
    "bh": "b + HPM (teacher of g)",
    "s": "s: b + student, labels uncorrected",
}
# what each row trains on: static label set, or an online correction on top of row b's teacher
ROW_SPEC: dict[str, dict[str, Any]] = {
    "oracle": dict(labels="gt"),
    "a": dict(labels="a"),
    "b": dict(labels="b"),
    # row g's teacher when correction.teacher_hpm is on: row b's labels, trained with the HPM loss
    "bh": dict(labels="b", hpm=True),
    "c": dict(labels="b", teacher="b", mode="replace", use_aic=False, use_mic=False, hpm=False),
    "d": dict(labels="b", teacher="b", mode="online", use_aic=True, use_mic=False, hpm=False),
    "e": dict(labels="b", teacher="b", mode="online", use_aic=False, use_mic=True, hpm=False),
    "f": dict(labels="b", teacher="b", mode="online", use_aic=True, use_mic=True, hpm=False),
    "g": dict(labels="b", teacher="b", mode="online", use_aic=True, use_mic=True, hpm=True),
    # diagnostic: the student's training alone (from row b's teacher, with the student's schedule
    # and input noise) on the CALA labels as they are: what rows d-g add beyond it is the correction
    "s": dict(labels="b", teacher="b", mode="online", use_aic=False, use_mic=False, hpm=False),
}
# rows computed only as another row's teacher (listed in tables after the rows, when present)
HELPER_ROWS = ["bh"]
# rows outside the paper's table, run on request (`noco run --ablation s`, `noco ablate --rows ...,s`)
DIAGNOSTIC_ROWS = ["s"]
THUMOS_TIOUS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
ANET_TIOUS = [round(0.5 + 0.05 * i, 2) for i in range(10)]
SHORT_BIN = "short"
SECTIONS = ("wtal", "detector", "student", "correction")


# --------------------------------------------------------------------------- configuration
@dataclasses.dataclass
class PipelineConfig:
    preset: str
    wtal: Any
    detector: Any
    student: Any
    correction: Any
    val_fraction: float = 0.1
    tiou: list[float] = dataclasses.field(default_factory=lambda: list(THUMOS_TIOUS))
    data: str = "thumos14-sim"      # the preset's default dataset (a synth preset or a directory)
    synth: dict = dataclasses.field(default_factory=dict)  # options to generate that synth preset
    # test-time fusion of the detectors' scores with the WTAL model's video-level class scores,
    # reported beside the plain result: {"mode": "none"|"multiply", "topk": int, "power": float}
    fusion: dict = dataclasses.field(default_factory=lambda: {"mode": "none"})

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "val_fraction": self.val_fraction,
            "tiou": self.tiou,
            "fusion": self.fusion,
            **{s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS},
        }

    def to_preset(self, data: str | None = None) -> dict:
        """The resolved configuration as a preset file's content (``W/config.yaml``)."""
        out = {"description": f"resolved configuration (from preset {self.preset})", "data": data or self.data}
        if self.synth:
            out["synth"] = dict(self.synth)
        out.update({"tiou": self.tiou, "val_fraction": self.val_fraction, "fusion": dict(self.fusion)})
        out.update({s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS})
        return out


def parse_sets(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["wtal.epochs=5", "correction.alpha=0.99"]`` -> ``{"wtal": {"epochs": "5"}, ...}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise NocoError(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION one of {', '.join(SECTIONS)}")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            import difflib

            close = difflib.get_close_matches(section, SECTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise NocoError(f"--set {item!r}: unknown section {section!r}{hint}; sections: {', '.join(SECTIONS)}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(section, {})[name] = parsed
    return out


def _make(section: str, cls, values: dict) -> Any:
    """One section's config from its (preset + --set) values; an unknown key names its section."""
    from .presets import build_config

    names = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        if k not in names:
            import difflib

            close = difflib.get_close_matches(k, names, n=1)
            hint = f" (did you mean {section}.{close[0]}?)" if close else ""
            raise NocoError(f"unknown config key {section}.{k}{hint}")
    return build_config(cls, section, section, None, values)


def make_pipeline_config(preset: str = "cpu", sets: list[str] | None = None, val_fraction: float | None = None,
                         tiou: list[float] | None = None) -> PipelineConfig:
    """The pipeline's configuration: a preset (a shipped name or a YAML file, see noco.presets) with
    ``--set SECTION.KEY=VALUE`` overrides on top; ``student`` starts from ``detector``."""
    from . import presets
    from .correction.config import CorrectionConfig
    from .detector.config import DetectorConfig
    from .wtal.config import WtalConfig

    p = presets.load(preset)
    ov = parse_sets(sets)
    det_ov = {**p["detector"], **ov.get("detector", {})}
    # the student: the preset's detector, its student section, then --set detector.*, --set student.*
    student_ov = {**p["detector"], **p["student"], **ov.get("detector", {}), **ov.get("student", {})}
    return PipelineConfig(
        preset=str(preset),
        wtal=_make("wtal", WtalConfig, {**p["wtal"], **ov.get("wtal", {})}),
        detector=_make("detector", DetectorConfig, det_ov),
        student=_make("student", DetectorConfig, student_ov),
        correction=_make("correction", CorrectionConfig, {**p["correction"], **ov.get("correction", {})}),
        val_fraction=float(val_fraction if val_fraction is not None else p.get("val_fraction", 0.1)),
        tiou=[float(t) for t in (tiou or p.get("tiou") or THUMOS_TIOUS)],
        data=p.get("data", "thumos14-sim"),
        synth=dict(p.get("synth") or {}),
        fusion={"mode": "none", **(p.get("fusion") or {})},
    )


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- data
def resolve_data(data: str, out: Path, synth_options: dict | None = None) -> Path:
    """A dataset directory, or the name of a synth preset generated once into ``out/data/<name>``
    (with ``synth_options``, e.g. ``{"train_videos": 1000, "test_videos": 500}``, in the folder name)."""
    from .data import synth

    p = Path(data)
    if (p / "dataset.json").is_file():
        return p
    if data in synth.PRESETS and not p.exists():
        opts = {k: v for k, v in (synth_options or {}).items() if v}
        tag = "".join(f"-{k.split('_')[0]}{v}" for k, v in sorted(opts.items()))
        target = out / "data" / f"{data}{tag}"
        if not (target / "dataset.json").is_file():
            log.info(f"noco: generating the simulated benchmark {data!r}{' ' + str(opts) if opts else ''} into "
                     f"{target} (real annotations, SIMULATED features)")
            synth.generate(data, target, seed=0, force=True, **opts)
        return target
    if p.is_dir():
        return p  # a standard layout without dataset.json: load_dataset infers its description
    raise NocoError(f"--data {data!r}: no such dataset directory, and not a synth preset "
                    f"({', '.join(synth.PRESETS)})")


def _check_label_count(name: str, labels: dict, pool: dict, conf: float, setting: str) -> None:
    """No pseudo-label at all is an error (a detector trained on nothing is a silently wrong result);
    very few is a warning. Both name the confidence the pool reaches and the settings to look at."""
    n = sum(len(v) for v in labels.values())
    n_pool = sum(len(v) for v in pool.values())
    top = max((float(v.scores.max()) for v in pool.values() if len(v)), default=0.0)
    where = (f"label set {name!r}: {n} labels on {len(labels)} training videos from a pool of {n_pool} "
             f"proposals (highest confidence {top:.3f}, threshold correction.{setting} = {conf})")
    hint = ("the base model's confidence scale may not fit these features: look at wtal.oic_scale "
            f"(confidence = OIC / oic_scale) and correction.{setting}, or pass another method's proposals "
            "with --proposals (docs/METHOD.md, stage 1)")
    if n == 0:
        raise NocoError(f"{where}: no pseudo-label to train a detector on; {hint}")
    if n < 0.25 * len(labels):
        log.warning(f"noco: {where}: fewer labels than a quarter of the videos; {hint}")


def simulated_note(ds) -> str:
    """A plain statement when ``ds`` was written by ``noco synth`` (its features are simulated)."""
    try:
        desc = read_json(Path(ds.root) / "dataset.json", "dataset description")
    except Exception:  # noqa: BLE001 - a note, never an error
        return ""
    gen = desc.get("generator") if isinstance(desc, dict) else None
    if not (isinstance(gen, dict) and gen.get("program") == "noco synth"):
        return ""
    preset = gen.get("preset", "simulated")
    real = {"thumos14-sim": "THUMOS14", "tiny": "THUMOS14", "anet12-sim": "ActivityNet v1.2"}.get(preset, "real")
    return (f"{preset}: real {real} annotations with SIMULATED features; the numbers are not comparable "
            f"to results on real {real} features")


# --------------------------------------------------------------------------- stages
class Pipeline:
    def __init__(self, dataset, out: Path, cfg: PipelineConfig, seed: int = 0, device: str = "cpu",
                 proposals: Path | None = None, wtal_predictions: Path | None = None, precision: str = "fp32",
                 tensorboard: bool = False):
        """``proposals`` / ``wtal_predictions``: another WTAL method's training-subset proposal pool
        and test-subset detections (ActivityNet result format) instead of the built-in base model."""
        self.proposals = Path(proposals) if proposals else None
        self.wtal_predictions = Path(wtal_predictions) if wtal_predictions else None
        if self.wtal_predictions and not self.proposals:
            raise NocoError("--wtal-predictions needs --proposals (the same method's training proposals)")
        self.ds = dataset
        self.out = Path(out)
        self.cfg = cfg
        self.seed = seed
        self.device = device
        self.precision = precision  # detector training / inference: "fp32" or "bf16" (a runtime choice)
        self.tensorboard = tensorboard  # TensorBoard scalars of every training stage in W/tensorboard/
        self.sdir = self.out / f"seed{seed}"
        self.timings: dict[str, float] = {}
        # Under torchrun every rank runs the pipeline: training stages run on all ranks (DDP), the
        # single-process stages (proposals, CALA, prediction, evaluation) and every file write on
        # rank 0 while the others wait; every rank then reads the same files.
        from .detector.train import dist_info

        self.world, self.rank = dist_info()[:2]

    # ---- helpers
    @property
    def main(self) -> bool:
        return self.rank == 0

    def _sync(self) -> None:
        from .detector.train import barrier

        barrier()

    def _cached(self, path: Path, key: Any) -> bool:
        """True when ``path`` exists and was produced by the same stage configuration (rank 0
        decides for every rank)."""
        hit = False
        if self.main:
            meta = path.with_name(path.name + ".meta.json")
            if path.is_file() and meta.is_file():
                if read_json(meta, "stage metadata").get("fingerprint") == _fingerprint(key):
                    hit = True
                else:
                    log.warning(f"noco: {path} was made with another configuration; recomputing it")
        if self.world > 1:
            import torch.distributed as dist

            flag = [hit]
            dist.broadcast_object_list(flag, src=0)
            hit = bool(flag[0])
        return hit

    def _mark(self, path: Path, key: Any) -> None:
        if self.main:
            atomic_write_json(path.with_name(path.name + ".meta.json"), {"fingerprint": _fingerprint(key)})

    def _prepare(self, stage_dir: Path, key: Any) -> Path:
        """A training stage's folder; emptied first when it holds a run of another configuration (so
        ``resume`` only ever continues the same configuration)."""
        import shutil

        tag = stage_dir / "stage.json"
        fp = _fingerprint(key)
        if self.main:
            if stage_dir.exists() and (not tag.is_file() or read_json(tag, "stage tag").get("fingerprint") != fp):
                if any(stage_dir.iterdir()):
                    log.warning(f"noco: {stage_dir} holds a run of another configuration; starting it again")
                shutil.rmtree(stage_dir)
            check_writable_dir(stage_dir)
            atomic_write_json(tag, {"fingerprint": fp})
        self._sync()
        return stage_dir

    def _tb(self, stage: str) -> Path | None:
        return self.out / "tensorboard" / f"seed{self.seed}" / stage if self.tensorboard else None

    def _timed(self, name: str, t0: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    # ---- stage 1: WTAL
    @property
    def has_wtal_row(self) -> bool:
        return self.proposals is None or self.wtal_predictions is not None

    def wtal_key(self) -> dict:
        if self.proposals is not None:
            import hashlib as _h

            def digest(p):
                return _h.sha256(p.read_bytes()).hexdigest()[:16] if p else None

            return {"external": digest(self.proposals), "test": digest(self.wtal_predictions),
                    "data": self.ds.settings()}
        return {"wtal": dataclasses.asdict(self.cfg.wtal), "seed": self.seed, "val": self.cfg.val_fraction,
                "data": self.ds.settings()}

    def wtal_checkpoint(self) -> Path:
        from .wtal.train import train_wtal

        ck = self.sdir / "wtal" / "wtal.pt"
        if self._cached(ck, self.wtal_key()):
            return ck
        t0 = time.perf_counter()
        log.info("noco: [stage 1] training the WTAL base model from video-level labels")
        wdir = self._prepare(self.sdir / "wtal", self.wtal_key())
        path = train_wtal(self.ds, self.cfg.wtal, wdir, device=self.device, seed=self.seed,
                          val_fraction=self.cfg.val_fraction, resume=True, tensorboard=self._tb("wtal"))
        if Path(path) != ck:
            raise NocoError(f"internal: WTAL checkpoint expected at {ck}, got {path}")
        self._mark(ck, self.wtal_key())
        self._sync()
        self._timed("wtal_train", t0)
        return ck

    def wtal_test_predictions(self) -> dict[str, Instances]:
        from .wtal.train import predict_wtal

        path = self.sdir / "wtal" / "test.json"
        key = self.wtal_key()
        if not self._cached(path, key):
            t0 = time.perf_counter()
            if self.proposals is not None:
                if self.wtal_predictions is None:
                    raise NocoError("no WTAL test detections for the external base model (--wtal-predictions)")
                dets = self._external(self.wtal_predictions, self.ds.test_subset, "WTAL test detections")
            else:
                ck = self.wtal_checkpoint()
                dets = predict_wtal(ck, self.ds, self.ds.test_subset, device=self.device) if self.main else {}
            if self.main:
                write_instances(path, dets, self.ds.classes, with_weight=False)
            self._mark(path, key)
            self._sync()
            self._timed("wtal_predict", t0)
        return read_instances(path, self.ds.classes)

    def proposal_pool(self) -> dict[str, Instances]:
        from .wtal.train import propose_wtal

        path = self.sdir / "wtal" / "pool.json"
        key = self.wtal_key()
        if not self._cached(path, key):
            t0 = time.perf_counter()
            if self.proposals is not None:
                log.info(f"noco: [stage 1] proposal pool O from {self.proposals} (external base model)")
                pool = self._external(self.proposals, self.ds.train_subset, "proposal pool")
            else:
                log.info("noco: [stage 1] dense proposal pool O on the training subset")
                ck = self.wtal_checkpoint()
                pool = propose_wtal(ck, self.ds, self.ds.train_subset, device=self.device) if self.main else {}
            if self.main:
                write_instances(path, pool, self.ds.classes, with_weight=False)
            self._mark(path, key)
            self._sync()
            self._timed("wtal_propose", t0)
        return read_instances(path, self.ds.classes)

    def wtal_video_scores(self) -> dict[str, torch.Tensor] | None:
        """The built-in WTAL model's video-level class scores on the test subset (None with an
        external base model, which gives detections only)."""
        from .wtal.video_scores import read_video_scores, video_scores, write_video_scores

        if self.proposals is not None:
            return None
        path = self.sdir / "wtal" / "test_scores.json"
        key = self.wtal_key()
        if not self._cached(path, key):
            t0 = time.perf_counter()
            ck = self.wtal_checkpoint()
            if self.main:
                scores = video_scores(ck, self.ds, self.ds.test_subset, device=self.device)
                write_video_scores(path, scores, self.ds.classes)
            self._mark(path, key)
            self._sync()
            self._timed("wtal_video_scores", t0)
        return read_video_scores(path, self.ds.classes)

    def _external(self, path: Path, subset: str, what: str) -> dict[str, Instances]:
        ids = [v.id for v in self.ds.subset(subset)]
        dets = read_instances(path, self.ds.classes, videos=ids, what=what)
        if not dets:
            raise NocoError(f"{path}: {what} has none of the {len(ids)} videos of subset {subset!r}")
        missing = [v for v in ids if v not in dets]
        if missing:
            log.warning(f"{path}: {len(missing)} videos of subset {subset!r} have no entry (e.g. {missing[0]}); "
                        "they get no instances")
        return {v: dets.get(v, Instances.empty()) for v in ids}

    # ---- stage 1b: label sets
    def label_set(self, name: str) -> dict[str, Instances]:
        """'gt', 'a' (baseline filter) or 'b' (CALA) on the training subset."""
        from .labels.cala import baseline_filter_all, cala_all

        if name == "gt":
            return self.ds.ground_truth(self.ds.train_subset)
        path = self.sdir / "labels" / f"{name}.json"
        corr = self.cfg.correction
        key = self.label_key(name)
        if not self._cached(path, key):
            pool = self.proposal_pool()
            t0 = time.perf_counter()
            if name not in ("a", "b"):
                raise NocoError(f"unknown label set {name!r}")
            if self.main:
                if name == "a":
                    labels = baseline_filter_all(pool, conf=corr.baseline_conf, nms=corr.cala_nms)
                    _check_label_count(name, labels, pool, corr.baseline_conf, "baseline_conf")
                else:
                    log.info("noco: [stage 1] CALA: context-aware label augmentation")
                    labels = cala_all(pool, **corr.cala_kwargs())
                    _check_label_count(name, labels, pool, corr.cala_conf, "cala_conf")
                write_instances(path, labels, self.ds.classes)
            self._mark(path, key)
            self._sync()
            self._timed(f"labels_{name}", t0)
        return read_instances(path, self.ds.classes)

    def label_key(self, name: str) -> dict:
        corr = self.cfg.correction
        # row a's filter sits under the key "cala" too, so that caches written before it had its own
        # threshold (baseline_conf) stay valid
        cala = corr.cala_kwargs()
        if cala["instance_weight"] == "mean":  # the default, and the only weight before the option
            del cala["instance_weight"]
        return {"wtal": self.wtal_key(), "label": name,
                "cala": cala if name == "b" else {"conf": corr.baseline_conf, "nms": corr.cala_nms}}

    def uncertain_regions(self) -> dict[str, Instances] | None:
        """The training videos' uncertain regions (``correction.ignore_conf``; None when off): their
        pool proposals of the video's classes scoring in [ignore_conf, cala_conf)."""
        from .labels.ignore import uncertain_regions_all

        corr = self.cfg.correction
        if corr.ignore_conf <= 0:
            return None
        return uncertain_regions_all(self.proposal_pool(), corr.ignore_conf, corr.cala_conf, self.video_classes())

    def video_classes(self) -> dict[str, list[int]]:
        """The training videos' video-level labels (the weak supervision): ``{video: class ids}``."""
        return {v.id: list(v.class_ids) for v in self.ds.weak(self.ds.train_subset)}

    # ---- stage 2/3: one detector per row
    def teacher_row(self, row: str) -> str | None:
        """The row whose detector is ``row``'s teacher (None for rows trained on static labels)."""
        spec = ROW_SPEC[row]
        if "teacher" not in spec:
            return None
        return "bh" if spec["hpm"] and self.cfg.correction.teacher_hpm else spec["teacher"]

    def row_key(self, row: str) -> dict:
        spec = ROW_SPEC[row]
        key = {"row": row, "spec": spec, "seed": self.seed, "data": self.ds.settings(),
               "detector": _detector_key(self.cfg.detector)}
        if spec["labels"] != "gt":
            key["wtal"] = self.wtal_key()
            key["labels"] = self.label_key(spec["labels"])
            if spec["labels"] == "b" and self.cfg.correction.ignore_conf > 0:
                key["ignore_conf"] = self.cfg.correction.ignore_conf
        if "teacher" in spec:
            key["student"] = _detector_key(self.cfg.student)
            key["correction"] = correction_key(self.cfg.correction, spec)
            key["teacher"] = self.row_key(self.teacher_row(row))
        return key

    def row_checkpoint(self, row: str) -> Path:
        from .detector.train import StaticLabels, train_detector

        spec = ROW_SPEC[row]
        rdir = self.sdir / "rows" / row
        done = rdir / "model.pt"
        key = self.row_key(row)
        if self._cached(done, key):
            return done
        initial = self.label_set(spec["labels"])
        ignore = self.uncertain_regions() if spec["labels"] == "b" else None
        self._prepare(rdir / "train", key)
        t0 = time.perf_counter()
        if "teacher" not in spec:
            log.info(f"noco: [stage 2] training TriDet for row {row} on {len(initial)} videos' labels")
            source = StaticLabels(initial)
            ck = train_detector(self.ds, source, self.cfg.detector, rdir / "train", device=self.device,
                                seed=self.seed, resume=True, hpm=spec.get("hpm", False), precision=self.precision,
                                tensorboard=self._tb(row), ignore=ignore)
            if self.main:
                write_instances(rdir / "labels.json", initial, self.ds.classes)
        else:
            teacher = self.teacher_row(row)
            teacher_ck = self.row_checkpoint(teacher)
            t0 = time.perf_counter()
            source = self._online_source(initial, teacher_ck, spec)
            log.info(f"noco: [stage 3] row {row}: student from the teacher of row {teacher}, "
                     f"mode={spec['mode']} AIC={spec['use_aic']} MIC={spec['use_mic']} HPM={spec['hpm']}")
            ck = train_detector(self.ds, source, self.cfg.student, rdir / "train", init=teacher_ck,
                                device=self.device, seed=self.seed, resume=True, hpm=spec["hpm"],
                                precision=self.precision, tensorboard=self._tb(row), ignore=ignore)
            if self.main:
                final = self._final_source_labels(ck, source)
                write_instances(rdir / "labels.json", final, self.ds.classes)
        if self.main:
            _copy_atomic(ck, done)
        self._mark(done, key)
        self._sync()
        self._timed(f"row_{row}_train", t0)
        return done

    def _online_source(self, initial, teacher_ck: Path, spec: dict):
        from .correction.loop import OnlineCorrection
        from .detector.infer import detect, load_detector, video_meta

        corr = dataclasses.replace(self.cfg.correction, mode=spec["mode"], use_aic=spec["use_aic"],
                                   use_mic=spec["use_mic"])
        teacher, _ = load_detector(teacher_ck, device=self.device)
        metas = {v.id: video_meta(self.ds, v) for v in self.ds.subset(self.ds.train_subset)}
        # AIC, MIC and row c only ever use teacher detections above these confidences, and Soft-NMS
        # only lowers scores: candidates below the smallest of them before Soft-NMS cannot matter.
        floor = min(corr.aic_conf if corr.use_aic else 1.0, corr.mic_conf if corr.use_mic else 1.0,
                    corr.replace_conf if corr.mode == "replace" else 1.0)
        tcfg = dataclasses.replace(teacher.cfg, pre_nms_thresh=max(teacher.cfg.pre_nms_thresh, floor - 1e-6))

        def detect_fn(model, feats, vid):
            return detect(model, feats, metas[vid], tcfg)

        pool = self.proposal_pool() if corr.use_mic and corr.mic_pool_conf > 0 else None
        return OnlineCorrection(initial, teacher, detect_fn, features_fn=self.ds.features_tensor, cfg=corr,
                                video_classes=self.video_classes(), mic_pool=pool)

    def _final_source_labels(self, ck: Path, source) -> dict[str, Instances]:
        from .io import load_checkpoint

        state = load_checkpoint(ck).get("label_source")
        if state:
            source.load_state_dict(state)
        return source.final_labels()

    def row_predictions(self, row: str) -> dict[str, Instances]:
        from .detector.infer import predict_detector

        rdir = self.sdir / "rows" / row
        path = rdir / "predictions.json"
        key = self.row_key(row)
        if not self._cached(path, key):
            ck = self.row_checkpoint(row)
            t0 = time.perf_counter()
            if self.main:
                dets = predict_detector(ck, self.ds, self.ds.test_subset, device=self.device,
                                        precision=self.precision)
                write_instances(path, dets, self.ds.classes, with_weight=False)
            self._mark(path, key)
            self._sync()
            self._timed(f"row_{row}_predict", t0)
        return read_instances(path, self.ds.classes)

    # ---- metrics
    def metrics(self, name: str) -> dict:
        """Test mAP (and, for detector rows, the quality of the labels it trained on)."""
        from .eval.detection import evaluate
        from .eval.labels import label_quality

        mdir = self.sdir / ("wtal" if name == "wtal" else f"rows/{name}")
        path = mdir / "metrics.json"
        key = {"row": self.wtal_key() if name == "wtal" else self.row_key(name), "tiou": self.cfg.tiou}
        fusion = self.cfg.fusion if self.cfg.fusion.get("mode", "none") != "none" else None
        if fusion and name != "wtal":
            key["fusion"] = fusion
        if self._cached(path, key):
            return read_json(path)
        # stages every rank takes part in (they synchronise), then the evaluation on rank 0
        preds = self.wtal_test_predictions() if name == "wtal" else self.row_predictions(name)
        scores = self.wtal_video_scores() if fusion and name != "wtal" else None
        # the quality of the training labels: what the row trained on (the WTAL row: what it hands on)
        wtal_labels = self.label_set("a") if name == "wtal" else None
        if self.main:
            gt = self.ds.ground_truth(self.ds.test_subset)
            res = evaluate(gt, preds, self.ds.num_classes, self.cfg.tiou)
            m: dict[str, Any] = {"row": name, "seed": self.seed, "tiou": res["tiou"], "mAP": res["mAP"],
                                 "average": res["average"], "averages": named_averages(res["tiou"], res["mAP"])}
            if fusion and name != "wtal":
                from .detector.fusion import fuse_all

                if scores is None:
                    log.warning("noco: fusion needs the built-in WTAL model's video scores; not with --proposals")
                else:
                    fr = evaluate(gt, fuse_all(preds, scores, **fusion), self.ds.num_classes, self.cfg.tiou)
                    m["fused"] = {"fusion": fusion, "mAP": fr["mAP"], "average": fr["average"],
                                  "averages": named_averages(fr["tiou"], fr["mAP"])}
            labels = wtal_labels if name == "wtal" else read_instances(mdir / "labels.json", self.ds.classes)
            train = self.ds.subset(self.ds.train_subset)
            m["labels"] = label_quality(self.ds.ground_truth(self.ds.train_subset), labels,
                                        {v.id: v.duration for v in train}, self.ds.num_classes)
            atomic_write_json(path, m, indent=1)
        self._mark(path, key)
        self._sync()
        return read_json(path)


def correction_key(corr, spec: dict) -> dict:
    """The correction options an online row (``ROW_SPEC`` entry with a teacher) depends on, for its
    cache key: changing an option a row does not use (row a's filter for the NoCo rows, AIC's for
    row e, ...) leaves its cached detector valid. Options keyed elsewhere are left out too: CALA's
    (the label set's key), ``teacher_hpm`` and ``ignore_conf`` (the teacher's key), and the row's
    ``mode`` / ``use_aic`` / ``use_mic``, which its spec fixes."""
    d = dataclasses.asdict(corr)
    drop = {"teacher_hpm", "ignore_conf", "baseline_conf", "mode", "use_aic", "use_mic"}
    drop |= {k for k in d if k.startswith("cala_")}
    replace = spec["mode"] == "replace"
    if not replace:
        drop |= {"replace_conf", "replace_nms", "replace_fallback"}
    elif d.get("replace_fallback") == "video":  # the default, and the only rule before the option
        drop.add("replace_fallback")
    if replace or not spec["use_aic"]:
        drop |= {k for k in d if k.startswith("aic_")}
    if replace or not spec["use_mic"]:
        drop |= {k for k in d if k.startswith("mic_")}
    if not spec["hpm"]:
        drop |= {"hpm_power", "hpm_normalize", "aic_decay_unsupported"}  # only the HPM loss reads the weights
    for k in ("aic_decay_unsupported", "hpm_normalize"):
        if not d.get(k):  # off, as before the option: cached rows stay valid
            drop.add(k)
    if not d.get("mic_pool_conf"):
        drop |= {"mic_pool_conf", "mic_pool_iou"}
    return {k: v for k, v in d.items() if k not in drop}


def _detector_key(cfg) -> dict:
    d = dataclasses.asdict(cfg)
    if d["input_noise_rel"] == 0:  # the default, and the only noise before the option: old caches stay valid
        del d["input_noise_rel"]
    return d


def _copy_atomic(src: Path, dst: Path) -> None:
    from .io import atomic_write_bytes

    atomic_write_bytes(dst, Path(src).read_bytes())


from .eval.detection import named_averages  # noqa: E402  (kept importable from here)


# --------------------------------------------------------------------------- tables
def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{100 * x:5.1f}"


def _mean_std(xs: list[float]) -> tuple[float, float]:
    import statistics

    m = statistics.fmean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return m, s


def collect_metrics(out: Path) -> dict[str, dict[int, dict]]:
    """All metrics.json files under W: ``{row: {seed: metrics}}``."""
    found: dict[str, dict[int, dict]] = {}
    for sd in sorted(Path(out).glob("seed*")):
        try:
            seed = int(sd.name[4:])
        except ValueError:
            continue
        for p in [sd / "wtal" / "metrics.json", *sorted(sd.glob("rows/*/metrics.json"))]:
            if p.is_file():
                m = read_json(p)
                found.setdefault(m["row"], {})[seed] = m
    return found


def paired_gains(found: dict[str, dict[int, dict]], base: str = "a") -> str:
    """Each row's gain over row ``base`` seed by seed (both rows of a seed share its WTAL model and
    labels, so the difference removes that variance), per named average: markdown lines."""
    if base not in found:
        return ""
    lines = []
    for r in [*ROWS, *DIAGNOSTIC_ROWS]:
        seeds = sorted(set(found.get(r, {})) & set(found[base])) if r not in ("oracle", base) else []
        if len(seeds) < 2:
            continue
        for name in named_averages(found[base][seeds[0]]["tiou"], found[base][seeds[0]]["mAP"]):
            d = [100 * (named_averages(found[r][s]["tiou"], found[r][s]["mAP"])[name]
                        - named_averages(found[base][s]["tiou"], found[base][s]["mAP"])[name]) for s in seeds]
            m, sd = _mean_std(d)
            lines.append(f"- {r} − {base}, avg {name}: " + ", ".join(f"{x:+.1f}" for x in d)
                         + f" (seeds {', '.join(map(str, seeds))}); mean {m:+.2f} ± {sd:.2f}")
    return "\n".join(lines)


def gap_closed(found: dict[str, dict[int, dict]], row: str = "g", base: str = "a", oracle: str = "oracle") -> str:
    """The share of the distance from row ``base`` to the oracle that row ``row`` closes, ``(row −
    base) / (oracle − base)``, from the three rows' means over the seeds all three have, per named
    average: markdown lines ("" unless all three rows are present)."""
    seeds = sorted(set(found.get(row, {})) & set(found.get(base, {})) & set(found.get(oracle, {})))
    if not seeds:
        return ""
    m0 = found[base][seeds[0]]

    def mean(r: str, name: str) -> float:
        return _mean_std([100 * named_averages(found[r][s]["tiou"], found[r][s]["mAP"])[name] for s in seeds])[0]

    lines = []
    for name in named_averages(m0["tiou"], m0["mAP"]):
        b, x, o = mean(base, name), mean(row, name), mean(oracle, name)
        share = f"{100 * (x - b) / (o - b):.1f} %" if o != b else "-"
        lines.append(f"- ({row} − {base}) / ({oracle} − {base}), avg {name}: ({x:.1f} − {b:.1f}) / ({o:.1f} − {b:.1f}) "
                     f"= {share} (means over seeds {', '.join(map(str, seeds))})")
    return "\n".join(lines)


def _boundary_error(q: dict) -> float | None:
    if q.get("start_error") is None or q.get("end_error") is None:
        return None
    return 0.5 * (q["start_error"] + q["end_error"])


def results_table(found: dict[str, dict[int, dict]], markdown: bool = False) -> str:
    """Rows: WTAL and every ablation row present; columns: mAP per tIoU and the averages, mean (± std
    over seeds when there are several)."""
    order = [r for r in ["wtal", *ROWS, *HELPER_ROWS, *DIAGNOSTIC_ROWS] if r in found]
    if not order:
        return "(no results yet)"
    any_m = next(iter(found[order[0]].values()))
    tious = any_m["tiou"]
    avg_names = list(named_averages(tious, any_m["mAP"]))
    heads = ["row", "seeds"] + [f"{t:g}" for t in tious] + [f"avg {n}" for n in avg_names] + \
        ["label mIoU", "bnd err s", "R<2s", "merge"]
    lines = []
    for r in order:
        ms = list(found[r].values())
        cells = [ROW_TITLES.get(r, r), str(len(ms))]
        multi = len(ms) > 1

        def cell(vals, scale=100.0, fmt="{:.1f}"):
            vals = [v for v in vals if v is not None]
            if not vals:
                return "-"
            m, s = _mean_std([scale * v for v in vals])
            return (fmt.format(m) + (" ± " + fmt.format(s) if multi else ""))

        for i in range(len(tious)):
            cells.append(cell([m["mAP"][i] for m in ms]))
        for n in avg_names:
            cells.append(cell([named_averages(m["tiou"], m["mAP"]).get(n) for m in ms]))
        lq = [m.get("labels") or {} for m in ms]
        cells.append(cell([q.get("mIoU") for q in lq]))
        cells.append(cell([_boundary_error(q) for q in lq], scale=1.0, fmt="{:.2f}"))
        cells.append(cell([(q.get("recall_by_length") or {}).get(SHORT_BIN) for q in lq]))
        cells.append(cell([q.get("merge_rate") for q in lq]))
        lines.append(cells)
        fused = [m["fused"] for m in ms if m.get("fused")]
        if len(fused) == len(ms):
            fc = [f"{ROW_TITLES.get(r, r)} x WTAL video scores", str(len(ms))]
            fc += [cell([f["mAP"][i] for f in fused]) for i in range(len(tious))]
            fc += [cell([named_averages(tious, f["mAP"]).get(n) for f in fused]) for n in avg_names]
            lines.append(fc + ["-"] * 4)
    if markdown:
        out = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(heads)]
    fmt_row = lambda cs: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cs, widths)))
    return "\n".join([fmt_row(heads), fmt_row(["-" * w for w in widths])] + [fmt_row(c) for c in lines])
