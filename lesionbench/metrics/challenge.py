"""Each dataset's primary metric, as its organisers rank, written as a ratio of per-image sums.

Every primary metric is ``sum(num) / sum(den)`` over test images of two per-image terms, so one
bootstrap (resample images, recompute the ratio) and one paired test serve them all: a mean of
per-image values has ``den = 1``; the ISIC 2018 Task 2 pooled Jaccard has, per image, its
pixel-normalised TP and TP+FP+FN summed over the five attributes. 0/0 scores 1 (the empty-mask
policy of ``metrics/scores.py``). The dataset names its metric in ``data/layouts.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lesionbench.data.layouts import LAYOUTS
from lesionbench.errors import LesionBenchError
from lesionbench.metrics.scores import JACCARD_THRESHOLD, per_image_metrics, thresholded_jaccard


@dataclass(frozen=True)
class PrimaryMetric:
    """A ranking metric: its name, its one-line definition and its per-image (num, den) terms."""

    name: str
    definition: str
    terms: Callable[[Tensor], tuple[Tensor, Tensor]]  # N×C×4 counts -> (num N, den N)
    pooled: bool = False  # a ratio of sums, not a mean of per-image values

    def value(self, stats: Tensor) -> float:
        """The metric of N×C×4 counts (tp, fp, fn, tn)."""
        num, den = self.terms(torch.as_tensor(stats, dtype=torch.float64))
        return ratio(float(num.sum()), float(den.sum()))


def ratio(num: float, den: float) -> float:
    """num/den with 0/0 := 1, the empty-mask policy."""
    return num / den if den > 0 else 1.0


def _mean_of(key: str, threshold: bool = False) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    def terms(stats: Tensor) -> tuple[Tensor, Tensor]:
        v = per_image_metrics(stats)[key]
        v = (thresholded_jaccard(v) if threshold else v).mean(-1)  # mean over channels
        return v, torch.ones_like(v)
    return terms


def _pooled_jaccard(stats: Tensor) -> tuple[Tensor, Tensor]:
    norm = stats / stats.sum(-1, keepdim=True).clamp_min(1)  # every image weighs the same
    tp, fp, fn = norm[..., 0].sum(-1), norm[..., 1].sum(-1), norm[..., 2].sum(-1)
    return tp, tp + fp + fn


PRIMARY: dict[str, PrimaryMetric] = {m.name: m for m in (
    PrimaryMetric("jaccard", "mean over test images of the per-image Jaccard TP/(TP+FP+FN) at ground-truth size "
                  "(ISIC 2016/2017 Task 1)", _mean_of("iou")),
    PrimaryMetric("thresholded_jaccard", "mean over test images of the per-image Jaccard, counted 0 when below "
                  f"{JACCARD_THRESHOLD} (ISIC 2018 Task 1)", _mean_of("iou", threshold=True)),
    PrimaryMetric("dice", "mean over test images of the per-image Dice 2TP/(2TP+FP+FN) at ground-truth size "
                  "(Kvasir-SEG)", _mean_of("dice")),
    PrimaryMetric("jaccard_pooled_normalised", "Jaccard of TP/FP/FN summed over all test images and all "
                  "attributes, each image's counts first divided by its pixel count (ISIC 2018 Task 2)",
                  _pooled_jaccard, pooled=True),
)}


def primary_metric(dataset: str) -> PrimaryMetric:
    """The metric ``dataset`` is ranked by (declared in data/layouts.py)."""
    if dataset not in LAYOUTS:
        raise LesionBenchError(f"dataset.name: no challenge metric for {dataset!r} (known: {', '.join(LAYOUTS)})")
    return PRIMARY[LAYOUTS[dataset].primary_metric]


def challenge_score(stats: Tensor, dataset: str, class_names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """{"metric", "value", "definition"} (+ "per_attribute" for a pooled multi-label metric)."""
    m = primary_metric(dataset)
    out: dict[str, Any] = {"metric": m.name, "value": m.value(stats), "definition": m.definition}
    if m.pooled:
        norm = stats / stats.sum(-1, keepdim=True).clamp_min(1)
        out["per_attribute"] = {}
        for c, name in enumerate(class_names):
            per = per_image_metrics(norm[:, c].sum(0))
            out["per_attribute"][name] = {"jaccard": float(per["iou"]), "dice": float(per["dice"])}
    return out


class ValPrimary(Metric):
    """The dataset's primary metric over a validation epoch (keeps each image's B×C×4 counts)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, dataset: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metric = primary_metric(dataset)
        self.add_state("stats", default=[], dist_reduce_fx="cat")

    def update(self, stats: Tensor) -> None:
        self.stats.append(stats.detach().to(self.device, torch.float64))

    def compute(self) -> Tensor:
        if isinstance(self.stats, list) and not self.stats:
            return torch.tensor(float("nan"))
        return torch.tensor(self.metric.value(dim_zero_cat(self.stats).cpu()), dtype=torch.float32)
