"""train(cfg, run_dir): the only way a training happens. Suites and studies compose it.

The run folder it leaves is the contract of lesionbench/runfolder.py. While a run can still
resume it keeps full Lightning checkpoints (checkpoints/<i>-<phase>/), each tied to the config
hash; once finished it keeps only the best weights (model.safetensors beside config.yaml).
"""

from __future__ import annotations

import logging
import shutil
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger

from lesionbench.config import ExperimentConfig
from lesionbench.data import SegmentationDataModule
from lesionbench.data.preprocess import describe
from lesionbench.io import atomic_path, atomic_write_text
from lesionbench.metrics.scores import summarize
from lesionbench.runfolder import (
    WEIGHTS,
    Determinism,
    PerImageRow,
    PhaseDone,
    RunFolderError,
    RunInfo,
    RunMetrics,
    read_metrics,
    read_phase_done,
    read_run_info,
    write_metrics,
    write_per_image,
    write_phase_done,
    write_run_info,
)
from lesionbench.training.checkpoints import (
    CheckpointError,
    TrainClock,
    checkpoint_bytes,
    disk_full,
    folder_hash,
    is_disk_full,
    load_checkpoint,
    resume_checkpoint,
    set_aside_if_stale,
)
from lesionbench.training.loggers import build_loggers, close_loggers
from lesionbench.training.profile import measure_cost
from lesionbench.training.provenance import provenance
from lesionbench.training.task import SegmentationTask, selection_monitor
from lesionbench.training.test_outputs import SaveTestOutputs
from lesionbench.training.trainer import build_trainer, merge_csv_logs, start_phase_log

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    status: str
    metrics: RunMetrics | None = None  # what metrics.json holds (rank zero of a finished run)
    best_val: float | None = None
    error: str | None = None


def is_finished(run_dir: Path, cfg: ExperimentConfig) -> bool:
    """Done when run.json and metrics.json are valid, the folder's config.yaml hashes (under today's
    rules, so a change of what the hash covers retrains nothing) to this config's hash, and the best
    weights are still there (a copied-in result without weights is re-made, e.g. the committed demo)."""
    try:
        info, metrics = read_run_info(run_dir), read_metrics(run_dir)
    except RunFolderError:
        return False
    best = info.best_checkpoint or metrics.best_checkpoint
    return info.status == "finished" and folder_hash(run_dir) == cfg.config_hash() and (run_dir / best).is_file()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def train(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    suite: str = "adhoc",
    callbacks: list[Callback] | None = None,
    progress: bool = True,
) -> RunResult:
    """Fit every phase, restore the best weights, test them, write the run folder (see _train).

    The run owns its loggers: made once, shared by its phases, closed when it ends, finished or
    not. A full disk ends in one line naming the folder and the space needed. With ``engine: nnunet``
    nnU-Net v2 trains instead (lesionbench/engines/nnunet.py), into the same run folder.
    """
    if cfg.engine == "nnunet":
        from lesionbench.engines.nnunet import train_nnunet

        return train_nnunet(cfg, Path(run_dir), suite)
    run_dir, sizes = Path(run_dir), {}
    if _is_rank_zero():
        set_aside_if_stale(run_dir, cfg)  # before anything (a logger) writes into the folder
    loggers = build_loggers(cfg, run_dir)
    try:
        return _train(cfg, run_dir, suite, callbacks or [], progress, sizes, loggers)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full(run_dir, err, sizes.get("checkpoint")) from err
        raise
    finally:
        close_loggers(loggers)


def _train(cfg: ExperimentConfig, run_dir: Path, suite: str, callbacks: list[Callback], progress: bool,
           sizes: dict[str, int], loggers: list[Logger]) -> RunResult:
    """Fit every phase, restore the best weights, test them, write the run folder.

    A folder made under another config is set aside first; an interrupted run of this config
    resumes from its last good checkpoint and skips phases already done. Only global rank zero
    writes files, so DDP runs write one folder.
    """
    rank_zero = _is_rank_zero()
    cfg_hash = cfg.config_hash()
    previous = _previous_info(run_dir)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    dm = SegmentationDataModule.from_experiment(cfg)
    dm.prepare_data()
    dm.setup("fit")
    task = SegmentationTask(cfg.model_dump(mode="json"))
    sizes["checkpoint"] = checkpoint_bytes(task.model)  # for a full disk's message
    start, best_val, train_time = _skip_done_phases(task, run_dir, cfg_hash)
    resumed = start > 0
    info = RunInfo(status="running", run=run_dir.name, suite=suite, experiment=cfg.name, config_hash=cfg_hash,
                   seed=cfg.trainer.seed, started=_now(), data_manifest=dm.manifest_hash,
                   data_content=dm.content_hash, **provenance(),
                   resume_count=previous.resume_count if previous else 0)
    if rank_zero:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        write_run_info(run_dir, info)

    trainer, determinism, epochs_done = None, None, 0
    for index in range(start, len(task.phases)):
        task.set_phase(index)
        phase = task.phases[index]
        phase_dir = run_dir / "checkpoints" / f"{index}-{phase.name}"
        found = resume_checkpoint(phase_dir, cfg_hash)
        resumed = resumed or found is not None
        clock = TrainClock(cfg_hash)
        trainer, ckpt = build_trainer(cfg, phase, phase_dir, run_dir, [clock, SaveTestOutputs(run_dir), *callbacks],
                                      progress, loggers)
        determinism = determinism or _determinism(cfg)  # what Lightning switched on for this fit
        if rank_zero:
            start_phase_log(run_dir / "logs" / phase_dir.name, int(found[1]["global_step"]) if found else None)
        trainer.fit(task, datamodule=dm, ckpt_path=str(found[0]) if found else None, weights_only=True)
        seconds = clock.seconds
        train_time += seconds
        epochs_done += trainer.current_epoch  # epochs this phase completed (early stopping included)
        if trainer.interrupted:
            raise KeyboardInterrupt
        best_path = Path(ckpt.best_model_path) if ckpt.best_model_path else phase_dir / "last.ckpt"
        if best_path.is_file():
            _load_weights(task, best_path)  # "restore best weights" before the next phase
        else:  # nothing was trained (e.g. limit_train_batches=0): keep these weights
            trainer.save_checkpoint(best_path)
        score = ckpt.best_model_score
        if score is None and cfg.trainer.checkpoint == "last":  # the kept (last) epoch's own validation score
            score = trainer.callback_metrics.get(selection_monitor(cfg, phase)[0])
        best_val = float(score) if score is not None else best_val
        if rank_zero:
            write_phase_done(phase_dir / "done.json",
                             PhaseDone(best=best_path.name, score=best_val, seconds=seconds, config_hash=cfg_hash))

    if trainer is None:  # every phase was done before an interruption: a fresh trainer tests
        trainer, _ = build_trainer(cfg, task.phases[-1], run_dir / "checkpoints" / "test", run_dir,
                                   [SaveTestOutputs(run_dir)], progress, loggers)
        determinism = _determinism(cfg)
    dm.setup("test")
    trainer.test(task, datamodule=dm, verbose=False)
    if trainer.interrupted:  # a test loop cut short must never become a result
        raise KeyboardInterrupt
    if not trainer.is_global_zero:
        return RunResult(run_dir, "finished", best_val=best_val)

    index, stats = task.test_result
    if index.numel() != len(dm.test_ids):  # (one image: torchmetrics hands back a 0-d index)
        raise RuntimeError(f"{run_dir}: the test loop scored {index.numel()} of {len(dm.test_ids)} test images")
    ids = [dm.test_ids[i] for i in index.reshape(-1).tolist()]  # torchmetrics squeezes a 1-image result
    summary, rows = summarize(stats, ids, cfg.dataset.name, dm.class_names, boundary=task.test_boundary_result)
    metrics = RunMetrics.model_validate({**summary, **{
        "experiment": cfg.name, "run": run_dir.name, "suite": suite, "dataset": cfg.dataset.name,
        "model": cfg.model.name, "seed": cfg.trainer.seed, "config_hash": cfg_hash,
        "n_test": len(ids), "image_size": cfg.dataset.image_size,
        "best_val": {selection_monitor(cfg, task.phases[-1])[0]: best_val},
        "published": cfg.published,
        "cost": {**measure_cost(task.model, cfg.dataset.image_size, device=trainer.strategy.root_device),
                 "train_time_s": round(train_time, 2),
                 # the budget a row consumed (nnU-Net counts iterations instead); phases skipped on resume not counted
                 "images_seen": epochs_done * len(dm.train_ids) if start == 0 else None},
        "best_checkpoint": WEIGHTS,
        "phases": [p.name for p in task.phases],
        "last_phase": task.phases[-1].name,
        "preprocessing": describe(cfg.dataset.image_size, (dm.mean, dm.std)),  # predict/explain/export read it
    }})
    _save_weights(task, run_dir / WEIGHTS)
    merge_csv_logs(run_dir / "logs", [f"{i}-{p.name}" for i, p in enumerate(task.phases)])
    write_per_image(run_dir, [PerImageRow.model_validate(r) for r in rows])
    write_run_info(run_dir, info.model_copy(update={
        "status": "finished", "finished": _now(), "train_time_s": round(train_time, 2), "best_checkpoint": WEIGHTS,
        "resumed": resumed, "resume_count": info.resume_count + int(resumed), "determinism": determinism,
    }))
    write_metrics(run_dir, metrics)  # last: a folder with metrics.json holds the whole result
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # nothing left to resume
    return RunResult(run_dir, "finished", metrics=metrics, best_val=best_val)


def record_failure(run_dir: Path, cfg: ExperimentConfig, suite: str, err: BaseException) -> None:
    """Keep the error beside the run (the suite goes on); earlier results stay untouched."""
    try:
        info = read_run_info(run_dir)
    except RunFolderError:
        info = RunInfo(status="failed", run=run_dir.name, suite=suite, experiment=cfg.name,
                       config_hash=cfg.config_hash())
    line = f"{type(err).__name__}: {err}".splitlines()[0][:500]
    try:
        write_run_info(run_dir, info.model_copy(update={"status": "failed", "error": line, "finished": _now()}))
        atomic_write_text(run_dir / "error.log", "".join(traceback.format_exception(err)))
    except OSError as write_err:  # a full disk may refuse even this: say so where it is seen
        log.error("%s: could not record the failure (%s): %s", run_dir, write_err, line)


def _previous_info(run_dir: Path) -> RunInfo | None:
    try:
        return read_run_info(run_dir)
    except RunFolderError:
        return None


def _skip_done_phases(task: SegmentationTask, run_dir: Path, cfg_hash: str) -> tuple[int, float | None, float]:
    """(first phase to train, best validation score so far, seconds trained so far).

    The latest phase marked done under this config with readable best weights is loaded; a phase
    whose weights are unreadable is trained again (its folder is cleared, one line says so).
    """
    markers: dict[int, PhaseDone] = {}
    for index, phase in enumerate(task.phases):
        try:
            done = read_phase_done(run_dir / "checkpoints" / f"{index}-{phase.name}" / "done.json")
        except RunFolderError:
            continue
        if done.config_hash == cfg_hash:
            markers[index] = done
    for index in sorted(markers, reverse=True):
        phase_dir = run_dir / "checkpoints" / f"{index}-{task.phases[index].name}"
        try:
            state = load_checkpoint(phase_dir / markers[index].best)["state_dict"]
        except CheckpointError as err:
            log.warning("%s; phase %s is trained again", err, phase_dir.name)
            shutil.rmtree(phase_dir, ignore_errors=True)
            continue
        task.set_phase(index)
        task.load_state_dict(state)
        return index + 1, markers[index].score, sum(m.seconds for i, m in markers.items() if i <= index)
    return 0, None, 0.0


def _load_weights(task: SegmentationTask, path: Path) -> None:
    task.load_state_dict(load_checkpoint(path)["state_dict"])


def _save_weights(task: SegmentationTask, path: Path) -> None:
    """The best model's tensors only (no optimiser state), as safetensors: data, never code."""
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(task.model, str(tmp))


def _determinism(cfg: ExperimentConfig) -> Determinism:
    return Determinism(
        requested=cfg.trainer.deterministic, granted=torch.are_deterministic_algorithms_enabled(),
        warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_deterministic=torch.backends.cudnn.deterministic, cudnn_benchmark=torch.backends.cudnn.benchmark,
        seed=cfg.trainer.seed,
    )


def _is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0
