"""Chance floors: what trivial predictions score on a run's test images, computed, never trained.

Three strategies, each scored with the dataset's primary metric (metrics/challenge.py) and Dice, on
exactly the run's test images at their ground-truth size, under the empty-mask policy of
metrics/scores.py:

- ``empty``: every prediction empty. Its counts follow from the image's own: (0, 0, tp+fn, fp+tn).
- ``full``: every prediction the whole image: (tp+fn, fp+tn, 0, 0).
- ``mean_mask``: one mask for every image, the training masks' per-pixel mean at the network input
  size (each mask resized as the data cache resizes it) thresholded as predictions are (> 0.5), then
  resized to each ground truth's size as a prediction is (bilinear on logits, +1 inside and -1 outside,
  > 0). It needs the training masks, so only a training computes it (training/run.py).

``empty`` and ``full`` need only the per-image counts, so ``floors_from_rows`` gives them for any
run folder's per_image.csv, old ones included.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lesionbench.errors import LesionBenchError
from lesionbench.metrics.challenge import PRIMARY, primary_metric
from lesionbench.metrics.scores import resize_logits_to, stats_from_rows
from lesionbench.runfolder import ChanceFloor, ChanceScores

#: The threshold of the mean mask, as the test loop thresholds probabilities (``> 0.5``).
MEAN_MASK_THRESHOLD = 0.5


def _counts(stats: Tensor) -> Tensor:
    stats = torch.as_tensor(stats, dtype=torch.float64).cpu()
    if stats.ndim != 3 or stats.shape[-1] != 4:
        raise LesionBenchError(f"chance: stats must be N×C×4 (tp, fp, fn, tn), got {tuple(stats.shape)}")
    return stats


def empty_full_stats(stats: Tensor) -> tuple[Tensor, Tensor]:
    """The counts N×C×4 of all-empty and of all-full predictions on the images whose counts are ``stats``."""
    stats = _counts(stats)
    fg, bg = stats[..., 0] + stats[..., 2], stats[..., 1] + stats[..., 3]  # ground truth: tp+fn, fp+tn
    zero = torch.zeros_like(fg)
    return torch.stack([zero, zero, fg, bg], -1), torch.stack([fg, bg, zero, zero], -1)


def metric_names(dataset: str) -> tuple[str, ...]:
    """The metrics a floor is given in: the dataset's primary metric, then Dice (once when they are one)."""
    return tuple(dict.fromkeys((primary_metric(dataset).name, "dice")))


def floors_from_stats(stats: Tensor, dataset: str, mean_mask_stats: Tensor | None = None) -> dict[str, ChanceFloor]:
    """{metric: ChanceFloor(empty, full, mean_mask)} for the test images whose counts (tp, fp, fn, tn) are
    ``stats`` N×C×4; ``mean_mask_stats`` (N×C×4, the mean mask's counts on the same images in the same
    order) gives ``mean_mask``, else it is None. Metrics: ``metric_names(dataset)``."""
    empty, full = empty_full_stats(stats)
    mean = None if mean_mask_stats is None else _counts(mean_mask_stats)
    if mean is not None and mean.shape != empty.shape:
        raise LesionBenchError(f"chance: mean-mask counts {tuple(mean.shape)} but test counts {tuple(empty.shape)}")
    out = {}
    for name in metric_names(dataset):
        metric = PRIMARY[name]
        out[name] = ChanceFloor(empty=metric.value(empty), full=metric.value(full),
                                mean_mask=None if mean is None else metric.value(mean))
    return out


def floors_from_rows(frame: Any, dataset: str, class_names: Sequence[str] | None = None) -> dict[str, ChanceFloor]:
    """The empty and full floors (mean_mask None) from per_image.csv rows (a DataFrame with the counts
    tp, fp, fn, tn, or <class>_tp, ... when there are several classes); ``class_names`` defaults to the
    dataset's (data/layouts.py)."""
    if class_names is None:
        from lesionbench.data.layouts import get_layout

        class_names = get_layout(dataset).class_names
    return floors_from_stats(stats_from_rows(frame, list(class_names)), dataset)


def run_floors(run_dir: str | Path) -> dict[str, ChanceFloor]:
    """A run folder's floors: metrics.json's ``chance`` when it has one (mean_mask included), else the
    empty and full floors from its per_image.csv (runs before issue 30, nnU-Net runs)."""
    import pandas as pd

    from lesionbench.runfolder import PER_IMAGE, read_metrics

    metrics = read_metrics(run_dir)
    if metrics.chance is not None:
        return dict(metrics.chance.scores)
    frame = pd.read_csv(Path(run_dir) / PER_IMAGE, dtype={"id": str})
    return floors_from_rows(frame, metrics.dataset)


def chance_scores(stats: Tensor, dataset: str, mean_mask_stats: Tensor | None = None,
                  n_train: int | None = None) -> ChanceScores:
    """metrics.json's ``chance`` section (``floors_from_stats`` with what identifies it)."""
    return ChanceScores(primary=primary_metric(dataset).name, n_train=n_train,
                        scores=floors_from_stats(stats, dataset, mean_mask_stats))


def mean_mask(mean: np.ndarray | Tensor) -> Tensor:
    """The mean-mask prediction at the network input size: per-pixel mean C×h×w (``SegmentationDataModule
    .mask_mean``) -> bool C×h×w, > ``MEAN_MASK_THRESHOLD``."""
    mean = torch.as_tensor(np.asarray(mean, dtype=np.float64))
    if mean.ndim != 3:
        raise LesionBenchError(f"chance: the mean mask must be C×H×W, got {tuple(mean.shape)}")
    return mean > MEAN_MASK_THRESHOLD


def as_prediction(mask: Tensor, size: Sequence[int]) -> Tensor:
    """A bool C×h×w mask at the network input size -> bool C×H×W at ``size`` = (H, W), resized as the
    test loop resizes a prediction: its logits (+1 inside, -1 outside) bilinear, then > 0."""
    logits = mask.to(torch.float32) * 2 - 1
    return resize_logits_to(logits[None], size)[0] > 0
