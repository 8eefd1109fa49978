"""Every optimiser, scheduler and init name: one step each, with the expected learning rates."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
from torch import nn

from lesionbench.config import InitName, OptimizerConfig, OptimizerName, SchedulerConfig, SchedulerName
from lesionbench.errors import LesionBenchError
from lesionbench.training.optim import build_optimizer, build_scheduler, init_weights

LR = 1e-2


def one_step(opt: torch.optim.Optimizer, param: nn.Parameter) -> None:
    opt.zero_grad()
    (param * torch.tensor([1.0, -2.0])).sum().backward()
    opt.step()


@pytest.mark.parametrize("name", get_args(OptimizerName))
def test_every_optimizer_takes_a_step(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    p = nn.Parameter(torch.zeros(2))
    opt = build_optimizer([p], OptimizerConfig(name=name, lr=LR, weight_decay=1e-4, momentum=0.8))
    assert capsys.readouterr().out == ""  # adabelief's banner is silenced
    g = opt.param_groups[0]
    assert g["lr"] == LR and g["weight_decay"] == 1e-4
    if name in ("sgd", "rmsprop"):
        assert g["momentum"] == 0.8
    one_step(opt, p)
    assert p[0].item() < 0 < p[1].item()  # moved against the gradient


def test_optimizer_options_and_errors() -> None:
    p = nn.Parameter(torch.zeros(2))
    opt = build_optimizer([p], OptimizerConfig(name="adamw", options={"betas": [0.8, 0.9], "eps": 1e-6}))
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    assert build_optimizer([p], OptimizerConfig(name="sgd", options={"nesterov": True})).param_groups[0]["nesterov"]
    with pytest.raises(LesionBenchError, match="optimizer.options.beta: not an option of adam .*betas"):
        build_optimizer([p], OptimizerConfig(name="adam", options={"beta": 0.9}))
    with pytest.raises(LesionBenchError, match="no trainable parameters"):
        build_optimizer([], OptimizerConfig())


def lr_after(name: str, steps: int, epochs: int = 4, spe: int = 5, opt_name: str = "sgd", **kw):
    p = nn.Parameter(torch.zeros(2))
    opt = build_optimizer([p], OptimizerConfig(name=opt_name, lr=LR))
    conf = build_scheduler(opt, SchedulerConfig(name=name, **kw), epochs=epochs, steps_per_epoch=spe)
    for _ in range(steps):  # as Lightning: optimizer.step, then scheduler.step per interval
        one_step(opt, p)
        conf["scheduler"].step()
    return conf, opt.param_groups[0]["lr"]


@pytest.mark.parametrize("name, steps, options, expected, interval", [
    ("cosine", 2, {}, LR * 0.5, "epoch"),  # T_max = epochs = 4: half-way
    ("cosine", 1, {"t_max": 2, "eta_min": 1e-3}, 1e-3 + (LR - 1e-3) * 0.5, "epoch"),
    ("cosine-restarts", 1, {"t_0": 2}, LR * 0.5, "epoch"),
    ("cosine-restarts", 2, {"t_0": 2}, LR, "epoch"),  # restarted
    ("step", 1, {}, LR * 0.1, "epoch"),  # step_size = epochs // 3 = 1
    ("step", 1, {"step_size": 2, "gamma": 0.5}, LR, "epoch"),
    ("step", 2, {"step_size": 2, "gamma": 0.5}, LR * 0.5, "epoch"),
    ("exponential", 2, {"gamma": 0.5}, LR * 0.25, "epoch"),
    ("one-cycle", 0, {}, LR / 25, "step"),
    ("one-cycle", 5, {}, LR, "step"),  # 20 steps, pct_start 0.3 -> peak after 0.3*20-1 = 5 steps
    ("one-cycle", 19, {}, LR / 25 / 1e4, "step"),
])
def test_scheduler_learning_rates(name: str, steps: int, options: dict, expected: float, interval: str) -> None:
    conf, lr = lr_after(name, steps, options=options)
    assert conf["interval"] == interval and "monitor" not in conf
    assert lr == pytest.approx(expected, rel=1e-6)


def test_one_cycle_without_momentum_and_runs_exactly_total_steps() -> None:
    """4 epochs x 5 steps: the 20th optimizer step runs at the schedule's final LR, and Lightning's
    scheduler step after it is the last one allowed (a 21st training step would be refused)."""
    conf, lr = lr_after("one-cycle", 19, opt_name="adagrad")  # adagrad has no momentum/betas to cycle
    assert conf["scheduler"].total_steps == 20
    assert lr == pytest.approx(LR / 25 / 1e4, rel=1e-6)  # the LR of the 20th (last) optimizer step
    conf["scheduler"].step()  # after the 20th step: still within total_steps
    with pytest.raises(ValueError, match="total steps is 20"):
        conf["scheduler"].step()  # after a 21st: beyond epochs x steps_per_epoch


def test_cosine_warmup_paper002_and_custom_fraction() -> None:
    # 2 epochs × 5 steps, 20 % warm-up = 2 steps: 0, 0.5, 1, then cosine over 8 steps to 0
    for steps, factor in [(0, 0.0), (1, 0.5), (2, 1.0), (6, 0.5), (10, 0.0)]:
        conf, lr = lr_after("cosine-warmup", steps, epochs=2, spe=5, warmup_fraction=0.2)
        assert conf["interval"] == "step"
        assert lr == pytest.approx(LR * factor, abs=1e-12)
    # paper 002: 10 % of 20 epochs × 110 steps = 220 warm-up steps
    _, lr = lr_after("cosine-warmup", 110, epochs=20, spe=110)
    assert lr == pytest.approx(LR * 0.5, abs=1e-12)
    _, lr = lr_after("cosine-warmup", 220 + 990, epochs=20, spe=110, options={"min_lr_factor": 0.1})
    assert lr == pytest.approx(LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))), rel=1e-9)


def test_reduce_on_plateau_monitors_validation() -> None:
    p = nn.Parameter(torch.zeros(2))
    opt = build_optimizer([p], OptimizerConfig(name="adam", lr=LR))
    conf = build_scheduler(opt, SchedulerConfig(name="reduce-on-plateau", options={"patience": 0}),
                           epochs=3, steps_per_epoch=2, monitor="val/iou", mode="max")
    assert (conf["interval"], conf["monitor"]) == ("epoch", "val/iou")
    one_step(opt, p)
    conf["scheduler"].step(0.5)
    conf["scheduler"].step(0.7)  # improved (mode max)
    assert opt.param_groups[0]["lr"] == LR
    conf["scheduler"].step(0.6)
    assert opt.param_groups[0]["lr"] == pytest.approx(LR * 0.5)


def test_every_scheduler_name_builds_and_none_is_none() -> None:
    for name in get_args(SchedulerName):
        opt = build_optimizer([nn.Parameter(torch.zeros(2))], OptimizerConfig())
        conf = build_scheduler(opt, SchedulerConfig(name=name), epochs=3, steps_per_epoch=2)
        assert (conf is None) == (name == "none")
    with pytest.raises(LesionBenchError, match=r"scheduler.options.T_max: not an option of cosine \(allowed: t_max"):
        build_scheduler(opt, SchedulerConfig(name="cosine", options={"T_max": 3}), epochs=3, steps_per_epoch=2)


def net() -> nn.Sequential:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.Flatten(), nn.Linear(64, 64))
    nn.init.uniform_(m[1].weight)
    nn.init.uniform_(m[1].bias)
    return m


@pytest.mark.parametrize("name", get_args(InitName))
def test_every_init(name: str) -> None:
    m, before = net(), net()
    init_weights([m], name)
    conv, bn, lin = m[0], m[1], m[3]
    if name == "none":
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), before.state_dict().values(), strict=False))
        return
    assert conv.bias.abs().sum() == 0 and lin.bias.abs().sum() == 0
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    w = lin.weight
    if name == "xavier":
        assert w.abs().max() <= math.sqrt(6 / 128) and w.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.1)
    elif name == "kaiming":  # fan_out, relu: std sqrt(2 / (16·3·3))
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 144), rel=0.1)
    elif name == "orthogonal":
        assert torch.allclose(w @ w.T, torch.eye(64), atol=1e-5)
    elif name == "normal":
        assert w.std().item() == pytest.approx(0.02, rel=0.1) and abs(w.mean().item()) < 0.002
    with pytest.raises(LesionBenchError, match="model.init: unknown 'he'"):
        init_weights([m], "he")
