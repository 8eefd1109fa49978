"""Checks before the first run trains: every expanded config's model, options and weights, and every data root.

`run` (dry runs too) and `tune` call ``problems`` and stop with one line per problem (exit 2) instead of failing
run after run; a real run then calls ``fetch_all`` so that weights an offline machine cannot download are named
once, with the fix, before anything trains.
"""

from __future__ import annotations

import difflib
import inspect
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lesionbench.config import ExperimentConfig
from lesionbench.errors import LesionBenchError
from lesionbench.studies.suite import PlannedRun


def _which(names: list[str]) -> str:
    return names[0] + (f" (+{len(names) - 1} more)" if len(names) > 1 else "")


def _grouped(runs: Iterable[PlannedRun], key: Any) -> dict[Any, list[PlannedRun]]:
    groups: dict[Any, list[PlannedRun]] = defaultdict(list)
    for run in runs:
        groups[key(run.config)].append(run)
    return groups


def _weights_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """The model's options with the weights it is built with (its own, else model.default_weights)."""
    from lesionbench.models.registry import accepts_option

    opts = dict(cfg.model.options)
    if "weights" not in opts and accepts_option(cfg.model.name, "weights"):
        opts["weights"] = cfg.model.default_weights
    return opts


def model_problem(cfg: ExperimentConfig) -> str | None:
    """Why this config's model cannot be built (unknown name, option or weights), without building it."""
    from lesionbench.models.pretrained import pretrained_for
    from lesionbench.models.registry import builder_info, model_names

    name = cfg.model.name
    try:
        fn, _, defaults = builder_info(name)
    except LesionBenchError:
        close = difflib.get_close_matches(name, model_names(), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `lesionbench models`"
        return f"model.name {name!r}: unknown model ({hint})"
    if fn is None:
        why = _smp_problem(name)
        if why:
            return why
    else:
        params = inspect.signature(fn).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            allowed = [p for p in params if p != "num_classes"]
            bad = [k for k in {**defaults, **cfg.model.options} if k not in allowed]
            if bad:
                return (f"model.options of {name!r}: unknown option {', '.join(map(repr, bad))} "
                        f"(allowed: {', '.join(allowed) or 'none'})")
    try:
        pretrained_for(name, _weights_options(cfg))
    except LesionBenchError as err:
        return f"model {name!r}: {err}"
    return None


def _smp_problem(name: str) -> str | None:
    """smp:<Arch>/<encoder>: an architecture and an encoder smp knows."""
    import segmentation_models_pytorch as smp

    arch, _, encoder = name.removeprefix("smp:").partition("/")
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        archs = sorted({cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()})
        return f"model.name {name!r}: unknown smp architecture {arch!r} (one of {', '.join(archs)})"
    if encoder.startswith("tu-"):
        import timm

        return None if timm.is_model(encoder[3:]) else f"model.name {name!r}: timm has no model {encoder[3:]!r}"
    if encoder not in smp.encoders.get_encoder_names():
        close = difflib.get_close_matches(encoder, smp.encoders.get_encoder_names(), n=3)
        return f"model.name {name!r}: unknown smp encoder {encoder!r}" + (f" (did you mean {', '.join(close)}?)"
                                                                          if close else "")
    return None


def data_problem(cfg: ExperimentConfig) -> str | None:
    """Why this config's data root cannot be read: unset, missing, or without the dataset's folders."""
    from lesionbench.data.datamodule import resolve_root
    from lesionbench.data.layouts import find_dir, get_layout, missing_message

    name = cfg.dataset.name
    try:
        root = resolve_root(name, cfg.dataset.root)
    except LesionBenchError as err:
        return str(err)
    if not root.is_dir():
        return (f"dataset {name}: data root {root} does not exist (set dataset.root or $LESIONBENCH_DATA to the "
                f"folder holding the unzipped archives, or run `lesionbench data download {name} --root {root}`)")
    layout = get_layout(name)
    if any(find_dir(root, s.image_dirs) and find_dir(root, s.mask_dirs) for s in layout.splits.values()):
        return None
    return missing_message(layout, root, next(iter(layout.splits)))


def _is_synthetic(cfg: ExperimentConfig) -> bool:
    from lesionbench.data.synthetic import default_root

    root = cfg.dataset.root
    return cfg.dataset.name == "synthetic" or (root is not None and Path(root).resolve() == default_root().resolve())


def problems(runs: list[PlannedRun], check_data: bool = True) -> list[str]:
    """One line per distinct problem, naming the runs it stops; empty when every run can start."""
    out = []
    trained_here = [r for r in runs if r.config.engine == "lightning"]  # nnU-Net builds its own network
    for group in _grouped(trained_here, lambda c: (c.model.name, repr(sorted(c.model.options.items())))).values():
        why = model_problem(group[0].config)
        if why:
            out.append(f"{_which([r.name for r in group])}: {why}")
    if check_data:
        real = [r for r in runs if not _is_synthetic(r.config)]
        for group in _grouped(real, lambda c: (c.dataset.name, c.dataset.root)).values():
            why = data_problem(group[0].config)
            if why:
                out.append(f"{_which([r.name for r in group])}: {why}")
    return out


def fetch_all(runs: list[PlannedRun]) -> None:
    """Download every pretrained encoder the runs build (once each), or stop with one line naming it."""
    from lesionbench.models.pretrained import fetch_weights, pretrained_for

    seen: set[str] = set()
    for run in runs:
        cfg = run.config
        if cfg.engine != "lightning":
            continue
        pre = pretrained_for(cfg.model.name, _weights_options(cfg))
        if pre.id in seen:
            continue
        seen.add(pre.id)
        named = "weights" in cfg.model.options
        fix = ("--set model.options.weights=none (train from scratch) or a local file "
               "(--set model.options.weights=/path/to/weights.pth)" if named else
               "LESIONBENCH_WEIGHTS=none or --set model.default_weights=none (train from scratch), or a local file "
               "(--set model.default_weights=/path/to/weights.pth)")
        try:
            fetch_weights(pre, fix)
        except LesionBenchError as err:
            raise LesionBenchError(f"{run.name}: {err}") from None


def check_one(cfg: ExperimentConfig) -> None:
    """``problems`` and ``fetch_all`` for one config (a tune study's base): the first problem as one line."""
    runs = [PlannedRun(cfg.name, cfg)]
    found = problems(runs)
    if found:
        raise LesionBenchError("; ".join(line.split(": ", 1)[1] for line in found))
    try:
        fetch_all(runs)
    except LesionBenchError as err:
        raise LesionBenchError(str(err).split(": ", 1)[1]) from None
