"""train(cfg, run_dir): the only way a training happens. Suites and studies compose it."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lesionbench.config import ExperimentConfig
from lesionbench.data import SegmentationDataModule
from lesionbench.io import atomic_write_csv, atomic_write_json, atomic_write_text, read_json
from lesionbench.training.callbacks import build_trainer, merge_csv_logs, release_loggers
from lesionbench.training.metrics import summarize
from lesionbench.training.profile import measure_cost
from lesionbench.training.provenance import provenance
from lesionbench.training.task import SegmentationTask

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    best_val: float | None = None
    error: str | None = None


def is_finished(run_dir: Path, cfg: ExperimentConfig) -> bool:
    """A run is done when its metrics.json exists, was made from this exact config, and its best
    checkpoint is still there (a copied-in result without weights is re-made, e.g. the committed demo)."""
    try:
        info = read_json(run_dir / "run.json")
    except (OSError, ValueError):
        return False
    best = info.get("best_checkpoint")
    return (run_dir / "metrics.json").is_file() and info.get("status") == "finished" \
        and info.get("config_hash") == cfg.config_hash() and bool(best) and (run_dir / best).is_file()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def train(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    suite: str = "adhoc",
    callbacks: list[Callback] | None = None,
    progress: bool = True,
) -> RunResult:
    """Fit every phase, restore the best weights, test them, write the run folder (see _train).

    The run's loggers are shared by its phases and dropped when it ends, finished or not.
    With ``engine: nnunet`` nnU-Net v2 trains instead (lesionbench/engines/nnunet.py), same run folder.
    """
    if cfg.engine == "nnunet":
        from lesionbench.engines.nnunet import train_nnunet

        return train_nnunet(cfg, Path(run_dir), suite)
    try:
        return _train(cfg, Path(run_dir), suite, callbacks, progress)
    finally:
        release_loggers(Path(run_dir))


def _train(
    cfg: ExperimentConfig,
    run_dir: Path,
    suite: str,
    callbacks: list[Callback] | None,
    progress: bool,
) -> RunResult:
    """Fit every phase, restore the best weights, test them, write the run folder.

    Resumes an interrupted run from its last checkpoint; skips phases already done.
    Only global rank zero writes files, so DDP runs write one folder.
    """
    run_dir = Path(run_dir)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    dm = SegmentationDataModule.from_experiment(cfg)
    dm.prepare_data()
    dm.setup("fit")
    task = SegmentationTask(cfg.model_dump(mode="json"))
    info: dict[str, Any] = {
        "status": "running", "run": run_dir.name, "suite": suite, "experiment": cfg.name,
        "config_hash": cfg.config_hash(), "seed": cfg.trainer.seed, "started": _now(),
        "data_manifest": dm.manifest_hash, **provenance(),
    }
    writer = _RankZeroWriter(run_dir)
    writer.text("config.yaml", cfg.to_yaml())
    writer.json("run.json", info)

    train_time, trainer, best_val = 0.0, None, None
    for index, phase in enumerate(task.phases):
        task.set_phase(index)
        phase_dir = run_dir / "checkpoints" / f"{index}-{phase.name}"
        done = phase_dir / "done.json"
        if done.is_file():
            best = read_json(done)
            _load_weights(task, phase_dir / best["best"])
            best_val, train_time = best.get("score"), train_time + best.get("seconds", 0.0)
            continue
        trainer, ckpt = build_trainer(cfg, phase, phase_dir, run_dir, callbacks or [], progress)
        last = phase_dir / "last.ckpt"
        start = time.perf_counter()
        trainer.fit(task, datamodule=dm, ckpt_path=str(last) if last.is_file() else None)
        seconds = time.perf_counter() - start
        train_time += seconds
        if trainer.interrupted:
            raise KeyboardInterrupt
        best_path = Path(ckpt.best_model_path) if ckpt.best_model_path else last
        if best_path.is_file():
            _load_weights(task, best_path)  # "restore best weights" before the next phase
        else:  # nothing was trained (e.g. limit_train_batches=0): keep these weights
            trainer.save_checkpoint(best_path)
        score = ckpt.best_model_score
        best_val = float(score) if score is not None else best_val
        writer.json(done.relative_to(run_dir), {"best": best_path.name, "score": best_val, "seconds": seconds})

    if trainer is None:  # every phase was done before an interruption: a fresh trainer tests
        trainer, _ = build_trainer(cfg, task.phases[-1], run_dir / "checkpoints" / "test", run_dir, [], progress)
    dm.setup("test")
    trainer.test(task, datamodule=dm, verbose=False)
    if not trainer.is_global_zero:
        return RunResult(run_dir, "finished", best_val=best_val)

    index, stats = task.test_result
    ids = [dm.test_ids[i] for i in index.reshape(-1).tolist()]  # torchmetrics squeezes a 1-image result
    metrics, rows = summarize(stats, ids, cfg.dataset.name, dm.class_names)
    last_phase = task.phases[-1]
    metrics.update({
        "experiment": cfg.name, "run": run_dir.name, "suite": suite, "dataset": cfg.dataset.name,
        "model": cfg.model.name, "seed": cfg.trainer.seed, "config_hash": cfg.config_hash(),
        "n_test": len(ids), "image_size": cfg.dataset.image_size,
        "best_val": {"val/dice": best_val},
        "published": [p.model_dump() for p in cfg.published],
        "cost": {**measure_cost(task.model, cfg.dataset.image_size), "train_time_s": round(train_time, 2)},
        "best_checkpoint": str(_best_checkpoint(run_dir, task).relative_to(run_dir)),
        "phases": [p.name for p in task.phases],
        "last_phase": last_phase.name,
    })
    merge_csv_logs(run_dir / "logs")
    atomic_write_csv(run_dir / "per_image.csv", rows)
    atomic_write_json(run_dir / "metrics.json", metrics)
    info.update(status="finished", finished=_now(), train_time_s=round(train_time, 2),
                best_checkpoint=metrics["best_checkpoint"])
    atomic_write_json(run_dir / "run.json", info)
    return RunResult(run_dir, "finished", metrics=metrics, best_val=best_val)


def record_failure(run_dir: Path, cfg: ExperimentConfig, suite: str, err: BaseException) -> None:
    """Keep the error beside the run (the suite goes on); earlier results stay untouched."""
    path = run_dir / "run.json"
    try:
        info = read_json(path)
    except (OSError, ValueError):
        info = {"run": run_dir.name, "suite": suite, "experiment": cfg.name, "config_hash": cfg.config_hash()}
    info.update(status="failed", error=f"{type(err).__name__}: {err}".splitlines()[0][:500], finished=_now())
    atomic_write_json(path, info)
    atomic_write_text(run_dir / "error.log", "".join(traceback.format_exception(err)))


def _load_weights(task: SegmentationTask, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    task.load_state_dict(state)


def _best_checkpoint(run_dir: Path, task: SegmentationTask) -> Path:
    phase = task.phases[-1]
    phase_dir = run_dir / "checkpoints" / f"{len(task.phases) - 1}-{phase.name}"
    done = phase_dir / "done.json"
    return phase_dir / read_json(done)["best"] if done.is_file() else phase_dir / "last.ckpt"


class _RankZeroWriter:
    """Writes into the run folder from global rank zero only."""

    def __init__(self, run_dir: Path) -> None:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        self.run_dir = run_dir
        self.enabled = rank_zero_only.rank == 0

    def text(self, name: str | Path, text: str) -> None:
        if self.enabled:
            atomic_write_text(self.run_dir / name, text)

    def json(self, name: str | Path, data: Any) -> None:
        if self.enabled:
            atomic_write_json(self.run_dir / name, data)
