"""Cost measurement: on the training device, saying which, and the CUDA branch reachable without a GPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lesionbench.lifecycle import profile


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))


def test_measure_cost_on_a_given_device_restores_the_model_and_names_the_device() -> None:
    model = _tiny().train()
    cost = profile.measure_cost(model, 32, device="cpu")
    assert cost["device"] == "cpu" and cost["params"] == sum(p.numel() for p in model.parameters())
    assert cost["ms_per_image"] > 0 and cost["peak_mem_mb"] >= 0
    assert model.training and next(model.parameters()).device.type == "cpu"
    assert profile.measure_cost(model.eval(), 32)["device"] == "cpu"  # default: where the model is
    assert not model.training


def test_cuda_memory_branch_synchronises_and_reads_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    """`lesionbench bench --device cuda` and cost measurement on CUDA crashed on an undefined `sync`."""
    calls: list[str] = []
    allocated = iter([100 * 2**20])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(f"sync {device}"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: next(allocated))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 164 * 2**20)
    with profile.peak_memory("cuda:0") as mem:
        calls.append("block")
    assert mem["peak_mb"] == 64.0
    assert calls == ["sync cuda:0", "reset", "block", "sync cuda:0"]


def test_sync_waits_only_for_cuda_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    profile.sync("cpu")
    profile.sync(torch.device("cpu"))
    profile.sync("cuda")
    profile.sync(torch.device("cuda", 1))
    assert calls == ["cuda", torch.device("cuda", 1)]


def test_describe_device_names_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: f"Fake GPU {index}")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert profile.describe_device("cuda") == "cuda:0 (Fake GPU 0)"
    assert profile.describe_device("cuda:1") == "cuda:1 (Fake GPU 1)"
    assert profile.describe_device("cpu") == "cpu"


@pytest.mark.timeout(60)
def test_flops_are_the_multiply_accumulates_torch_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """GMACs come from torch.utils.flop_counter (no fvcore): a conv layer's MACs, counted by hand."""
    import sys

    monkeypatch.setitem(sys.modules, "fvcore", None)  # not installed: importing it fails
    monkeypatch.setitem(sys.modules, "fvcore.nn", None)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    h, w = 16, 24
    macs = h * w * 8 * (3 * 3 * 3) + h * w * 2 * 8  # per output pixel and channel: k*k*C_in multiply-adds
    assert profile.count_flops(model, (h, w)) == macs
    assert profile.measure_cost(model, (h, w))["flops"] == macs


def test_the_leaderboard_names_what_counted_each_run_s_gmacs() -> None:
    """A run measured now records torch's counter; a run measured before records none and was
    counted by fvcore: the footer must not credit the old figures to the new counter."""
    from types import SimpleNamespace

    from lesionbench.reporting.leaderboard import _costs

    model = nn.Conv2d(3, 1, 3)
    now = profile.measure_cost(model, 32)
    assert now["macs_counter"] == "torch.utils.flop_counter"
    old = {k: v for k, v in now.items() if k != "macs_counter"}

    def entry(*costs: dict) -> SimpleNamespace:
        return SimpleNamespace(runs=[SimpleNamespace(metrics=SimpleNamespace(cost=c), info=None) for c in costs])

    assert _costs(entry(now, now)).macs_counter == "torch.utils.flop_counter"
    assert _costs(entry(old)).macs_counter == "fvcore"
    assert _costs(entry(now, old)).macs_counter == "fvcore; torch.utils.flop_counter"
