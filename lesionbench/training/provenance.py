"""What a run folder records so a result can be traced: versions, commit, machine."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("lesionbench", "torch", "torchvision", "lightning", "segmentation-models-pytorch", "timm",
            "torchmetrics", "albumentations", "optuna", "numpy")


def git_commit(cwd: Path | None = None) -> str:
    """The commit of the working tree (or of the installed package's tree), 'unknown' outside git."""
    for where in (cwd, Path(__file__).resolve().parents[2]):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0:
            return out.stdout.strip()
    return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance() -> dict[str, object]:
    return {"versions": versions(), "git_commit": git_commit(), "device": device_name(),
            "platform": platform.platform()}
