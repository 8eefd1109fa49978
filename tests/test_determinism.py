"""Same config + seed => bitwise identical results on CPU (issue 16.4), with and without loader workers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lesionbench.config import ExperimentConfig

RESULT_KEYS = ("per_image", "pooled", "per_class", "challenge", "best_val", "n_test")


def _cfg(workers: int, epochs: int = 1) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "det", "dataset": {"name": "synthetic", "image_size": 32, "augmentation": "paper002",
                                   "num_workers": workers, "subset": 8},
        "model": {"name": "unet", "options": {"base_channels": 8}}, "optimizer": {"lr": 0.02},
        "trainer": {"epochs": epochs, "batch_size": 4, "accelerator": "cpu", "devices": 1}})


def _twice(cfg: ExperimentConfig, tmp_path: Path, synthetic_env: Path) -> tuple[Path, Path]:
    from lesionbench.training.run import train
    runs = tmp_path / "a", tmp_path / "b"
    for run in runs:
        train(cfg, run, suite="t", progress=False)
    return runs


def _assert_identical(a: Path, b: Path) -> None:
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    for key in RESULT_KEYS:
        assert ma[key] == mb[key], key
    assert (a / "per_image.csv").read_bytes() == (b / "per_image.csv").read_bytes()
    sa, sb = (load_file(r / ma["best_checkpoint"]) for r in (a, b))
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.slow
def test_two_runs_of_one_config_are_identical(tmp_path: Path, synthetic_env: Path) -> None:
    """Two train() calls into two folders: metrics, per-image rows and weights bitwise equal.
    (Loader workers are covered by the cheaper stream test below.)"""
    _assert_identical(*_twice(_cfg(0), tmp_path, synthetic_env))


@pytest.mark.slow
def test_training_augmentation_is_seeded_and_varies_per_epoch(synthetic_env: Path) -> None:
    """The seeded albumentations stream differs between epochs (no repeated augmentations) but
    is the same for two modules built with the same seed."""
    from lesionbench.data import SegmentationDataModule

    def epochs(workers: int) -> list[np.ndarray]:
        dm = SegmentationDataModule.from_experiment(_cfg(workers))
        dm.setup("fit")
        loader = dm.train_dataloader()
        return [torch.cat([b["image"] for b in loader]).numpy() for _ in range(2)]

    for workers in (0, 1):
        first, second = epochs(workers), epochs(workers)
        assert all(np.array_equal(x, y) for x, y in zip(first, second, strict=False)), workers
        assert not np.array_equal(first[0], first[1]), workers
