"""Shared fixtures: a tiny synthetic replica of every dataset, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

TINY_COUNTS = {
    "isic2016": {"train": 12, "test": 5},
    "isic2017": {"train": 12, "val": 4, "test": 5},
    "isic2018": {"train": 12, "val": 4, "test": 5},
    "kvasir-seg": {"all": 20},
}


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic replicas (all five layouts) with a handful of small images each."""
    from lesionbench.data.synthetic import write_all

    root = tmp_path_factory.mktemp("synthetic")
    write_all(root, seed=0, counts=TINY_COUNTS, size=(48, 72))
    return root


@pytest.fixture
def synthetic_env(tiny_synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every synthetic lookup (and split/cache folders) at the tiny replica."""
    monkeypatch.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
    monkeypatch.setenv("LESIONBENCH_WORKDIR", str(tmp_path / "work"))
    return tiny_synthetic
