"""Load a finished run folder back into a model: best checkpoint + the config it was trained with.

Why one loader: predict, explain, export and the visual report all need the same three things
(weights, preprocessing, class names), and a half-written run folder must fail with one line.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import torch

from lesionbench.config import ExperimentConfig
from lesionbench.errors import LesionBenchError
from lesionbench.io import read_json
from lesionbench.training.task import SegmentationTask


def best_checkpoint(run_dir: str | Path) -> Path:
    """The run's best checkpoint (``metrics.json["best_checkpoint"]``), checked to exist."""
    run = Path(run_dir)
    if not run.is_dir():
        raise LesionBenchError(f"{run}: no such run folder (expected results/<suite>/<run>)")
    info_path, metrics_path = run / "run.json", run / "metrics.json"
    status = read_json(info_path).get("status") if info_path.is_file() else None
    if status not in (None, "finished") or not metrics_path.is_file():
        raise LesionBenchError(f"{run}: run is not finished (status {status or 'unknown'}, "
                               f"metrics.json {'present' if metrics_path.is_file() else 'missing'}); "
                               "finish it with `lesionbench run` first")
    rel = read_json(metrics_path).get("best_checkpoint")
    if not rel or not (run / rel).is_file():
        raise LesionBenchError(f"{run / 'metrics.json'}: best_checkpoint {rel!r} is missing on disk "
                               "(re-run the experiment to recreate it)")
    return run / rel


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[SegmentationTask, ExperimentConfig]:
    """(task in eval mode with the best weights, the run's ExperimentConfig).

    The encoder is rebuilt with ``weights: none`` (the checkpoint replaces it), so loading never
    downloads. ``task.model`` is the bare ``SegmentationModel``.
    """
    path = best_checkpoint(run_dir)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        raw = ckpt["hyper_parameters"]["config"]
        state = ckpt["state_dict"]
    except (KeyError, TypeError) as err:
        raise LesionBenchError(f"{path}: not a LesionBench checkpoint (missing {err})") from None
    except Exception as err:  # truncated / foreign file
        raise LesionBenchError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None
    cfg = ExperimentConfig.model_validate(raw)
    build = cfg.model_copy(deep=True)
    from lesionbench.models.registry import accepts_option
    if accepts_option(build.model.name, "weights"):
        build.model.options = {**build.model.options, "weights": "none"}
    task = SegmentationTask(build.model_dump(mode="json"))
    task.load_state_dict(state)
    task.cfg = cfg
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
