"""Presets: one YAML file per dataset and size, shipped in ``noco/configs/``.

A preset file holds everything a run needs besides the data::

    description: one line
    data: thumos14-sim            # default --data of `noco run` (a synth preset or a directory)
    synth: {train_videos: 1000}   # options for generating that synth preset (optional)
    tiou: [0.1, ..., 0.7]         # evaluation thresholds
    val_fraction: 0.1             # held-out training videos for epoch / threshold choices
    wtal: {...}                   # WtalConfig fields (noco.wtal.config)
    detector: {...}               # DetectorConfig fields of the teacher and rows a, b, oracle
    student: {...}                # DetectorConfig fields of the student (on top of detector:)
    correction: {...}             # CorrectionConfig fields (noco.correction.config)
    fusion: {mode: multiply, topk: 2}  # also score the detectors with the WTAL model's video-level
                                  # class scores (noco.detector.fusion); default mode none

A section lists only what differs from the dataclass defaults (which are the published THUMOS14
recipes). ``--preset`` takes a shipped name (``noco run --help`` lists them) or a path to such a
file; every run writes its fully resolved configuration as ``W/config.yaml``, itself a preset file.
"""

from __future__ import annotations

import difflib
import functools
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import NocoError

SECTIONS = ("wtal", "detector", "student", "correction")
TOP_KEYS = ("description", "data", "synth", "tiou", "val_fraction", "fusion", *SECTIONS)
# short names kept from the first release: THUMOS14 at CPU size and at paper size
ALIASES = {"cpu": "thumos14-cpu", "paper": "thumos14"}


def names() -> list[str]:
    """Shipped preset names (aliases first)."""
    files = sorted(p.name[:-5] for p in resources.files("noco").joinpath("configs").iterdir()
                   if p.name.endswith(".yaml"))
    return list(ALIASES) + files


def is_file_spec(preset: str) -> bool:
    return str(preset).endswith((".yaml", ".yml")) or "/" in str(preset)


@functools.lru_cache(maxsize=32)
def _load_shipped(name: str) -> dict:
    text = resources.files("noco").joinpath(f"configs/{name}.yaml").read_text(encoding="utf-8")
    return _validate(_parse(text, f"preset {name!r}"), f"preset {name!r}")


def load(preset: str) -> dict:
    """The preset's content as a dict (sections always present), from a name or a YAML path."""
    if preset is None:
        return {s: {} for s in SECTIONS}
    preset = str(preset)
    if is_file_spec(preset):
        path = Path(preset)
        if not path.is_file():
            raise NocoError(f"--preset {preset}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise NocoError(f"{path}: not UTF-8 text") from None
        return _validate(_parse(text, str(path)), str(path))
    name = ALIASES.get(preset, preset)
    known = names()
    if name not in known:
        close = difflib.get_close_matches(preset, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise NocoError(f"unknown preset {preset!r}{hint}; choose from {', '.join(known)} or give a YAML file")
    d = _load_shipped(name)
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}


def section(preset: str | None, name: str) -> dict[str, Any]:
    """One section of a preset (empty for ``preset=None``: the dataclass defaults)."""
    if preset is None:
        return {}
    return dict(load(preset)[name])


def _parse(text: str, where: str) -> dict:
    import yaml

    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise NocoError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise NocoError(f"{where}: must be a YAML mapping of {', '.join(TOP_KEYS)}")
    return d


def _validate(d: dict, where: str) -> dict:
    for k in d:
        if k not in TOP_KEYS:
            close = difflib.get_close_matches(str(k), TOP_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise NocoError(f"{where}: unknown key {k!r}{hint}; keys: {', '.join(TOP_KEYS)}")
    out = dict(d)
    for s in (*SECTIONS, "synth", "fusion"):
        v = out.get(s) or {}
        if not isinstance(v, dict):
            raise NocoError(f"{where}: section {s!r} must be a mapping of option: value")
        out[s] = v
    if "tiou" in out:
        t = out["tiou"]
        if not (isinstance(t, list) and t and all(isinstance(x, (int, float)) and 0 < x <= 1 for x in t)):
            raise NocoError(f"{where}: 'tiou' must be a non-empty list of thresholds in (0, 1]")
    if "val_fraction" in out and not (isinstance(out["val_fraction"], (int, float))
                                      and 0 <= out["val_fraction"] < 1):
        raise NocoError(f"{where}: 'val_fraction' must be in [0, 1)")
    for s, fields in _section_fields().items():
        for k in out[s]:
            if k not in fields:
                close = difflib.get_close_matches(str(k), fields, n=1)
                hint = f" (did you mean {s}.{close[0]}?)" if close else ""
                raise NocoError(f"{where}: unknown option {s}.{k}{hint}")
    if out["fusion"]:
        from .detector.fusion import check_options

        bad = set(out["fusion"]) - {"mode", "topk", "power"}
        if bad:
            raise NocoError(f"{where}: unknown fusion option(s) {', '.join(sorted(bad))} (mode, topk, power)")
        try:
            check_options(out["fusion"].get("mode", "none"), out["fusion"].get("topk", 0),
                          out["fusion"].get("power", 1.0))
        except NocoError as e:
            raise NocoError(f"{where}: {e}") from None
    if "data" in out and not isinstance(out["data"], str):
        raise NocoError(f"{where}: 'data' must be a synth preset name or a dataset directory")
    return out


def _section_fields() -> dict[str, list[str]]:
    import dataclasses

    from .correction.config import CorrectionConfig
    from .detector.config import DetectorConfig
    from .wtal.config import WtalConfig

    det = [f.name for f in dataclasses.fields(DetectorConfig)]
    return {"wtal": [f.name for f in dataclasses.fields(WtalConfig)], "detector": det, "student": det,
            "correction": [f.name for f in dataclasses.fields(CorrectionConfig)]}


# --------------------------------------------------------------------------- building a stage config
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def build_config(cls, what: str, section_name: str, preset: str | None, overrides: dict[str, Any] | None):
    """A stage's dataclass config: the preset's section, then ``overrides``, each value coerced to
    the type of the field's default (so YAML and ``key=value`` spellings both work), validated.

    ``what`` names the stage in errors ("WTAL", "detector", "correction")."""
    import dataclasses

    names = [f.name for f in dataclasses.fields(cls)]
    for k in overrides or {}:
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            raise NocoError(f"unknown {what} config option {k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    values = {**section(preset, section_name), **(overrides or {})}
    defaults = cls()
    return cls(**{k: _coerce(what, k, v, getattr(defaults, k)) for k, v in values.items()}).validate()


def _coerce(what: str, name: str, v: Any, default: Any) -> Any:
    bad = NocoError(f"{what} config option {name!r}: cannot use {v!r}")
    text = v.strip() if isinstance(v, str) else None
    if isinstance(default, bool):
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if text is not None and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise bad
    if isinstance(default, int):
        if isinstance(v, bool):
            raise bad
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if text is not None and text.lstrip("+-").isdigit():
            return int(text)
        raise bad
    if isinstance(default, float):
        if isinstance(v, bool):
            raise bad
        try:
            return float(v)
        except (TypeError, ValueError):
            raise bad from None
    if isinstance(default, str):
        # a str field may also hold a number where its config allows one (correction.refresh)
        if text is not None:
            return int(text) if text.lstrip("+").isdigit() else text
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v
    if isinstance(default, list):
        try:
            if default and isinstance(default[0], list):
                return [[float(x) for x in row] for row in v]
            return [float(x) for x in v]
        except (TypeError, ValueError):
            raise bad from None
    return v
