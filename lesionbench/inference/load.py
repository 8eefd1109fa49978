"""Load a finished run folder back into a model: best weights + the config it was trained with.

Why one loader: predict, explain, export and the visual report all need the same three things
(weights, preprocessing, class names), and a half-written run folder must fail with one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import albumentations as A
import torch
import yaml

from lesionbench.config import ExperimentConfig, parse_config
from lesionbench.errors import LesionBenchError
from lesionbench.runfolder import read_metrics, read_run_info
from lesionbench.training.checkpoints import load_checkpoint
from lesionbench.training.task import SegmentationTask


def best_checkpoint(run_dir: str | Path) -> Path:
    """The run's best weights (run.json / metrics.json ``best_checkpoint``), checked to exist."""
    run = Path(run_dir)
    if not run.is_dir():
        raise LesionBenchError(f"{run}: no such run folder (expected results/<suite>/<run>)")
    status = read_run_info(run).status if (run / "run.json").is_file() else None
    if status not in (None, "finished") or not (run / "metrics.json").is_file():
        raise LesionBenchError(f"{run}: run is not finished (status {status or 'unknown'}, metrics.json "
                               f"{'present' if (run / 'metrics.json').is_file() else 'missing'}); "
                               "finish it with `lesionbench run` first")
    rel = read_metrics(run).best_checkpoint
    if not (run / rel).is_file():
        raise LesionBenchError(f"{run / 'metrics.json'}: best_checkpoint {rel!r} is missing on disk "
                               "(re-run the experiment to recreate it)")
    return run / rel


def _checkpoint_weights(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, model state dict) of an older run folder's Lightning ``.ckpt``, read as data only."""
    ckpt = load_checkpoint(path)
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(config, dict):
        raise LesionBenchError(f"{path}: not a LesionBench checkpoint (missing hyper_parameters.config)")
    return config, {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def _run_config(run: Path) -> dict[str, Any]:
    path = run / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise LesionBenchError(f"{path}: cannot read the run's config ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise LesionBenchError(f"{path}: not a config mapping; re-run the experiment to recreate it")
    return raw


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[SegmentationTask, ExperimentConfig]:
    """(task in eval mode with the best weights, the run's ExperimentConfig).

    The encoder is rebuilt with ``weights: none`` (the saved tensors replace it), so loading never
    downloads. ``task.model`` is the bare ``SegmentationModel``.
    """
    path = best_checkpoint(run_dir)
    # A finished run keeps model.safetensors (tensors only; its config is config.yaml). Neither
    # format can run code: safetensors holds no objects, a .ckpt is read with weights_only=True.
    raw, state = _checkpoint_weights(path) if path.suffix == ".ckpt" else (_run_config(Path(run_dir)), None)
    cfg = parse_config(raw, str(path if state is not None else Path(run_dir) / "config.yaml"))
    build = cfg.model_copy(deep=True)
    from lesionbench.models.registry import accepts_option
    if accepts_option(build.model.name, "weights"):
        build.model.options = {**build.model.options, "weights": "none"}
    task = SegmentationTask(build.model_dump(mode="json"))
    try:
        if state is None:
            from safetensors.torch import load_model
            load_model(task.model, str(path), strict=True)
        else:
            task.model.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - truncated, foreign, or another model's weights
        raise LesionBenchError(f"{path}: cannot load into {cfg.model.name!r} "
                               f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                               "re-run the experiment to recreate it") from None
    task.cfg = cfg
    task.model.normalization = _stats(Path(run_dir))  # what the run normalised with (data/preprocess.py)
    return task.to(device).eval(), cfg


def eval_transform(cfg: ExperimentConfig) -> A.Compose:
    """The run's own test-time preprocessing: resize to ``image_size`` + ImageNet normalisation."""
    from lesionbench.data.transforms import build_transforms
    return build_transforms(cfg.dataset.augmentation, cfg.dataset.image_size, train=False)


def class_names(cfg: ExperimentConfig) -> list[str]:
    """Names of the output channels (["lesion"], or the five ISIC 2018 Task 2 attributes)."""
    from lesionbench.data.layouts import get_layout
    names = list(get_layout(cfg.dataset.name).class_names)
    return names if len(names) == cfg.num_classes else [f"class{i}" for i in range(cfg.num_classes)]


def _stats(run_dir: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation mean/std a run trained with (metrics.json "preprocessing"), ImageNet's for a
    run written before it was recorded (they all used ImageNet's)."""
    from lesionbench.data.preprocess import IMAGENET

    pre = (read_metrics(run_dir).model_extra or {}).get("preprocessing") or {}
    try:
        return tuple(pre["mean"]), tuple(pre["std"])
    except (KeyError, TypeError):
        return IMAGENET


def run_stats(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation of a model loaded by ``load_run`` (ImageNet's for any other model)."""
    from lesionbench.data.preprocess import IMAGENET

    return getattr(model, "normalization", IMAGENET)
