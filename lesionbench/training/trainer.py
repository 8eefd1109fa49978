"""One Lightning Trainer per phase (checkpoint + early stopping on the recipe's monitor), and the per-phase CSV logs."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from lesionbench.config import ExperimentConfig, PhaseConfig
from lesionbench.io import atomic_write_csv
from lesionbench.training.loggers import logger_test_callbacks
from lesionbench.training.task import selection_monitor


def build_trainer(
    cfg: ExperimentConfig,
    phase: PhaseConfig,
    phase_dir: Path,
    run_dir: Path,
    extra: list[Callback],
    progress: bool = True,
    loggers: list[Logger] | None = None,
) -> tuple[L.Trainer, ModelCheckpoint]:
    """One Trainer per phase: checkpoint on the recipe's validation metric (or, with
    ``trainer.checkpoint: last``, only the last epoch), optional early stopping.

    ``loggers``: the run's other loggers (W&B), made once by train() and shared by its phases;
    each phase adds its own CSV log (logs/<phase>/metrics.csv).
    """
    monitor, mode = selection_monitor(cfg, phase)
    if cfg.trainer.checkpoint == "last":  # the write-up keeps its last epoch: no choice on validation
        ckpt = ModelCheckpoint(dirpath=phase_dir, monitor=None, save_top_k=0, save_last=True,
                               enable_version_counter=False)
    else:
        ckpt = ModelCheckpoint(
            dirpath=phase_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1, save_last=True,
            auto_insert_metric_name=False, enable_version_counter=False,
        )
    from lesionbench.training.epoch_lines import EpochLines  # a plain line per epoch when stdout is not a terminal

    callbacks: list[Callback] = [ckpt, LearningRateMonitor(logging_interval="epoch"), *extra, *logger_test_callbacks(cfg),
                                 EpochLines(run_dir.name, phase.name, monitor)]
    if phase.early_stopping is not None:
        es = phase.early_stopping
        callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode, patience=es.patience, min_delta=es.min_delta))
    t = cfg.trainer
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=phase.epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val,
        accumulate_grad_batches=t.accumulate_grad_batches,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        logger=[phase_log(run_dir, phase_dir.name), *(loggers or [])],
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    return trainer, ckpt


#: Per phase: the epochs of earlier sessions (trimmed at the resumed step) beside this session's log.
HISTORY = "history.csv"


def phase_log(run_dir: Path, phase: str) -> CSVLogger:
    """The phase's own CSV log, logs/<phase>/metrics.csv (the run's other loggers are made once by
    train() and shared by its phases)."""
    return CSVLogger(save_dir=run_dir / "logs", name=phase, version="", flush_logs_every_n_steps=1)


def _rows(*paths: Path) -> list[dict[str, str]]:
    """The rows of Lightning CSV logs, as written (text, so integers stay integers)."""
    rows: list[dict[str, str]] = []
    for p in paths:
        if p.is_file():
            with open(p, newline="") as fh:
                rows.extend(csv.DictReader(fh))
    return rows


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """Rows with the union of their columns, sorted as Lightning's CSVLogger sorts them."""
    columns = sorted({k for r in rows for k in r})
    atomic_write_csv(path, [{c: r.get(c, "") for c in columns} for r in rows])


def start_phase_log(log_dir: Path, resume_step: int | None) -> None:
    """Before a phase's fit: keep the rows of earlier sessions below the step it resumes at (each
    epoch is logged once), or none when the phase starts afresh."""
    history, current = log_dir / HISTORY, log_dir / "metrics.csv"
    kept = [r for r in _rows(history, current) if resume_step is not None and float(r["step"]) < resume_step]
    if kept:
        _write_rows(history, kept)
    else:
        history.unlink(missing_ok=True)
    current.unlink(missing_ok=True)


def merge_csv_logs(log_dir: Path, phases: list[str]) -> None:
    """logs/metrics.csv: every phase's epochs, in order, each once."""
    rows = _rows(*(log_dir / phase / name for phase in phases for name in (HISTORY, "metrics.csv")))
    if rows:
        _write_rows(log_dir / "metrics.csv", rows)
