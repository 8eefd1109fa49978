"""Choices an nnU-Net run makes before it starts: is nnunetv2 there, which trainer, which device, which folders."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
from importlib import metadata
from pathlib import Path

import torch

from lesionbench.config import ExperimentConfig, TrainerConfig
from lesionbench.errors import LesionBenchError
from lesionbench.settings import child_environment, settings

MISSING = "engine: nnunet needs nnU-Net v2, an optional extra: pip install 'lesionbench[nnunet]'"
DATASET_ID = 500


def require_nnunet() -> str:
    """nnunetv2's version, or the one-line error naming the extra."""
    if importlib.util.find_spec("nnunetv2") is None:
        raise LesionBenchError(MISSING)
    return metadata.version("nnunetv2")


def fixed_length_trainers() -> dict[int, str]:
    """Epochs -> trainer class nnU-Net ships (nnUNetTrainer is its own 1000-epoch default)."""
    from nnunetv2.training.nnUNetTrainer.variants.training_length import (
        nnUNetTrainer_Xepochs as variants,
    )

    table = {1000: "nnUNetTrainer"}
    for name, _ in inspect.getmembers(variants, inspect.isclass):
        if m := re.fullmatch(r"nnUNetTrainer_(\d+)epochs?", name):
            table[int(m.group(1))] = name
    return table


def pick_trainer(name: str, epochs: int) -> str:
    """``auto``: the shipped fixed-length variant closest to the recipe's epochs (ties: the shorter)."""
    if name != "auto":
        return name
    table = fixed_length_trainers()
    return table[min(table, key=lambda e: (abs(e - epochs), e))]


def pick_device(tr: TrainerConfig) -> tuple[str, dict[str, str]]:
    """(torch device type, extra environment) for the run's trainer.accelerator / devices: one device."""
    devices = tr.devices
    if tr.num_nodes > 1 or (isinstance(devices, int) and devices > 1) or (isinstance(devices, list) and len(devices) > 1):
        raise LesionBenchError(f"trainer.devices: engine nnunet trains on one device (got {devices!r}, "
                               f"{tr.num_nodes} node(s)); set trainer.devices=1")
    acc = tr.accelerator.lower()
    if acc == "auto":
        acc = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    kind = {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu", "mps": "mps"}.get(acc)
    if kind is None:
        raise LesionBenchError(f"trainer.accelerator: {tr.accelerator!r} is not one nnU-Net runs on (cpu, gpu, mps)")
    return kind, {"CUDA_VISIBLE_DEVICES": str(devices[0])} if kind == "cuda" and isinstance(devices, list) else {}


class NnUNetFolders:
    """Where this run's nnU-Net folders live: data in $LESIONBENCH_WORKDIR (else the run folder),
    the trained model always in the run folder."""

    def __init__(self, run_dir: Path, cfg: ExperimentConfig, trainer: str) -> None:
        work = settings().workdir
        key = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
        self.home = run_dir / "nnunet"
        self.data = Path(work) / "nnunet" / f"{run_dir.name}-{key}" if work else self.home
        self.name = f"Dataset{DATASET_ID}_{re.sub(r'[^A-Za-z0-9]', '', cfg.dataset.name)}"
        self.raw = self.data / "raw" / self.name
        self.preprocessed = self.data / "preprocessed" / self.name
        self.model = self.home / "results" / self.name / f"{trainer}__{cfg.nnunet.plans}__{cfg.nnunet.configuration}"
        self.predictions = self.home / "predictions"  # nnU-Net's own output (probabilities)
        self.masks = run_dir / "predictions"  # ours: binary masks at each ground truth's size

    def env(self, extra: dict[str, str], workers: int | None) -> dict[str, str]:
        env = child_environment(**extra, nnUNet_raw=str(self.raw.parent),
                                nnUNet_preprocessed=str(self.preprocessed.parent),
                                nnUNet_results=str(self.model.parents[1]))
        if workers is not None:  # augmentation processes (0: in-process), and its other pools (at least 1)
            env.update(nnUNet_n_proc_DA=str(workers), nnUNet_def_n_proc=str(max(1, workers)))
        return env


def augmentation_workers(requested: int | None, device: str) -> tuple[int | None, dict[str, object]]:
    """(augmentation processes for nnU-Net, run.json's record of whether the run repeats bit for bit).

    nnU-Net ships no seeded multi-process loader: with workers > 0 its ``NonDetMultiThreadedAugmenter``
    (``seeds=None``) hands batches over in whatever order its processes finish, so two identical runs
    differ; with 0 (``nnUNet_n_proc_DA=0``) it uses its ``SingleThreadedAugmenter`` in the seeded
    training process. Default (``None``): 0 on CPU, where it is also the cheaper choice; on a GPU
    nnU-Net's own choice, because in-process augmentation would starve it, and its kernels are not
    deterministic anyway.
    """
    workers = requested if requested is not None else (0 if device == "cpu" else None)
    reasons = []
    if workers != 0:
        reasons.append(f"nnunet.workers={'auto' if workers is None else workers}: nnU-Net's "
                       "NonDetMultiThreadedAugmenter delivers batches in completion order (unseeded)")
    if device != "cpu":
        reasons.append(f"trains on {device}: nondeterministic GPU kernels")
    record: dict[str, object] = {"reproducible": not reasons, "augmentation_workers": workers}
    if reasons:
        record["why_not"] = "; ".join(reasons) + " (set nnunet.workers=0 and trainer.accelerator=cpu to repeat a run)"
    return workers, record


def matched_iterations(recipe_images: int, epochs: int, batch_size: int) -> int:
    """nnU-Net iterations per epoch so that epochs x iterations x batch_size ~ the recipe's images seen."""
    return max(1, round(recipe_images / (epochs * batch_size)))
