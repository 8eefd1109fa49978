"""Optimisers, LR schedulers (as Lightning ``lr_scheduler`` dicts) and decoder weight init, by name.

Everything is a torch (or adabelief_pytorch) class; this file only maps config names and
``options`` onto constructor arguments, with defaults, and rejects unknown options clearly.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import math
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler as sched

from lesionbench.config import OptimizerConfig, SchedulerConfig
from lesionbench.errors import LesionBenchError


def _adabelief(params: Any, **kw: Any) -> torch.optim.Optimizer:
    """AdaBelief prints a change log and its settings on construction; keep the console clean."""
    from adabelief_pytorch import AdaBelief

    with contextlib.redirect_stdout(io.StringIO()):
        return AdaBelief(params, print_change_log=False, **kw)


def _optimizer_classes() -> dict[str, Any]:
    from adabelief_pytorch import AdaBelief

    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
            "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "adabelief": AdaBelief}


_USES_MOMENTUM = {"sgd", "rmsprop"}
_NOT_OPTIONS = {"self", "params", "lr", "weight_decay", "momentum", "print_change_log"}


def build_optimizer(params: Iterable[Any], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """``cfg.lr``/``weight_decay`` always; ``momentum`` for sgd and rmsprop; the rest from options."""
    classes = _optimizer_classes()
    if cfg.name not in classes:
        raise LesionBenchError(f"optimizer.name: unknown {cfg.name!r} (allowed: {', '.join(classes)})")
    cls = classes[cfg.name]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    allowed = [n for n, p in inspect.signature(cls.__init__).parameters.items()
               if n not in _NOT_OPTIONS and p.kind in kinds]
    for key in cfg.options:
        if key not in allowed:
            raise LesionBenchError(f"optimizer.options.{key}: not an option of {cfg.name} (allowed: {', '.join(allowed)})")
    params = list(params)
    if not params:
        raise LesionBenchError("optimizer: no trainable parameters (is every stage frozen in this phase?)")
    kw: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.name in _USES_MOMENTUM:
        kw["momentum"] = cfg.momentum
    for key, value in cfg.options.items():
        kw[key] = tuple(value) if isinstance(value, list) else value  # YAML lists -> betas tuples
    if cfg.name == "adabelief":
        return _adabelief(params, **kw)
    return cls(params, **kw)


# ----------------------------------------------------------------------------- schedulers

def _warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """LR factor: linear 0→1 over ``warmup`` steps, then half-cosine 1→``floor`` by ``total``."""
    if step < warmup:
        return step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _options(cfg: SchedulerConfig, defaults: dict[str, Any]) -> dict[str, Any]:
    for key in cfg.options:
        if key not in defaults:
            raise LesionBenchError(f"scheduler.options.{key}: not an option of {cfg.name} "
                                   f"(allowed: {', '.join(defaults) or 'none'})")
    return {**defaults, **cfg.options}


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int, steps_per_epoch: int,
                    monitor: str = "val/dice", mode: str = "max") -> dict[str, Any] | None:
    """A Lightning lr_scheduler dict, or None for ``none``.

    ``steps_per_epoch`` counts optimizer steps (after gradient accumulation); per-batch schedules
    (one-cycle, cosine-warmup) run for exactly ``epochs * steps_per_epoch`` steps.
    """
    if epochs < 1 or steps_per_epoch < 1:
        raise LesionBenchError(f"scheduler: epochs ({epochs}) and steps_per_epoch ({steps_per_epoch}) must be >= 1")
    name, total = cfg.name, epochs * steps_per_epoch
    third = max(1, epochs // 3)
    if name == "none":
        _options(cfg, {})
        return None
    if name == "reduce-on-plateau":
        o = _options(cfg, {"factor": 0.5, "patience": 5, "threshold": 1e-4, "threshold_mode": "rel",
                           "cooldown": 0, "min_lr": 1e-7})
        s = sched.ReduceLROnPlateau(optimizer, mode=mode, **o)
        return {"scheduler": s, "interval": "epoch", "frequency": 1, "monitor": monitor}
    if name == "cosine":
        o = _options(cfg, {"t_max": epochs, "eta_min": 0.0})
        s = sched.CosineAnnealingLR(optimizer, T_max=int(o["t_max"]), eta_min=o["eta_min"])
    elif name == "cosine-restarts":
        o = _options(cfg, {"t_0": third, "t_mult": 1, "eta_min": 0.0})
        s = sched.CosineAnnealingWarmRestarts(optimizer, T_0=int(o["t_0"]), T_mult=int(o["t_mult"]),
                                              eta_min=o["eta_min"])
    elif name == "step":
        o = _options(cfg, {"step_size": third, "gamma": 0.1})
        s = sched.StepLR(optimizer, step_size=int(o["step_size"]), gamma=o["gamma"])
    elif name == "exponential":
        o = _options(cfg, {"gamma": 0.95})
        s = sched.ExponentialLR(optimizer, gamma=o["gamma"])
    elif name == "one-cycle":
        d = optimizer.defaults
        o = _options(cfg, {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4,
                           "anneal_strategy": "cos", "three_phase": False,
                           "cycle_momentum": "momentum" in d or "betas" in d})
        max_lr = [g["lr"] for g in optimizer.param_groups]  # the config's lr is the peak
        s = sched.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, **o)
        return {"scheduler": s, "interval": "step", "frequency": 1}
    elif name == "cosine-warmup":
        o = _options(cfg, {"min_lr_factor": 0.0})
        warmup = int(round(cfg.warmup_fraction * total))
        fn = partial(_warmup_cosine, warmup=warmup, total=total, floor=float(o["min_lr_factor"]))
        return {"scheduler": sched.LambdaLR(optimizer, fn), "interval": "step", "frequency": 1}
    else:
        raise LesionBenchError(f"scheduler.name: unknown {name!r}")
    return {"scheduler": s, "interval": "epoch", "frequency": 1}


# ----------------------------------------------------------------------------- init

_CONV_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm)

_INITS = {
    "xavier": nn.init.xavier_uniform_,
    "kaiming": partial(nn.init.kaiming_normal_, mode="fan_out", nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
    "normal": partial(nn.init.normal_, mean=0.0, std=0.02),
}


@torch.no_grad()
def init_weights(modules: Iterable[nn.Module], name: str) -> None:
    """Init Conv/Linear weights by ``name`` (bias 0) and norm layers to 1/0; ``none`` leaves all as is.

    The caller passes decoder/head modules only: pretrained encoder weights must never be reset.
    """
    if name == "none":
        return
    if name not in _INITS:
        raise LesionBenchError(f"model.init: unknown {name!r} (allowed: none, {', '.join(_INITS)})")
    fn = _INITS[name]
    for root in modules:
        for m in root.modules():
            if isinstance(m, _CONV_LINEAR):
                fn(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _NORMS) and getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
