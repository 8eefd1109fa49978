"""What makes a run folder safe to resume: checkpoints that are data only, tied to their config.

Why: a checkpoint is a pickle, and ``torch.load(weights_only=False)`` runs whatever code it names;
a truncated file (a full disk, a copy from /tmp cut short) must not block a run for good; and an
old folder made under another config must never pass its results off as the new config's.
"""

from __future__ import annotations

import errno
import logging
import pickle
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.callbacks import Callback

from lesionbench.config import ExperimentConfig
from lesionbench.errors import LesionBenchError
from lesionbench.runfolder import RunFolderError, read_run_info

log = logging.getLogger(__name__)
#: Where a run folder made under another config goes (beside the runs, never read as a run).
SUPERSEDED = "superseded"


class CheckpointError(LesionBenchError):
    """A checkpoint that is unreadable, truncated, or holds more than plain data (one line)."""


class DiskFullError(LesionBenchError):
    """No space left while writing into a run folder (one line: the folder and the space needed)."""


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


def folder_hash(run_dir: Path) -> str | None:
    """The hash of the config a run folder was made with, under today's hash rules (config.yaml),
    else the one its run.json recorded; None for a folder holding neither."""
    try:
        raw = yaml.safe_load((run_dir / "config.yaml").read_text())
        return ExperimentConfig.model_validate(raw).config_hash()
    except Exception:  # noqa: BLE001 - missing, unreadable or from an older schema: ask run.json
        pass
    try:
        return read_run_info(run_dir).config_hash
    except RunFolderError:
        return None


#: Files of the run's claim (studies/claim.py): they belong to the worker training the run now.
CLAIM_FILES = ("claim.json", "claims.log", ".claim-", ".takeover-")


def set_aside_if_stale(run_dir: Path, cfg: ExperimentConfig) -> Path | None:
    """Move a result made under another config to ``superseded/<run>.old-<hash>-<time>`` (never
    overwritten, never deleted), so the new config starts fresh; returns where it went. A folder with
    no config of its own (only a claim, or a run killed before it wrote config.yaml) holds no result
    and stays; the claim files stay in any case, they are the current worker's lock."""
    old = folder_hash(run_dir) if run_dir.is_dir() else None
    if old is None or old == cfg.config_hash():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target_dir = run_dir.parent / SUPERSEDED
    base = f"{run_dir.name}.old-{old}-{stamp}"
    target, n = target_dir / base, 1
    while target.exists():
        target, n = target_dir / f"{base}-{n}", n + 1
    target.mkdir(parents=True)
    for entry in run_dir.iterdir():
        if not entry.name.startswith(CLAIM_FILES):
            entry.rename(target / entry.name)
    log.warning("%s: made under another config (hash %s, now %s); kept as %s, training afresh",
                run_dir, old, cfg.config_hash(), target)
    return target


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """About one Lightning checkpoint of ``model``: its weights and an Adam-like optimiser's two moments."""
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters())


def disk_full(run_dir: Path, err: OSError, one_checkpoint: int | None) -> DiskFullError:
    """One line for ENOSPC: the folder, the free space, and about what the run needs (its best and
    last checkpoints, rewritten every epoch)."""
    free = shutil.disk_usage(_existing(run_dir)).free
    need = f"about {2 * one_checkpoint / 2**20:.1f} MB (best + last checkpoint)" if one_checkpoint else \
        "room for its checkpoints"
    what = f" writing {Path(err.filename).name}" if err.filename else ""
    return DiskFullError(f"{run_dir}: no space left on the device{what}: {free / 2**20:.0f} MB free, the run "
                         f"needs {need}; free space or choose another --out, then re-run to resume")


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno == errno.ENOSPC
