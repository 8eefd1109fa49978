"""Settings, machine description, threads and full-size data of ``lesionbench bench``."""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

DEFAULT_MODELS = ("smp:Unet/resnet34", "resnet50-unet", "mobilenet-unet")
#: The bench's sections in the order they run; ``--only`` picks some (loader and consumption go together).
SECTIONS = ("loader", "training", "consumption", "inference", "epoch")
ISIC2018_TRAIN = 2594  # images in the official ISIC 2018 Task 1 training set


@dataclass
class Settings:
    """Every knob of one bench run; ``for_mode`` picks sizes that fit the time budget."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    device: str = "cpu"
    quick: bool = False
    compile: bool = False
    threads: int | None = None  # torch + cv2 threads of both sides; None: auto (see _threads)
    train_size: int = 128
    train_batch: int = 4
    warmup: int = 2
    steps: int = 10  # timed steps per block (one Lightning fit, one bare loop)
    min_blocks: int = 6
    max_blocks: int = 40
    precision: float = 0.01  # stop adding blocks once the ratio's 95% CI is within ±1%
    loader_sizes: tuple[int, ...] = (128, 224, 256)
    loader_images: int = 16
    loader_batch: int = 8
    loader_reps: int = 3
    augmentations: tuple[str, ...] = ("paper002", "none")
    workers: int = 0
    rate_size: int = 224
    rate_batch: int = 4
    rate_steps: int = 2
    infer_size: int = 128
    infer_batches: tuple[int, ...] = (1, 32)
    infer_repeats: int = 2
    epoch_images: int = 16
    epoch_size: int | tuple[int, int] = 224  # network input of the timed epoch: S or (H, W)
    epoch_batch: int = 4
    sections: tuple[str, ...] = SECTIONS

    @classmethod
    def for_mode(cls, quick: bool, device: str, **overrides: Any) -> Settings:
        cuda = device.startswith("cuda")
        base = cls(device=device, quick=quick)
        if cuda:  # the figures the issue asks for: 224 px, real batch sizes, one full ISIC 2018 epoch
            base = replace(base, train_size=224, train_batch=16, warmup=5, steps=30, max_blocks=30, rate_batch=16,
                           rate_steps=10, infer_size=224, infer_repeats=10, epoch_images=ISIC2018_TRAIN,
                           epoch_batch=16, workers=min(8, os.cpu_count() or 1), loader_images=64)
        if quick:
            base = replace(base, train_size=64, train_batch=2, warmup=1, steps=2, min_blocks=2, max_blocks=2,
                           loader_images=4,
                           loader_batch=2, loader_reps=1, rate_batch=2, rate_steps=1, infer_size=64,
                           infer_repeats=1, epoch_images=4, epoch_batch=2)
        base = replace(base, **{k: v for k, v in overrides.items() if v is not None})
        unknown = [x for x in base.sections if x not in SECTIONS]
        if unknown:
            raise ValueError(f"bench --only {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
        if {"loader", "consumption"} & set(base.sections):  # the loader's ratios need the model's rates
            base = replace(base, sections=tuple(x for x in SECTIONS if x in {*base.sections, "loader", "consumption"}))
        return base



def threads_for(s: Settings) -> tuple[int, str]:
    """Threads for both sides. On a CPU whose cores are already busy (load >= 3/4 of them), OpenMP
    threads that spin-wait for cores other processes hold make every op several times slower and
    the timings erratic, so auto picks one thread there; otherwise torch's default."""
    if s.threads:
        return s.threads, "--threads"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0]
    if not s.device.startswith("cuda") and cores > 1 and load >= 0.75 * cores:
        return 1, f"auto: load {load:.2f} on {cores} cores (shared machine), 1 thread avoids oversubscription"
    return torch.get_num_threads(), "auto: torch default (machine not oversubscribed)"


def full_size_data(work: Path, s: Settings) -> tuple[Path, Path]:
    """Full-size (~2000×1500) synthetic ISIC 2018 replica; a second root links its files up to
    ``epoch_images`` training images (rendering thousands of full-size images would dominate)."""
    from lesionbench.data.synthetic import write_all

    need = max(s.loader_images if "loader" in s.sections else 1,
               s.train_batch * (s.warmup + s.steps) + 1 if "training" in s.sections else 1, 8)
    src = write_all(work / "full", counts={"isic2018": {"train": need, "val": 1, "test": 1}}, full_size=True,
                    datasets=("isic2018",))
    return src, replicate(src, work / "epoch", s.epoch_images)


def replicate(src: Path, dst: Path, n_train: int) -> Path:
    from lesionbench.data.layouts import LAYOUTS

    layout = LAYOUTS["isic2018"]
    for split, spec in layout.splits.items():
        images = sorted((src / "isic2018" / spec.image_dirs[0]).glob("ISIC_*.jpg"))
        n = n_train if split == "train" else len(images)
        for d in (spec.image_dirs[0], spec.mask_dirs[0]):
            (dst / "isic2018" / d).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = images[i % len(images)]
            new = f"ISIC_{20_000_000 + i if split == 'train' else int(img.stem[5:]):07d}"
            mask = src / "isic2018" / spec.mask_dirs[0] / f"{img.stem}{layout.mask_suffixes[0]}.png"
            for a, b in ((img, dst / "isic2018" / spec.image_dirs[0] / f"{new}.jpg"),
                         (mask, dst / "isic2018" / spec.mask_dirs[0] / f"{new}{layout.mask_suffixes[0]}.png")):
                try:
                    os.link(a, b)
                except OSError:
                    shutil.copyfile(a, b)
    return dst


def machine(device: str) -> dict[str, Any]:
    import cv2

    from lesionbench.lifecycle.provenance import git_commit, versions

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0.0
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else os.cpu_count(), "ram_gb": round(ram, 1),
            "device": device, "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            "torch_threads": torch.get_num_threads(), "cv2_threads": cv2.getNumThreads(),
            "platform": platform.platform(), "versions": versions(), "git_commit": git_commit()}
