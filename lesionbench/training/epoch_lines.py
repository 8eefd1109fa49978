"""One plain line per epoch when stdout is not a terminal (a pipe, a log file, CI, a SLURM task).

On a terminal the run's progress is Lightning's bar or the live table (lesionbench/progress.py); a log gets
nothing from either for the whole of a run, so each finished epoch prints one flushed line instead:
``kvasir-seg_unet__s0 epoch 3/40: train loss 0.4312, val/primary 0.6120 (41 s; ETA 25 min)``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from lightning.pytorch.callbacks import Callback


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def _value(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    return "—" if value is None else f"{float(value):.4f}"


class EpochLines(Callback):
    """Prints epoch, train loss, the validation metric, the epoch's time and the phase's ETA (rank zero only)."""

    def __init__(self, run: str, phase: str, monitor: str | None, stream: Any = None) -> None:
        self.label = run if phase == "train" else f"{run} [{phase}]"
        self.monitor = monitor or "val/dice"
        self.stream = stream
        self.started = 0.0
        self.epoch_times: list[float] = []

    def _out(self) -> Any:
        return self.stream if self.stream is not None else sys.stdout

    def _on(self, trainer: Any) -> bool:
        out = self._out()
        return trainer.is_global_zero and not (hasattr(out, "isatty") and out.isatty())

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """After the epoch's validation (Lightning runs it before this hook): the epoch's own figures."""
        if trainer.sanity_checking or not self._on(trainer):
            return
        took = time.perf_counter() - self.started
        self.epoch_times.append(took)
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        metrics = trainer.callback_metrics
        left = max(total - epoch, 0) * sum(self.epoch_times) / len(self.epoch_times) if total and total > 0 else None
        eta = "" if left is None else f"; ETA {_duration(left)}" if left else "; last epoch"
        print(f"{self.label} epoch {epoch}/{total}: train loss {_value(metrics, 'train/loss')}, "
              f"{self.monitor} {_value(metrics, self.monitor)} ({_duration(took)}{eta})", file=self._out(), flush=True)
