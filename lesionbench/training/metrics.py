"""Segmentation metrics, MONAI-style: plain per-image, per-class functions + thin torchmetrics classes.

Counts come from ``torchmetrics.functional.multilabel_stat_scores`` (samplewise), one row of
(tp, fp, fn, tn) per image and channel, compared at the ground truth's original size.

Empty-mask policy (the ISIC scorer's, ``isic_challenge_scoring/metrics.py``): a ratio whose
denominator is 0 scores 1. So prediction and ground truth both empty → dice = iou = 1; an empty
prediction has precision 1 and an empty ground truth recall 1 (their "freebies"); a ground truth
that fills the image has specificity 1. Dice/IoU of a non-empty mask against an empty one are 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multilabel_stat_scores
from torchmetrics.utilities import dim_zero_cat

from lesionbench.errors import LesionBenchError

STAT_NAMES = ("tp", "fp", "fn", "tn")
METRIC_NAMES = ("dice", "iou", "precision", "recall", "specificity", "accuracy")
JACCARD_THRESHOLD = 0.65  # ISIC 2018 Task 1: a per-image Jaccard below this counts 0


def resize_logits_to(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize of logits (never of thresholded masks) to ``size`` = (H, W)."""
    size = (int(size[0]), int(size[1]))
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def image_stats(pred: Tensor, target: Tensor) -> Tensor:
    """(tp, fp, fn, tn) per image and channel: bool B×C×H×W twice -> float64 B×C×4."""
    if pred.shape != target.shape or pred.ndim != 4:
        raise LesionBenchError(
            f"image_stats: prediction {tuple(pred.shape)} and mask {tuple(target.shape)} must both be B×C×H×W"
        )
    b, c = pred.shape[:2]
    # samplewise on B×C×H×W -> B×C×5 as (tp, fp, tn, fn, support); torchmetrics squeezes B==1 / C==1
    s = multilabel_stat_scores(pred.to(torch.uint8), target.to(torch.uint8), num_labels=c, average=None,
                               multidim_average="samplewise", validate_args=False).reshape(b, c, 5)
    return s[..., [0, 1, 3, 2]].to(torch.float64)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num/den with 0/0 := 1 (the empty-mask policy)."""
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.ones_like(num))


def per_image_metrics(stats: Tensor) -> dict[str, Tensor]:
    """Each metric from counts ...×4 (tp, fp, fn, tn); the same shape minus the last dim."""
    tp, fp, fn, tn = stats.to(torch.float64).unbind(-1)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
    }


def thresholded_jaccard(iou: Tensor, threshold: float = JACCARD_THRESHOLD) -> Tensor:
    """Per-image Jaccard, or 0 where it is below ``threshold`` (exactly 0.65 still counts)."""
    return torch.where(iou >= threshold, iou, torch.zeros_like(iou))


def _pooled(stats: Tensor) -> dict[str, float]:
    """Metrics of the summed counts (micro average over every image and channel given)."""
    return {k: float(v) for k, v in per_image_metrics(stats.reshape(-1, 4).sum(0)).items()}


def _means(stats: Tensor) -> dict[str, float]:
    per = per_image_metrics(stats)
    out = {k: float(v.mean()) for k, v in per.items()}
    out["thresholded_jaccard"] = float(thresholded_jaccard(per["iou"]).mean())
    return out


_DEFINITIONS = {
    "jaccard": "mean over test images of the per-image Jaccard TP/(TP+FP+FN) at ground-truth size (ISIC 2016/2017 Task 1)",
    "thresholded_jaccard": "mean over test images of the per-image Jaccard, counted 0 when below 0.65 (ISIC 2018 Task 1)",
    "dice": "mean over test images of the per-image Dice 2TP/(2TP+FP+FN) at ground-truth size (Kvasir-SEG)",
    "jaccard_pooled_normalised": "Jaccard of TP/FP/FN summed over all test images and all five attributes, "
                                 "each image's counts first divided by its pixel count (ISIC 2018 Task 2)",
}


def task2_scores(stats: Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """ISIC 2018 Task 2: counts / pixels per image, then pooled (all attributes, and per attribute)."""
    norm = stats / stats.sum(-1, keepdim=True).clamp_min(1)  # every image weighs the same
    per_attr = {}
    for c, name in enumerate(class_names):
        m = per_image_metrics(norm[:, c].sum(0))
        per_attr[name] = {"jaccard": float(m["iou"]), "dice": float(m["dice"])}
    value = float(per_image_metrics(norm.reshape(-1, 4).sum(0))["iou"])
    return {"metric": "jaccard_pooled_normalised", "value": value,
            "definition": _DEFINITIONS["jaccard_pooled_normalised"], "per_attribute": per_attr}


def challenge_score(stats: Tensor, dataset: str, class_names: Sequence[str]) -> dict[str, Any]:
    """The ranking metric of the dataset's own challenge: {"metric", "value", "definition"}."""
    per = per_image_metrics(stats)
    if dataset == "isic2018-task2":
        return task2_scores(stats, class_names)
    if dataset in ("isic2016", "isic2017"):
        name, value = "jaccard", per["iou"].mean()
    elif dataset in ("isic2018", "synthetic"):
        name, value = "thresholded_jaccard", thresholded_jaccard(per["iou"]).mean()
    elif dataset == "kvasir-seg":
        name, value = "dice", per["dice"].mean()
    else:
        raise LesionBenchError(f"dataset.name: no challenge metric for {dataset!r} "
                               "(known: isic2016, isic2017, isic2018, isic2018-task2, kvasir-seg, synthetic)")
    return {"metric": name, "value": float(value), "definition": _DEFINITIONS[name]}


def summarize(stats: Tensor, ids: Sequence[str], dataset: str,
              class_names: Sequence[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Test-set summary: (metrics dict for metrics.json, rows for per_image.csv).

    metrics: ``per_image`` (means over images and channels, + thresholded_jaccard), ``pooled``
    (summed counts), ``per_class`` ({name: per-image means + pooled_dice, pooled_iou}),
    ``challenge``. Rows: id + per-image metrics (mean over channels) + <class>_dice/_iou when C > 1.
    """
    stats = torch.as_tensor(stats, dtype=torch.float64).cpu()
    if stats.ndim != 3 or stats.shape[-1] != 4:
        raise LesionBenchError(f"summarize: stats must be N×C×4 (tp, fp, fn, tn), got {tuple(stats.shape)}")
    n, c = stats.shape[:2]
    if len(ids) != n or len(class_names) != c:
        raise LesionBenchError(f"summarize: {n} images × {c} classes but {len(ids)} ids and "
                               f"{len(class_names)} class names")
    if n == 0:
        raise LesionBenchError("summarize: no test images were scored (is the test split empty?)")
    per = per_image_metrics(stats)
    per_class = {}
    for j, name in enumerate(class_names):
        pooled = _pooled(stats[:, j])
        per_class[name] = {**_means(stats[:, j]), "pooled_dice": pooled["dice"], "pooled_iou": pooled["iou"]}
    metrics = {"per_image": _means(stats), "pooled": _pooled(stats), "per_class": per_class,
               "challenge": challenge_score(stats, dataset, class_names)}
    rows = []
    for i, image_id in enumerate(ids):
        row: dict[str, Any] = {"id": image_id}
        row.update({k: float(v[i].mean()) for k, v in per.items()})
        if c > 1:
            for j, name in enumerate(class_names):
                row[f"{name}_dice"] = float(per["dice"][i, j])
                row[f"{name}_iou"] = float(per["iou"][i, j])
        rows.append(row)
    return metrics, rows


class PerImageStats(Metric):
    """Collects (index, B×C×4 counts) over a test epoch; ``compute`` drops DDP padding duplicates."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("stats", default=[], dist_reduce_fx="cat")

    def update(self, stats: Tensor, index: Tensor) -> None:
        if stats.ndim != 3 or stats.shape[-1] != 4 or len(index) != len(stats):
            raise LesionBenchError(f"PerImageStats.update: want stats B×C×4 and index B, got "
                                   f"{tuple(stats.shape)} and {tuple(index.shape)}")
        self.index.append(index.detach().to(self.device, torch.long).reshape(-1))
        self.stats.append(stats.detach().to(self.device, torch.float64))

    def compute(self) -> tuple[Tensor, Tensor]:
        """(index sorted ascending, stats N×C×4), one row per distinct index (the first seen)."""
        if isinstance(self.index, list) and not self.index:  # nothing was updated (after a DDP sync: a tensor)
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, 0, 4, dtype=torch.float64)
        index, stats = dim_zero_cat(self.index), dim_zero_cat(self.stats)
        order = torch.sort(index, stable=True).indices
        index, stats = index[order], stats[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]
        return index[keep], stats[keep]


class ValDice(Metric):
    """Mean per-image (and per-channel) Dice of thresholded predictions, for ``val/dice``."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, metric: str = "dice", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if metric not in METRIC_NAMES:
            raise LesionBenchError(f"ValDice: unknown metric {metric!r} (allowed: {', '.join(METRIC_NAMES)})")
        self.metric = metric
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """``pred``/``target``: bool B×C×H×W (non-bool tensors are thresholded at 0.5)."""
        pred = pred if pred.dtype == torch.bool else pred > 0.5
        target = target if target.dtype == torch.bool else target > 0.5
        values = per_image_metrics(image_stats(pred, target))[self.metric]
        self.total += values.sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count.clamp_min(1)).float()
