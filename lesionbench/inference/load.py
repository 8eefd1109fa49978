"""``load_run``: a finished run folder as what a user needs to use its model, without Lightning.

Why one loader: predict, evaluate, explain, export and the Python API (``lesionbench.load_run``) all
need the same things (the network or nnU-Net's predictor, the preprocessing and normalisation the
run tested with, the threshold, the class names), for every engine, and a half-written run folder
must fail with one line. The network is built with ``lesionbench.models.create_model`` from the
run's config, as training builds it (``SegmentationTask(cfg)``), then given the run's weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from torch import nn

from lesionbench.config import ExperimentConfig, parse_config
from lesionbench.data.preprocess import IMAGENET, Stats
from lesionbench.errors import LesionBenchError
from lesionbench.inference.network import NetworkPredictor, Preprocess, Source, chunks
from lesionbench.runfolder import read_metrics, read_run_info


class Predictor(Protocol):
    """What an engine's loaded model does (inference/network.py, engines/nnunet_predict.py)."""

    batch_size: int
    network: nn.Module

    def probabilities(self, inputs: list[Any], sizes: list[tuple[int, int]], tta: bool = False) -> list[np.ndarray]: ...

    def postprocess(self, masks: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class LoadedRun:
    """A trained run, ready to predict: ``predict`` gives probabilities, ``masks`` the binary masks
    the run's test scored (threshold, then the engine's postprocessing), each at its image's own size.

    ``network``: the bare ``SegmentationModel`` (or nnU-Net's network) in eval mode; ``predictor``:
    the engine's batched forward; ``preprocess``: image -> network input (``preprocess.stats`` is the
    normalisation); ``batch_size``: the test loop's, so scores repeat ``per_image.csv`` exactly.
    """

    run_dir: Path
    cfg: ExperimentConfig
    engine: str
    network: nn.Module
    predictor: Predictor
    preprocess: Preprocess
    threshold: float
    class_names: tuple[str, ...]

    @property
    def batch_size(self) -> int:
        return self.predictor.batch_size

    def predict(self, images: Source | Sequence[Source], tta: bool = False) -> np.ndarray | list[np.ndarray]:
        """Probabilities C×H×W (float32 in [0, 1]) for one image (RGB uint8 H×W×3 array, or a file),
        or a list of them for a sequence (or an N×H×W×3 array), predicted in the test loop's batches."""
        single = isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim == 3)
        items = [images] if single else list(images)
        probs: list[np.ndarray] = []
        for chunk in chunks(items, self.batch_size):
            inputs, sizes = zip(*(self.preprocess(item) for item in chunk), strict=True)
            probs += self.predictor.probabilities(list(inputs), list(sizes), tta)
        return probs[0] if single else probs

    def mask(self, probabilities: np.ndarray) -> np.ndarray:
        """C×H×W bool: ``probabilities > threshold``, then the engine's postprocessing (nnU-Net's)."""
        return self.predictor.postprocess(np.asarray(probabilities) > self.threshold)

    def masks(self, images: Source | Sequence[Source], tta: bool = False) -> np.ndarray | list[np.ndarray]:
        """The binary masks of ``predict`` (same shapes), as the run's test scored them."""
        probs = self.predict(images, tta)
        return self.mask(probs) if isinstance(probs, np.ndarray) else [self.mask(p) for p in probs]

    def require_network(self, what: str) -> nn.Module:
        """The LesionBench network, or one line saying that ``what`` cannot use an nnU-Net run."""
        if self.engine != "lightning":
            raise LesionBenchError(f"{what}: {self.run_dir.name} is an nnU-Net run (engine: nnunet); {what} works "
                                   "on LesionBench models only (nnU-Net's own tools handle its models, e.g. "
                                   "nnUNetv2_export_model_to_zip)")
        return self.network


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """The finished run at ``run_dir`` with its best weights, in eval mode on ``device``.

    The encoder is built with ``weights: none`` (the saved tensors replace it), so loading never
    downloads; nnU-Net runs load through nnU-Net's own predictor (``engines/nnunet_predict.py``).
    """
    run, device = Path(run_dir), torch.device(device)
    path = best_checkpoint(run)
    if _engine(run) == "nnunet":
        from lesionbench.engines.nnunet_predict import NnUNetRunPredictor

        cfg = parse_config(_run_config(run), str(run / "config.yaml"))
        nnunet: Predictor = NnUNetRunPredictor(run, path, device)
        size = None if cfg.nnunet.native_resolution else cfg.dataset.image_size
        return LoadedRun(run, cfg, "nnunet", nnunet.network, nnunet, Preprocess(size, stats=None), 0.5,
                         class_names(cfg))
    cfg, network = load_network(run, path)
    predictor = NetworkPredictor(network, cfg, device)
    preprocess = Preprocess(cfg.dataset.image_size, cfg.dataset.augmentation, _stats(run))
    return LoadedRun(run, cfg, "lightning", predictor.network, predictor, preprocess, 0.5, class_names(cfg))


def build_network(cfg: ExperimentConfig) -> nn.Module:
    """The run's network, as ``SegmentationTask(cfg)`` builds it, with ``weights: none`` (no download)."""
    from lesionbench.models import create_model
    from lesionbench.models.registry import accepts_option

    options = dict(cfg.model.options)
    if accepts_option(cfg.model.name, "weights"):
        options["weights"] = "none"
    return create_model(cfg.model.name, num_classes=cfg.num_classes, **options)


def load_network(run: Path, path: Path) -> tuple[ExperimentConfig, nn.Module]:
    """(config, network with the run's weights) from ``model.safetensors`` + config.yaml, or from an
    older run's Lightning ``.ckpt`` (read as data only: neither format can run code)."""
    raw, state = _checkpoint_weights(path) if path.suffix == ".ckpt" else (_run_config(run), None)
    cfg = parse_config(raw, str(path if state is not None else run / "config.yaml"))
    network = build_network(cfg)
    try:
        if state is None:
            from safetensors.torch import load_model
            load_model(network, str(path), strict=True)
        else:
            network.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - truncated, foreign, or another model's weights
        raise LesionBenchError(f"{path}: cannot load into {cfg.model.name!r} "
                               f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                               "re-run the experiment to recreate it") from None
    return cfg, network.eval()


def best_checkpoint(run_dir: str | Path) -> Path:
    """The run's best weights (metrics.json ``best_checkpoint``), checked to exist."""
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


def class_names(cfg: ExperimentConfig) -> tuple[str, ...]:
    """Names of the output channels (lesion, or the five ISIC 2018 Task 2 attributes)."""
    from lesionbench.data.layouts import get_layout
    names = tuple(get_layout(cfg.dataset.name).class_names)
    return names if len(names) == cfg.num_classes else tuple(f"class{i}" for i in range(cfg.num_classes))


def _engine(run: Path) -> str:
    return read_run_info(run).engine if (run / "run.json").is_file() else "lightning"


def _checkpoint_weights(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, model state dict) of an older run folder's Lightning ``.ckpt``, read as data only."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, foreign or hostile: all refused the same way
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        why = ([ln for ln in lines if "GLOBAL" in ln] or lines or [type(err).__name__])[0].split(". ")[0][:300]
        raise LesionBenchError(f"{path}: refused: the checkpoint is unreadable or holds objects other than "
                               f"plain data ({why}); re-run the experiment to recreate it") from None
    config = (ckpt.get("hyper_parameters") or {}).get("config") if isinstance(ckpt, dict) else None
    if not isinstance(config, dict) or not isinstance(ckpt.get("state_dict"), dict):
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


def _stats(run_dir: Path) -> Stats:
    """The normalisation mean/std a run trained with (metrics.json "preprocessing"), ImageNet's for a
    run written before it was recorded (they all used ImageNet's)."""
    pre = (read_metrics(run_dir).model_extra or {}).get("preprocessing") or {}
    try:
        return tuple(pre["mean"]), tuple(pre["std"])
    except (KeyError, TypeError):
        return IMAGENET
