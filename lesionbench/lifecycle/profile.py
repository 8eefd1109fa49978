"""Cost of a model at the recipe's resolution: parameters, FLOPs, latency, peak memory.

Measured on the device the model trained on (a GPU run publishes GPU latency and memory), and
the cost says which device that was.
"""

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

from lesionbench.data.decode import Size, hw


def sync(device: torch.device | str) -> None:
    """Wait for queued CUDA work, so a timer or memory reading sees it done (no-op on CPU)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def count_flops(model: nn.Module, image_size: Size, device: torch.device | str = "cpu") -> float | None:
    """Multiply-accumulates of one batch-1 forward pass, or None where counting fails.

    Counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matrix
    products, attention), which reports FLOPs as 2 per multiply-accumulate: halved here, so the
    leaderboard's GMACs column keeps its meaning. Element-wise ops (norms, activations) are not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, *hw(image_size), device=device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    except Exception:  # noqa: BLE001 - an op the counter cannot follow must not fail a finished run
        return None
    return counter.get_total_flops() / 2


@torch.inference_mode()
def latency_ms(model: nn.Module, image_size: Size, batch: int = 1, repeats: int = 5,
               device: torch.device | str = "cpu") -> float:
    """Median wall time per image of a forward pass in eval mode."""
    x = torch.randn(batch, 3, *hw(image_size), device=device)
    model(x)  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        model(x)
        sync(device)
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
def peak_memory(device: torch.device | str) -> Iterator[dict[str, float]]:
    """Peak memory used inside the block, over what was resident before it: CUDA allocator peak,
    or on CPU the process's resident high-water mark (reset through /proc/self/clear_refs)."""
    out: dict[str, float] = {}
    if str(device).startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield out
        sync(device)
        out["peak_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
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


#: Recorded with every run's cost: the leaderboard names what counted its GMACs (older runs: fvcore).
MACS_COUNTER = "torch.utils.flop_counter"


def measure_cost(model: nn.Module, image_size: Size, device: torch.device | str | None = None) -> dict[str, Any]:
    """Everything the leaderboard's cost columns show, measured on ``device`` (the training device;
    default: where the model is now). The model goes back to where it was, in the mode it was in."""
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    was_training = model.training
    model.to(device).eval()
    total, trainable = count_params(model)
    try:
        return {
            "params": total, "trainable_params": trainable,
            "flops": count_flops(model, image_size, device), "macs_counter": MACS_COUNTER,
            "ms_per_image": round(latency_ms(model, image_size, device=device), 3),
            "peak_mem_mb": round(_inference_peak_mb(model, image_size, device), 1),
            "device": describe_device(device),
        }
    finally:
        model.to(home).train(was_training)


def describe_device(device: torch.device | str) -> str:
    """``cpu`` or e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)``: what the latency and memory figures were measured on."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


@torch.inference_mode()
def _inference_peak_mb(model: nn.Module, image_size: Size, device: torch.device) -> float:
    """Memory one batch-1 forward pass needs beyond what is already resident."""
    with peak_memory(str(device)) as mem:
        model(torch.zeros(1, 3, *hw(image_size), device=device))
    return mem["peak_mb"]
