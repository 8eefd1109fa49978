"""What a run folder records so a result can be traced: versions, commit, machine."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

#: Instruction-set flags that choose torch's CPU kernels (and so the last bits of a float sum).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")

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


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; the platform's processor name elsewhere."""
    name, flags = "", set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "Model", "cpu model") and not name:
            name = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return name or platform.processor() or platform.machine(), flags


def cpu_info() -> dict[str, object]:
    """What decides whether a CPU run repeats bit for bit: the CPU, the vector instructions torch
    dispatches to, and the thread count (which splits reductions)."""
    name, flags = _cpuinfo()
    return {"model": name, "capability": torch.backends.cpu.get_cpu_capability(),
            "flags": [f for f in ISA_FLAGS if f in flags], "threads": torch.get_num_threads()}


def provenance() -> dict[str, object]:
    return {"versions": versions(), "git_commit": git_commit(), "device": device_name(),
            "platform": platform.platform(), "cpu": cpu_info()}
