"""Atomic output and careful input: every file noco writes appears whole or not at all."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

from .errors import DataError, NocoError, OutputError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder + rename."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: cannot write the output file: a directory has this name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write the output file ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, NocoError):
            raise OutputError(f"{path}: cannot write the output file ({e.strerror or e})") from None
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_save_torch(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_npy(path: str | os.PathLike, array) -> Path:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file; missing, non-UTF-8 or malformed files raise one clear DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: {what} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what}: {e.strerror}") from None
    if not text.strip():
        raise DataError(f"{path}: {what} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: {what} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; arbitrary pickles are refused."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise NocoError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a user-facing refusal
        raise NocoError(
            f"{path}: not a loadable noco checkpoint (refused by weights_only=True loading, which runs no "
            f"code from the file: {_load_failure(e)})"
        ) from None
    if not isinstance(obj, dict):
        raise NocoError(f"{path}: not a noco checkpoint (expected a dict, found {type(obj).__name__})")
    return obj


# torch's weights_only refusal wraps the reason in advice that does not apply here (in particular
# to retry with weights_only=False): keep only the reason.
_TORCH_ADVICE = ("weights only load failed", "please file an issue", "check the documentation", "(1)", "(2)",
                 "re-running", "in pytorch 2.6")


def _load_failure(e: Exception) -> str:
    text = str(e)
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return (f"it holds Python objects ({m.group(1)}), not only tensors, dicts, lists, numbers and "
                f"strings")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reasons = [ln for ln in lines if not ln.lower().startswith(_TORCH_ADVICE)]
    reason = (reasons or [type(e).__name__])[0].split(". ")[0]
    return reason[:200].rstrip(".")


def check_writable_dir(path: str | os.PathLike, min_free_mb: int = 50) -> Path:
    """Fail early (before hours of training) if ``path`` cannot hold our outputs."""
    import shutil
    import tempfile

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a probe of its own: runs of other rows (or ranks) may probe the same folder at once
        with tempfile.NamedTemporaryFile(dir=path, prefix=".noco_write_probe_"):
            pass
    except OSError as e:
        raise NocoError(f"{path}: output directory is not writable ({e.strerror})") from None
    free_mb = shutil.disk_usage(path).free // (1 << 20)
    if free_mb < min_free_mb:
        raise NocoError(f"{path}: only {free_mb} MiB free on disk, need at least {min_free_mb} MiB")
    return path


def progress_enabled() -> bool:
    """Progress bars only when a person watches: stderr is a terminal."""
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
