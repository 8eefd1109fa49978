"""Cost of a model at the recipe's resolution: parameters, FLOPs, latency, peak memory."""

from __future__ import annotations

import contextlib
import ctypes
import resource
import time
from collections.abc import Iterator
from pathlib import Path
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


def rss_mb() -> float:
    """Current resident memory of this process (Linux /proc; ru_maxrss elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _trim() -> None:
    """Give freed heap back to the OS (glibc keeps it), so RSS before a block is its live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def peak_memory(device: str) -> Iterator[dict[str, float]]:
    """Peak memory used inside the block, over what was resident before it: CUDA allocator peak,
    or on CPU the process's resident high-water mark (reset through /proc/self/clear_refs)."""
    out: dict[str, float] = {}
    if device.startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        yield out
        sync(device)
        out["peak_mb"] = (torch.cuda.max_memory_allocated() - before) / 2**20
        return
    _trim()
    before, hwm = rss_mb(), None
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        hwm = "VmHWM:"
    except OSError:
        pass
    yield out
    peak = rss_mb()
    if hwm:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(hwm):
                peak = int(line.split()[1]) / 1024
    out["peak_mb"] = max(peak - before, 0.0)


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
            "peak_mem_mb": round(_inference_peak_mb(model, image_size, device), 1),
        }
    finally:
        model.train(was_training)


@torch.inference_mode()
def _inference_peak_mb(model: nn.Module, image_size: int, device: torch.device) -> float:
    """Memory one batch-1 forward pass needs beyond what is already resident."""
    with peak_memory(str(device)) as mem:
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    return mem["peak_mb"]
