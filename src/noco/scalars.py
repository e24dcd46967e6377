"""Optional TensorBoard scalars for the training loops (``--tensorboard``).

``Scalars(None)`` does nothing, so loops call it unconditionally. With a folder it writes
TensorBoard event files there through ``torch.utils.tensorboard`` (needs the ``tensorboard``
package: ``pip install "noco[tensorboard]"``); asking for it without the package is a clear error
before any training starts. Only rank 0 of a distributed run writes.
"""

from __future__ import annotations

from pathlib import Path

from .errors import NocoError


class Scalars:
    def __init__(self, logdir: str | Path | None, rank: int = 0):
        self.writer = None
        if logdir is None or rank != 0:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise NocoError("--tensorboard needs the tensorboard package: pip install tensorboard "
                            "(or pip install -e \".[tensorboard]\")") from None
        from .io import check_writable_dir

        self.writer = SummaryWriter(log_dir=str(check_writable_dir(Path(logdir))))

    def add(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, float(value), int(step))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
