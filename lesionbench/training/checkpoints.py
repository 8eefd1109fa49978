"""What makes a Lightning run safe to resume: checkpoints that are data only, tied to their config.

Why: a checkpoint is a pickle, and ``torch.load(weights_only=False)`` runs whatever code it names;
a truncated file (a full disk, a copy from /tmp cut short) must not block a run for good, and a
checkpoint made under another config must never be resumed (a stale run folder as a whole is set
aside by lesionbench/lifecycle/runs.py before anything is written).
"""

from __future__ import annotations

import logging
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from lesionbench.errors import LesionBenchError
from lesionbench.io import DiskFullError, free_bytes

log = logging.getLogger(__name__)


class CheckpointError(LesionBenchError):
    """A checkpoint that is unreadable, truncated, or holds more than plain data (one line)."""


def _reason(err: BaseException) -> str:
    """The informative sentence of torch's long message (the global it refused, the zip error)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    named = [ln for ln in lines if "GLOBAL" in ln or "Unsupported global" in ln]
    return (named or lines or [type(err).__name__])[0].split(". ")[0][:300]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, read as data only (tensors, numbers, strings, containers)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, foreign or hostile: all refused the same way
        hostile = isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err)
        kind = "holds objects other than plain data" if hostile else "is unreadable"
        raise CheckpointError(f"{path}: refused: the checkpoint {kind} ({_reason(err)}); "
                              "delete it (a run restarts the phase) or re-create the run") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a LesionBench checkpoint (no state_dict); re-create the run")
    return ckpt


def resume_checkpoint(phase_dir: Path, config_hash: str) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint of this config in ``phase_dir`` (last, then best), else None.

    A bad file is logged in one line and renamed ``*.corrupt`` so it is not tried again.
    """
    for name in ("last.ckpt", "best.ckpt"):
        path = phase_dir / name
        if not path.is_file():
            continue
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as err:
            log.warning("%s; falling back to an earlier checkpoint or the phase's start", err)
            path.replace(path.with_name(path.name + ".corrupt"))
            continue
        if (ckpt.get("lesionbench") or {}).get("config_hash") == config_hash:
            return path, ckpt
        log.warning("%s: made under another config; not resumed", path)
    return None


class TrainClock(Callback):
    """Fit time that survives resumes: each checkpoint carries the seconds trained so far and the
    config hash it was made under; a resumed fit starts counting from the checkpoint's seconds."""

    def __init__(self, config_hash: str) -> None:
        self.config_hash = config_hash
        self.previous = 0.0
        self._start = time.perf_counter()

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.previous + time.perf_counter() - self._start

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint["lesionbench"] = {"config_hash": self.config_hash, "train_seconds": self.seconds}

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        self.previous = float((checkpoint.get("lesionbench") or {}).get("train_seconds", 0.0))


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """About one Lightning checkpoint of ``model``: its weights and an Adam-like optimiser's two moments."""
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters())


def disk_full(run_dir: Path, err: OSError, one_checkpoint: int | None) -> DiskFullError:
    """One line for ENOSPC while training: the folder, the free space, and about what the run needs
    (its best and last checkpoints, rewritten every epoch)."""
    need = f"about {2 * one_checkpoint / 2**20:.1f} MB (best + last checkpoint)" if one_checkpoint else \
        "room for its checkpoints"
    target = getattr(err, "filename2", None) or err.filename  # a copy names its source first
    what = f" writing {Path(target).name}" if target else ""
    free = free_bytes(run_dir)
    return DiskFullError(f"{run_dir}: no space left on the device{what}: "
                         f"{'unknown space' if free is None else f'{free / 2**20:.0f} MB'} free, the run needs {need}; "
                         "free space or choose another --out, then re-run to resume")


def drop_truncated(run_dir: Path) -> list[Path]:
    """Remove the checkpoints a full disk cut short (a torch checkpoint is a zip archive, whose
    directory is written last); returns them. Whole checkpoints stay: the run resumes from them
    once there is room."""
    folder = run_dir / "checkpoints"
    cut = [p for p in folder.rglob("*.ckpt") if p.is_file() and not zipfile.is_zipfile(p)] if folder.is_dir() else []
    for path in cut:
        path.unlink(missing_ok=True)
        log.warning("%s: removed (cut short by the full disk)", path)
    return cut
