"""Trainer assembly: Lightning's own callbacks for checkpoints, early stopping and LR logging."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from lesionbench.config import ExperimentConfig, PhaseConfig
from lesionbench.training.loggers import build_loggers, test_callbacks
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
    """One Trainer per phase: checkpoint on the recipe's validation metric, optional early stopping.

    ``loggers``: the run's own (train() makes them once for all its phases); default: new ones.
    """
    monitor, mode = selection_monitor(cfg, phase)
    ckpt = ModelCheckpoint(
        dirpath=phase_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1, save_last=True,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    callbacks: list[Callback] = [ckpt, LearningRateMonitor(logging_interval="epoch"), *extra, *test_callbacks(cfg)]
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
        logger=loggers if loggers is not None else run_loggers(cfg, run_dir),
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    return trainer, ckpt


def run_loggers(cfg: ExperimentConfig, run_dir: Path) -> list[Logger]:
    """A run's loggers, made once by its owner and shared by its phases, so logs/metrics.csv holds
    every epoch; the owner closes them (training.loggers.close_loggers)."""
    metrics = run_dir / "logs" / "metrics.csv"
    resuming = any((run_dir / "checkpoints").glob("*/last.ckpt"))
    if metrics.is_file() and not resuming:  # a fresh start over an old folder: its old log goes
        metrics.unlink()
    elif metrics.is_file():  # a resumed run: keep the earlier epochs (CSVLogger would delete them)
        n = len(list(metrics.parent.glob("metrics.before-*.csv")))
        metrics.rename(metrics.parent / f"metrics.before-{n}.csv")
    return [CSVLogger(save_dir=run_dir, name="logs", version=""), *build_loggers(cfg, run_dir)]


def merge_csv_logs(log_dir: Path) -> None:
    """Put the epochs logged before a resume back in front of the new ones."""
    before = sorted(log_dir.glob("metrics.before-*.csv"))
    current = log_dir / "metrics.csv"
    if not before:
        return
    frames = [pd.read_csv(p) for p in before + ([current] if current.is_file() else [])]
    tmp = current.with_suffix(".tmp")
    pd.concat(frames, ignore_index=True).to_csv(tmp, index=False)
    tmp.replace(current)
    for p in before:
        p.unlink()
