"""train(cfg, run_dir): the Lightning engine. Which engine trains a config is decided above the
engines (lesionbench/studies/train.py); suites and studies compose that.

The run folder it leaves is the contract of lesionbench/runfolder.py, written at start and finish by
lesionbench/lifecycle (as every engine's is). While a run can still resume it keeps full Lightning
checkpoints (checkpoints/<i>-<phase>/), each tied to the config hash; once finished it keeps only the
best weights (model.safetensors beside config.yaml).

Phases of one training, each a function below: prepare (seed, data, task, phases already done) ->
start (config.yaml, run.json) -> fit each phase (restoring its best weights) -> test -> finish.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from lesionbench.config import ExperimentConfig
from lesionbench.data import SegmentationDataModule
from lesionbench.data.preprocess import describe
from lesionbench.errors import LesionBenchError
from lesionbench.io import DiskFullError, atomic_path, is_disk_full
from lesionbench.lifecycle import finish_run, set_aside_if_stale, start_run
from lesionbench.lifecycle.profile import measure_cost
from lesionbench.metrics.chance import chance_scores, mean_mask
from lesionbench.metrics.scores import summarize
from lesionbench.models.registry import accepts_option
from lesionbench.runfolder import (
    WEIGHTS,
    ChanceScores,
    Determinism,
    PhaseDone,
    RunFolderError,
    RunInfo,
    RunMetrics,
    RunResult,
    read_phase_done,
    write_phase_done,
)
from lesionbench.training.checkpoints import (
    CheckpointError,
    TrainClock,
    checkpoint_bytes,
    disk_full,
    drop_truncated,
    load_checkpoint,
    resume_checkpoint,
)
from lesionbench.training.loggers import build_loggers, close_loggers
from lesionbench.training.task import SegmentationTask, create_network, selection_monitor
from lesionbench.training.test_outputs import SaveTestOutputs
from lesionbench.training.trainer import build_trainer, merge_csv_logs, start_phase_log

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """One training of one (frozen) config into one folder: what its phases hand on to each other."""

    cfg: ExperimentConfig
    run_dir: Path
    suite: str
    callbacks: list[Callback]
    progress: bool
    loggers: list[Logger]
    rank_zero: bool
    cfg_hash: str
    checkpoint_bytes: int | None = None  # about one checkpoint, for a full disk's message
    dm: SegmentationDataModule = None  # type: ignore[assignment]  # set by _prepare
    task: SegmentationTask = None  # type: ignore[assignment]  # set by _prepare
    trainer: L.Trainer | None = None
    determinism: Determinism | None = None
    start: int = 0  # the first phase to train (earlier ones were done before an interruption)
    best_val: float | None = None
    train_time: float = 0.0
    epochs_done: int = 0
    resumed: bool = False
    test: tuple[dict[str, Any], list[dict[str, Any]]] = field(default_factory=lambda: ({}, []))
    chance: ChanceScores | None = None  # trivial predictions' scores on the same test images


def train(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    suite: str = "adhoc",
    callbacks: list[Callback] | None = None,
    progress: bool = True,
) -> RunResult:
    """Fit every phase, restore the best weights, test them, write the run folder.

    A folder made under another config is set aside first; an interrupted run of this config
    resumes from its last good checkpoint and skips phases already done. Only global rank zero
    writes files, so DDP runs write one folder. The run owns its loggers: made once, shared by its
    phases, closed when it ends, finished or not. A full disk ends in one line naming the folder and
    the space needed; the checkpoints it cut short are removed.
    """
    if cfg.engine != "lightning":
        raise LesionBenchError(f"{cfg.name}: engine: {cfg.engine} is not trained by the Lightning loop; train it "
                               "through lesionbench.studies.train.train, which picks the engine")
    run_dir, rank_zero = Path(run_dir), _is_rank_zero()
    if rank_zero:
        set_aside_if_stale(run_dir, cfg)  # before anything (a logger) writes into the folder
    run = _Run(cfg, run_dir, suite, callbacks or [], progress, build_loggers(cfg, run_dir), rank_zero,
               cfg.config_hash())
    try:
        return _train(run)
    except OSError as err:
        if not is_disk_full(err):
            raise
        if rank_zero:
            drop_truncated(run_dir)  # frees the space they took, so the failure can be recorded
        if isinstance(err, DiskFullError):  # already one line naming what it could not write
            raise
        raise disk_full(run_dir, err, run.checkpoint_bytes) from err
    finally:
        close_loggers(run.loggers)


def _train(run: _Run) -> RunResult:
    _prepare(run)
    info = start_run(run.run_dir, run.cfg, run.suite, write=run.rank_zero,
                     data_manifest=run.dm.manifest_hash, data_content=run.dm.content_hash)
    for index in range(run.start, len(run.task.phases)):
        _fit_phase(run, index)
    if not _test(run):
        return RunResult(run.run_dir, "finished", best_val=run.best_val)
    return _finish(run, info)


def _prepare(run: _Run) -> None:
    """Seed, data and task; the phases already done under this config are loaded, not trained again."""
    L.seed_everything(run.cfg.trainer.seed, workers=True, verbose=False)
    run.dm = SegmentationDataModule.from_experiment(run.cfg)
    run.dm.prepare_data()
    run.dm.setup("fit")
    run.task = SegmentationTask(run.cfg, net=create_network(network_config(run.cfg)))  # the frozen config as is
    run.checkpoint_bytes = checkpoint_bytes(run.task.model)
    run.start, run.best_val, run.train_time = _skip_done_phases(run.task, run.run_dir, run.cfg_hash)
    run.resumed = run.start > 0


def network_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config the network is built from: a model that takes encoder weights and names none gets
    ``model.default_weights``, so it is built with the weights its config records (and hashes), not
    with whatever $LESIONBENCH_WEIGHTS says at that moment."""
    if "weights" in cfg.model.options or not accepts_option(cfg.model.name, "weights"):
        return cfg
    options = {**cfg.model.options, "weights": cfg.model.default_weights}
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"options": options})})


def _fit_phase(run: _Run, index: int) -> None:
    """Fit one phase (resuming its checkpoint), restore its best weights, mark it done."""
    task, cfg = run.task, run.cfg
    task.set_phase(index)
    phase = task.phases[index]
    phase_dir = run.run_dir / "checkpoints" / f"{index}-{phase.name}"
    found = resume_checkpoint(phase_dir, run.cfg_hash)
    run.resumed = run.resumed or found is not None
    clock = TrainClock(run.cfg_hash)
    run.trainer, ckpt = build_trainer(cfg, phase, phase_dir, run.run_dir,
                                      [clock, SaveTestOutputs(run.run_dir), *run.callbacks], run.progress, run.loggers)
    run.determinism = run.determinism or _determinism(cfg)  # what Lightning switched on for this fit
    if run.rank_zero:
        start_phase_log(run.run_dir / "logs" / phase_dir.name, int(found[1]["global_step"]) if found else None)
    run.trainer.fit(task, datamodule=run.dm, ckpt_path=str(found[0]) if found else None, weights_only=True)
    run.train_time += clock.seconds
    run.epochs_done += run.trainer.current_epoch  # epochs this phase completed (early stopping included)
    if run.trainer.interrupted:
        raise KeyboardInterrupt
    best = _restore_best(run.trainer, task, ckpt, phase_dir)
    score = ckpt.best_model_score
    if score is None and cfg.trainer.checkpoint == "last":  # the kept (last) epoch's own validation score
        score = run.trainer.callback_metrics.get(selection_monitor(cfg, phase)[0])
    run.best_val = float(score) if score is not None else run.best_val
    if run.rank_zero:
        write_phase_done(phase_dir / "done.json", PhaseDone(best=best.name, score=run.best_val, seconds=clock.seconds,
                                                            config_hash=run.cfg_hash))


def _restore_best(trainer: L.Trainer, task: SegmentationTask, ckpt: ModelCheckpoint, phase_dir: Path) -> Path:
    """Load the phase's best weights before the next phase (or the test); returns their checkpoint."""
    best = Path(ckpt.best_model_path) if ckpt.best_model_path else phase_dir / "last.ckpt"
    if best.is_file():
        task.load_state_dict(load_checkpoint(best)["state_dict"])
    else:  # nothing was trained (e.g. limit_train_batches=0): keep these weights
        trainer.save_checkpoint(best)
    return best


def _test(run: _Run) -> bool:
    """Test the restored weights; on global rank zero keep (summary, per-image rows) and return True."""
    if run.trainer is None:  # every phase was done before an interruption: a fresh trainer tests
        run.trainer, _ = build_trainer(run.cfg, run.task.phases[-1], run.run_dir / "checkpoints" / "test", run.run_dir,
                                       [SaveTestOutputs(run.run_dir)], run.progress, run.loggers)
        run.determinism = _determinism(run.cfg)
    run.dm.setup("test")
    mean = run.dm.mask_mean("train")  # the mean-mask chance floor, scored by the test loop beside the model
    run.task.chance_prior = None if mean is None else mean_mask(mean)
    run.trainer.test(run.task, datamodule=run.dm, verbose=False)
    if run.trainer.interrupted:  # a test loop cut short must never become a result
        raise KeyboardInterrupt
    if not run.trainer.is_global_zero:
        return False
    index, stats = run.task.test_result
    test_ids = run.dm.test_ids
    if index.numel() != len(test_ids):  # (one image: torchmetrics hands back a 0-d index)
        raise RuntimeError(f"{run.run_dir}: the test loop scored {index.numel()} of {len(test_ids)} test images")
    ids = [test_ids[i] for i in index.reshape(-1).tolist()]  # torchmetrics squeezes a 1-image result
    run.test = summarize(stats, ids, run.cfg.dataset.name, run.dm.class_names,
                         boundary=run.task.test_boundary_result, nsd_tolerance=run.task.nsd_tolerance)
    run.chance = chance_scores(stats, run.cfg.dataset.name, run.task.test_chance_result,
                               n_train=len(run.dm.train_ids) if run.task.chance_prior is not None else None)
    return True


def _finish(run: _Run, info: RunInfo) -> RunResult:
    """The best weights as safetensors, the merged logs, then the lifecycle's finished files."""
    metrics = _metrics(run)
    _save_weights(run.task, run.run_dir / WEIGHTS)
    merge_csv_logs(run.run_dir / "logs", [f"{i}-{p.name}" for i, p in enumerate(run.task.phases)])
    finish_run(run.run_dir, info, metrics, run.test[1], train_time_s=round(run.train_time, 2),
               best_checkpoint=WEIGHTS, resumed=run.resumed, resume_count=info.resume_count + int(run.resumed),
               determinism=run.determinism)
    shutil.rmtree(run.run_dir / "checkpoints", ignore_errors=True)  # nothing left to resume
    return RunResult(run.run_dir, "finished", metrics=metrics, best_val=run.best_val)


def _metrics(run: _Run) -> RunMetrics:
    cfg, task, dm = run.cfg, run.task, run.dm
    summary, rows = run.test
    cost = measure_cost(task.model, cfg.dataset.image_size, device=run.trainer.strategy.root_device)
    return RunMetrics.model_validate({**summary, **{
        "experiment": cfg.name, "run": run.run_dir.name, "suite": run.suite, "dataset": cfg.dataset.name,
        "model": cfg.model.name, "seed": cfg.trainer.seed, "config_hash": run.cfg_hash,
        "n_test": len(rows), "image_size": cfg.dataset.image_size,
        "best_val": {selection_monitor(cfg, task.phases[-1])[0]: run.best_val},
        "published": cfg.published,
        "cost": {**cost, "train_time_s": round(run.train_time, 2),
                 # the budget a row consumed (nnU-Net counts iterations instead); phases skipped on resume not counted
                 "images_seen": run.epochs_done * len(dm.train_ids) if run.start == 0 else None},
        "best_checkpoint": WEIGHTS,
        "phases": [p.name for p in task.phases],
        "last_phase": task.phases[-1].name,
        "preprocessing": describe(cfg.dataset.image_size, (dm.mean, dm.std)),  # predict/explain/export read it
        "chance": run.chance,
    }})


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


def _save_weights(task: SegmentationTask, path: Path) -> None:
    """The best model's tensors only (no optimiser state), as safetensors: data, never code. A full
    disk is one line naming the folder, the size of the weights and the space free."""
    from safetensors.torch import save_model

    size = sum(t.numel() * t.element_size() for t in task.model.state_dict().values())
    with atomic_path(path, size=size) as tmp:
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
