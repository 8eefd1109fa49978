"""Cost of a model at the recipe's resolution: parameters, FLOPs, latency, peak memory."""

from __future__ import annotations

import resource
import time
from typing import Any

import torch
from torch import nn


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def count_flops(model: nn.Module, image_size: int, device: torch.device | str = "cpu") -> float | None:
    """Multiply-accumulates of one forward pass (fvcore), or None where tracing fails."""
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:  # pragma: no cover - fvcore is a dependency
        return None
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    try:
        analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return float(analysis.total())
    except Exception:  # noqa: BLE001 - an untraceable op must not fail a finished run
        return None


@torch.inference_mode()
def latency_ms(model: nn.Module, image_size: int, batch: int = 1, repeats: int = 5,
               device: torch.device | str = "cpu") -> float:
    """Median wall time per image of a forward pass in eval mode."""
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    model(x)  # warm-up
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available() and str(device).startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        if torch.cuda.is_available() and str(device).startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000 / batch)
    return sorted(times)[len(times) // 2]


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    """Peak GPU memory allocated, or the process's peak resident memory on CPU."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_cost(model: nn.Module, image_size: int) -> dict[str, Any]:
    """Everything the leaderboard's cost columns show, measured on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, trainable = count_params(model)
    try:
        return {
            "params": total, "trainable_params": trainable,
            "flops": count_flops(model, image_size, device),
            "ms_per_image": round(latency_ms(model, image_size, device=device), 3),
            "peak_mem_mb": round(peak_memory_mb(device), 1),
        }
    finally:
        model.train(was_training)
