"""Experiment loggers beyond the always-on CSV log: Weights & Biases on request.

``trainer.logger: wandb`` (or ``--logger wandb``) attaches Lightning's WandbLogger. Without an
API key it runs offline (``wandb sync`` later); if W&B cannot start at all the run goes on with
CSV logging only. A W&B problem never fails or blocks a training. ``wandb`` is imported only
when it is asked for: a CSV run never loads it.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger

from lesionbench.config import ExperimentConfig
from lesionbench.settings import settings

WANDB_PROJECT = "lesionbench"
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _has_api_key() -> bool:
    env = settings()
    if env.wandb_api_key:
        return True
    try:
        return "api.wandb.ai" in env.netrc.read_text()
    except OSError:
        return False


def run_name(cfg: ExperimentConfig, run_dir: Path) -> str:
    """experiment + seed; a study's trial folder name is appended (``exp__s42__trial-3``)."""
    base = f"{cfg.name}__s{cfg.trainer.seed}"
    return run_dir.name if run_dir.name.startswith(base) else f"{base}__{run_dir.name}"


def finish_wandb() -> None:
    """Close the process's active W&B run, so the next run (suite, study trial) gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish()
        except Exception as err:  # noqa: BLE001 - never fail a finished run over its upload
            warnings.warn(f"W&B: could not close the run cleanly ({err})", stacklevel=2)


def close_loggers(loggers: list[Logger]) -> None:
    """End what a run opened (its W&B run), so the next run in this process starts its own."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            try:
                logger.experiment.finish()
            except Exception as err:  # noqa: BLE001 - never fail a finished run over its upload
                warnings.warn(f"W&B: could not close the run cleanly ({err})", stacklevel=2)


def build_loggers(cfg: ExperimentConfig, run_dir: Path) -> list[Logger]:
    """W&B when the config asks for it: project lesionbench, group = suite or study folder."""
    if cfg.trainer.logger != "wandb":
        return []
    env = settings()
    # offline without a key, for this run only (the process environment is left alone)
    mode = "offline" if env.wandb_mode is None and not _has_api_key() else env.wandb_mode
    try:
        import wandb
        from lightning.pytorch.loggers import WandbLogger

        finish_wandb()
        logger = WandbLogger(
            project=WANDB_PROJECT, group=run_dir.parent.name, name=run_name(cfg, run_dir), save_dir=str(run_dir),
            tags=[cfg.dataset.name, cfg.model.name[:64], f"seed{cfg.trainer.seed}"], job_type="train",
            config=cfg.model_dump(mode="json"), log_model=cfg.trainer.wandb_checkpoints, mode=mode,
            settings=wandb.Settings(init_timeout=env.wandb_init_timeout, silent=True),
        )
        experiment = logger.experiment  # start now, so a W&B problem surfaces here, not mid-training
    except Exception as err:  # noqa: BLE001 - no network, bad key, service crash: keep training
        print(f"warning: W&B unavailable ({str(err).splitlines()[0][:200] if str(err) else type(err).__name__}); "
              "logging to CSV only (logs/metrics.csv)", file=sys.stderr)
        return []
    if rank_zero_only.rank == 0 and getattr(experiment, "settings", None) is not None \
            and experiment.settings.mode in ("offline", "dryrun"):
        print(f"W&B offline (no API key): upload later with `wandb sync {Path(experiment.dir).parent}`")
    return [logger]


def logger_test_callbacks(cfg: ExperimentConfig) -> list[Callback]:
    """Callbacks that go with the configured logger (W&B: the per-image table and prediction panel)."""
    return [WandbTestPanel()] if cfg.trainer.logger == "wandb" else []


def _wandb_logger(trainer: Any) -> Any | None:
    from lightning.pytorch.loggers import WandbLogger

    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


class WandbTestPanel(Callback):
    """At test end: a wandb.Table of per-image test metrics and images with predicted / true masks."""

    def __init__(self, max_images: int = 8) -> None:
        self.max_images = max_images
        self.samples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self.samples = []

    @torch.no_grad()
    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        if not trainer.is_global_zero or len(self.samples) >= self.max_images or _wandb_logger(trainer) is None:
            return
        logits = pl_module._final(pl_module(batch["image"]))
        pred = (logits.sigmoid() > pl_module.threshold).cpu().numpy()
        gt = (batch["mask"] > 0.5).cpu().numpy()
        images = batch["image"].float().cpu().numpy().transpose(0, 2, 3, 1)
        for i in range(min(len(images), self.max_images - len(self.samples))):
            rgb = np.clip((images[i] * STD + MEAN) * 255, 0, 255).astype(np.uint8)
            self.samples.append((str(batch["id"][i]), rgb, _labels(pred[i]), _labels(gt[i])))

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        logger = _wandb_logger(trainer)
        if logger is None or not trainer.is_global_zero or pl_module.test_result is None:
            return
        try:
            self._log(logger.experiment, trainer, pl_module)
        except Exception as err:  # noqa: BLE001 - the run's own results are already safe
            warnings.warn(f"W&B: could not log the test tables/images ({err})", stacklevel=2)

    def _log(self, run: Any, trainer: Any, pl_module: Any) -> None:
        import wandb

        from lesionbench.metrics.scores import summarize

        dm = trainer.datamodule
        index, stats = pl_module.test_result
        ids = [dm.test_ids[i] for i in index.reshape(-1).tolist()]
        _, rows = summarize(stats, ids, pl_module.cfg.dataset.name, dm.class_names,
                            boundary=pl_module.test_boundary_result)
        columns = list(rows[0]) if rows else ["id"]
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        labels = {i + 1: name for i, name in enumerate(dm.class_names)} | {0: "background"}
        panel = [wandb.Image(rgb, caption=name, masks={
            "prediction": {"mask_data": pred, "class_labels": labels},
            "ground_truth": {"mask_data": gt, "class_labels": labels},
        }) for name, rgb, pred, gt in self.samples]
        run.log({"test/per_image": table, "test/predictions": panel})


def _labels(mask: np.ndarray) -> np.ndarray:
    """C×H×W booleans -> H×W class indices (0 = background; later classes drawn over earlier)."""
    out = np.zeros(mask.shape[-2:], dtype=np.uint8)
    for c in range(mask.shape[0]):
        out[mask[c]] = c + 1
    return out
