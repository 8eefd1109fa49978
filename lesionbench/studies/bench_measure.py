"""Measurements behind ``lesionbench bench``: each function times one thing, fairly.

Why here and not in training/: these compose the training pieces (task, trainer, data
module) exactly as ``train()`` does, and add a bare PyTorch loop beside them, so the cost of
everything LesionBench adds to a step (Lightning loop, logging, metrics) is measurable.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from lesionbench.config import DatasetConfig, ExperimentConfig, ModelConfig, TrainerConfig
from lesionbench.data import SegmentationDataModule
from lesionbench.lifecycle.profile import latency_ms, peak_memory, sync
from lesionbench.models import create_model
from lesionbench.models.registry import accepts_option
from lesionbench.training.losses import build_loss
from lesionbench.training.optim import build_optimizer
from lesionbench.training.task import SegmentationTask
from lesionbench.training.trainer import build_trainer


# ----------------------------------------------------------------------------- helpers
def no_weights(name: str) -> dict[str, str]:
    """Random init (nothing to download): ``weights=none`` where the model takes that option."""
    return {"weights": "none"} if accepts_option(name, "weights") else {}


def autocast(device: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs that support it (what the Lightning side gets from bf16-mixed)."""
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def amp_precision(device: str) -> str:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a loss scaler); fp32 on CPU."""
    if not device.startswith("cuda"):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def experiment(model: str, data_root: Path, size: int | tuple[int, int], batch: int, device: str, workers: int,
               augmentation: str = "none", steps: int | None = None, cache: bool = True,
               compiled: bool = False) -> ExperimentConfig:
    """The config a user would write for this measurement (synthetic ISIC 2018 layout, no weights)."""
    cuda = device.startswith("cuda")
    return ExperimentConfig(
        name="bench",
        dataset=DatasetConfig(name="isic2018", root=str(data_root), image_size=size, augmentation=augmentation,
                              num_workers=workers, leakage="ignore", cache=cache),
        model=ModelConfig(name=model, options=no_weights(model)),
        trainer=TrainerConfig(epochs=1, batch_size=batch, accelerator="gpu" if cuda else "cpu",
                              devices=[int(device.split(":")[1])] if ":" in device else 1,
                              precision="bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else "32-true",
                              limit_train_batches=steps, limit_val_batches=0 if steps else None,
                              channels_last=cuda, compile=compiled),
    )


# ----------------------------------------------------------------------------- training step
class StepTimer(Callback):
    """Seconds from the end of warm-up step ``warmup`` to the end of step ``warmup + steps``:
    fetch + step + every hook and log call of those steps, nothing of fit's setup or teardown."""

    def __init__(self, warmup: int, steps: int, device: str) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.t0 = self.t1 = 0.0
        self.threads = 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx in (self.warmup - 1, self.warmup + self.steps - 1):
            sync(self.device)
            setattr(self, "t0" if batch_idx == self.warmup - 1 else "t1", time.perf_counter())
            self.threads = torch.get_num_threads()

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


def lightning_steps(task: SegmentationTask, dm: SegmentationDataModule, cfg: ExperimentConfig, run_dir: Path,
                    warmup: int, steps: int, device: str) -> tuple[float, int]:
    """One ``trainer.fit`` built by ``build_trainer`` (as ``train()`` builds it: CSV logger, checkpoint,
    LR monitor; no progress bar, as in suite runs); returns (timed seconds of ``steps`` steps, threads then)."""
    timer = StepTimer(warmup, steps, device)
    trainer, _ = build_trainer(cfg, task.phase, run_dir / "checkpoints", run_dir, [timer], progress=False)
    with warnings.catch_warnings():  # timed fits skip validation, so the checkpoint has no metric to watch
        warnings.filterwarnings("ignore", message=r".*could not find the monitored key")
        trainer.fit(task, datamodule=dm)  # cfg.trainer.compile / channels_last act in task.configure_model
    if timer.t1 <= timer.t0:
        raise RuntimeError(f"bench: Lightning ran fewer than {warmup + steps} steps (too few training images?)")
    return timer.seconds, timer.threads


def bare_steps(task: SegmentationTask, dm: SegmentationDataModule, warmup: int, steps: int,
               device: str) -> tuple[float, float]:
    """The same task (its model, input layout, compile, loss object and the phase's optimiser config),
    loader and device in a plain PyTorch loop. Returns (timed seconds, peak memory MB of the timed steps)."""
    task.to(device).train()
    task.configure_model()  # channels_last / torch.compile, the hook Lightning calls on its side
    optimizer = build_optimizer([p for p in task.parameters() if p.requires_grad], task.phase.optimizer)
    t0 = t1 = 0.0
    with peak_memory(device) as mem:
        for i, batch in enumerate(dm.train_dataloader()):
            x = batch["image"].to(device, non_blocking=True)
            y = batch["mask"].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                loss = task.loss_fn(task(x), y)
            loss.backward()
            optimizer.step()
            if i in (warmup - 1, warmup + steps - 1):
                sync(device)
                if i == warmup - 1:
                    t0 = time.perf_counter()
                else:
                    t1 = time.perf_counter()
                    break
    if t1 <= t0:
        raise RuntimeError(f"bench: the loader gave fewer than {warmup + steps} batches (too few training images?)")
    return t1 - t0, mem["peak_mb"]


def ratio_ci(lightning_s: list[float], bare_s: list[float]) -> dict[str, float]:
    """LesionBench/bare throughput ratio (bare seconds / LesionBench seconds of the same steps) over
    interleaved blocks: the geometric mean of the per-block ratios with a 95% t-interval on their
    logarithms (a ratio is symmetric on the log scale). ``halfwidth``: the CI's half-width relative
    to the ratio (0.01 = ±1%); infinite with a single block."""
    from scipy import stats

    logs = [math.log(b / a) for a, b in zip(lightning_s, bare_s, strict=True)]
    n, mean = len(logs), sum(logs) / len(logs)
    if n < 2:
        return {"ratio": math.exp(mean), "ci95": [0.0, math.inf], "halfwidth": math.inf, "blocks": n}
    se = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1) / n)
    margin = float(stats.t.ppf(0.975, n - 1)) * se
    lo, hi = math.exp(mean - margin), math.exp(mean + margin)
    return {"ratio": math.exp(mean), "ci95": [lo, hi], "halfwidth": (hi - lo) / 2 / math.exp(mean), "blocks": n}


def model_rate(name: str, size: int, batch: int, steps: int, device: str) -> float:
    """Images/s one training step consumes (random tensors: the model's appetite, no loader)."""
    cuda = device.startswith("cuda")
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = create_model(name, **no_weights(name)).to(device, memory_format=fmt).train()
    loss_fn = build_loss(ExperimentConfig().loss, getattr(model, "deep_supervision_weights", None))
    optimizer = build_optimizer(list(model.parameters()), ExperimentConfig().optimizer)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.5).float()
    times = []
    for _ in range(steps + 1):  # the first step warms up
        sync(device)
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        sync(device)
        times.append(time.perf_counter() - t)
    return batch / sorted(times[1:])[len(times[1:]) // 2]


# ----------------------------------------------------------------------------- loader, inference
def loader_epoch(loader: Any) -> tuple[int, float]:
    """(images, seconds) of one pass over a DataLoader, touching every batch."""
    n, t = 0, time.perf_counter()
    for batch in loader:
        n += len(batch["image"])
    return n, time.perf_counter() - t


def inference(name: str, size: int, batches: tuple[int, ...], repeats: int, device: str) -> dict[str, float]:
    """Eval-mode latency (ms/image, median) and the peak memory of each batch size."""
    cuda = device.startswith("cuda")
    model = create_model(name, **no_weights(name)).to(device, memory_format=torch.channels_last if cuda else
                                                     torch.contiguous_format).eval()
    out: dict[str, float] = {}
    for b in batches:
        with peak_memory(device) as mem, autocast(device):
            out[f"ms_per_image_b{b}"] = latency_ms(model, size, batch=b, repeats=repeats, device=device)
        out[f"peak_mb_b{b}"] = mem["peak_mb"]
    return out
