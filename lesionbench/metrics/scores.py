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
from lesionbench.metrics.boundary import BOUNDARY_NAMES, SURFACE_NAMES

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
    """Per-image Jaccard, or 0 where it is below ``threshold`` (a Jaccard equal to it still counts)."""
    return torch.where(iou >= threshold, iou, torch.zeros_like(iou))


def _pooled(stats: Tensor) -> dict[str, float]:
    """Metrics of the summed counts (micro average over every image and channel given)."""
    return {k: float(v) for k, v in per_image_metrics(stats.reshape(-1, 4).sum(0)).items()}


def _means(stats: Tensor) -> dict[str, float]:
    per = per_image_metrics(stats)
    out = {k: float(v.mean()) for k, v in per.items()}
    out["thresholded_jaccard"] = float(thresholded_jaccard(per["iou"]).mean())
    return out


def summarize(stats: Tensor, ids: Sequence[str], dataset: str, class_names: Sequence[str],
              boundary: Tensor | None = None, nsd_tolerance: float | None = None
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Test-set summary: (metrics dict for metrics.json, rows for per_image.csv).

    metrics: ``per_image`` (means over images and channels, + thresholded_jaccard, + hd95/assd when
    ``boundary`` N×C×2 is given, + nsd when it is N×C×3 as ``SURFACE_NAMES``), ``pooled`` (summed
    counts), ``per_class`` ({name: per-image means + pooled_dice, pooled_iou}), ``challenge`` (the
    dataset's primary metric), ``nsd_tolerance`` (px, when given). Rows: id + per-image metrics (mean
    over channels) + <class>_dice/_iou when C > 1 + hd95/assd(/nsd) + each channel's counts (tp, fp,
    fn, tn; <class>_tp, ... when C > 1), from which the leaderboard recomputes any metric.
    """
    from lesionbench.metrics.challenge import challenge_score  # it builds on this module

    stats = torch.as_tensor(stats, dtype=torch.float64).cpu()
    if stats.ndim != 3 or stats.shape[-1] != 4:
        raise LesionBenchError(f"summarize: stats must be N×C×4 (tp, fp, fn, tn), got {tuple(stats.shape)}")
    n, c = stats.shape[:2]
    if len(ids) != n or len(class_names) != c:
        raise LesionBenchError(f"summarize: {n} images × {c} classes but {len(ids)} ids and "
                               f"{len(class_names)} class names")
    if n == 0:
        raise LesionBenchError("summarize: no test images were scored (is the test split empty?)")
    names: tuple[str, ...] = ()
    if boundary is not None:
        boundary = torch.as_tensor(boundary, dtype=torch.float64).cpu()
        width = boundary.shape[-1] if boundary.ndim == 3 else len(BOUNDARY_NAMES)  # (N×2 of old callers: C == 1)
        if width not in (len(BOUNDARY_NAMES), len(SURFACE_NAMES)):
            raise LesionBenchError(f"summarize: boundary must be N×C×2 (hd95, assd) or N×C×3 (+ nsd), "
                                   f"got {tuple(boundary.shape)}")
        boundary, names = boundary.reshape(n, c, width), SURFACE_NAMES[:width]
    per = per_image_metrics(stats)
    per_class = {}
    for j, name in enumerate(class_names):
        pooled = _pooled(stats[:, j])
        per_class[name] = {**_means(stats[:, j]), "pooled_dice": pooled["dice"], "pooled_iou": pooled["iou"]}
        if boundary is not None:
            per_class[name].update({k: float(boundary[:, j, b].mean()) for b, k in enumerate(names)})
    means = _means(stats)
    if boundary is not None:
        means.update({k: float(boundary[..., b].mean()) for b, k in enumerate(names)})
    metrics = {"per_image": means, "pooled": _pooled(stats), "per_class": per_class,
               "challenge": challenge_score(stats, dataset, class_names)}
    if nsd_tolerance is not None and "nsd" in names:
        metrics["nsd_tolerance"] = float(nsd_tolerance)
    rows = []
    for i, image_id in enumerate(ids):
        row: dict[str, Any] = {"id": image_id}
        row.update({k: float(v[i].mean()) for k, v in per.items()})
        if c > 1:
            for j, name in enumerate(class_names):
                row[f"{name}_dice"] = float(per["dice"][i, j])
                row[f"{name}_iou"] = float(per["iou"][i, j])
        if boundary is not None:
            row.update({k: float(boundary[i, :, b].mean()) for b, k in enumerate(names)})
        for j, name in enumerate(class_names):
            prefix = f"{name}_" if c > 1 else ""
            row.update({f"{prefix}{k}": int(stats[i, j, s]) for s, k in enumerate(STAT_NAMES)})
        rows.append(row)
    return metrics, rows


def stats_from_rows(frame: Any, class_names: Sequence[str]) -> Tensor:
    """The N×C×4 counts back from per_image.csv rows (a DataFrame), the inverse of ``summarize``."""
    c = len(class_names)
    cols = [[f"{name}_{k}" if c > 1 else k for k in STAT_NAMES] for name in class_names]
    return torch.tensor(frame[[col for group in cols for col in group]].to_numpy(float),
                        dtype=torch.float64).reshape(len(frame), c, 4)


class PerImageStats(Metric):
    """Collects (index, B×C×width values) over a test epoch; ``compute`` drops DDP padding duplicates.

    width 4: the counts (tp, fp, fn, tn); width 2: the boundary distances (hd95, assd); width 3: (hd95,
    assd, nsd).
    """

    full_state_update = False

    def __init__(self, width: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = width
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("stats", default=[], dist_reduce_fx="cat")

    def update(self, stats: Tensor, index: Tensor) -> None:
        if stats.ndim != 3 or stats.shape[-1] != self.width or len(index) != len(stats):
            raise LesionBenchError(f"PerImageStats.update: want stats B×C×{self.width} and index B, got "
                                   f"{tuple(stats.shape)} and {tuple(index.shape)}")
        self.index.append(index.detach().to(self.device, torch.long).reshape(-1))
        self.stats.append(stats.detach().to(self.device, torch.float64))

    def compute(self) -> tuple[Tensor, Tensor]:
        """(index sorted ascending, stats N×C×4), one row per distinct index (the first seen)."""
        if isinstance(self.index, list) and not self.index:  # nothing was updated (after a DDP sync: a tensor)
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, 0, self.width, dtype=torch.float64)
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
