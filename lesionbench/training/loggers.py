"""Experiment loggers beyond the always-on CSV log: Weights & Biases on request."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.loggers import Logger

from lesionbench.config import ExperimentConfig

WANDB_PROJECT = "lesionbench"


def build_loggers(cfg: ExperimentConfig, run_dir: Path) -> list[Logger]:
    """W&B when the config asks for it; offline (``wandb sync`` later) when no API key is set."""
    if cfg.trainer.logger != "wandb":
        return []
    from lightning.pytorch.loggers import WandbLogger

    if not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") is None:
        os.environ["WANDB_MODE"] = "offline"
    group = run_dir.parent.name
    return [WandbLogger(
        project=WANDB_PROJECT, group=group, name=run_dir.name, save_dir=str(run_dir),
        tags=[cfg.dataset.name, cfg.model.name, f"seed{cfg.trainer.seed}"],
        config=cfg.model_dump(mode="json"),
    )]
