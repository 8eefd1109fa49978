"""Boundary metrics per image: HD95, average symmetric surface distance (ASSD), in pixels, and the
Normalized Surface Dice (NSD) at a tolerance in pixels.

Definitions follow MONAI's ``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)``: the boundary of a mask is its pixels that
binary erosion removes; each boundary pixel of one mask has a Euclidean distance to the nearest
boundary pixel of the other. HD95 = max of the two directed 95th percentiles; ASSD = mean of all
distances of both directions together. NSD(tau) (Metrics Reloaded, Maier-Hein et al., Nat Methods
2024; MONAI's ``compute_surface_dice(use_subvoxels=False)``) = (boundary pixels of each mask within tau
of the other's boundary, both directions counted) / (boundary pixels of both), from the same
distances in the same pass. Computed with scipy.ndimage (``binary_erosion``,
``distance_transform_edt``: exact, linear in pixels), the calls MONAI itself makes on CPU; MONAI
is not a dependency, and torchmetrics' helpers were measured 2× slower at ISIC sizes and 45× at
64 px (its default distance engine also needs foreground × background memory).

Empty-mask policy: both masks empty → 0 (nothing to miss); exactly one empty → the image
diagonal sqrt(H² + W²) (the largest distance possible in the image, as some challenges do).
NSD: both empty → 1 (MONAI returns NaN there); exactly one empty → 0 (as MONAI).

NSD tolerances (``NSD_TOLERANCES``): one per dataset, in pixels at ground-truth size. No inter-rater
study is published for these masks, so each is about 1% of the dataset's typical image diagonal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from lesionbench.errors import LesionBenchError

BOUNDARY_NAMES = ("hd95", "assd")
BOUNDARY_POLICY = "both masks empty: 0; exactly one empty: the image diagonal sqrt(H²+W²); in pixels"
#: The width-3 rows of ``image_boundary(..., tolerance=...)``: the boundary distances, then NSD.
SURFACE_NAMES = (*BOUNDARY_NAMES, "nsd")
NSD_POLICY = "both masks empty: 1; exactly one empty: 0; tolerance in pixels at ground-truth size"


@dataclass(frozen=True)
class NsdTolerance:
    """A dataset's NSD tolerance in pixels at ground-truth size, and how it was chosen."""

    px: float
    why: str


_ISIC = NsdTolerance(13.0, "1% of the 1278 px diagonal of 767×1022, the most common ISIC archive image size "
                           "(no inter-rater study is published for these masks)")
#: One tolerance per dataset of ``data/layouts.LAYOUTS`` (tests/test_nsd.py checks that every one has one).
NSD_TOLERANCES: dict[str, NsdTolerance] = {
    "isic2016": _ISIC, "isic2017": _ISIC, "isic2018": _ISIC, "isic2018-task2": _ISIC,
    "kvasir-seg": NsdTolerance(8.0, "1% of the 816 px median image diagonal of the 1000 Kvasir-SEG masks "
                                    "(most about 622×530; no inter-rater study is published for these masks)"),
    "synthetic": NsdTolerance(2.0, "the replica's small images (180-320 px a side; 48-72 px in the tests): "
                                   "about 1% of their diagonal, rounded up to 2 px so a one-pixel shift passes"),
}


def nsd_tolerance(dataset: str) -> float:
    """The NSD tolerance of ``dataset`` in pixels at ground-truth size (``NSD_TOLERANCES``)."""
    if dataset not in NSD_TOLERANCES:
        raise LesionBenchError(f"dataset {dataset!r}: no NSD tolerance (known: {', '.join(NSD_TOLERANCES)})")
    return NSD_TOLERANCES[dataset].px


def _directed(edges_from: np.ndarray, edges_to: np.ndarray) -> np.ndarray:
    """Distance from each boundary pixel of ``edges_from`` to the nearest one of ``edges_to``."""
    return ndimage.distance_transform_edt(~edges_to)[edges_from]


def _edges(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask)


def surface_metrics(pred: Tensor, target: Tensor, tolerance: float) -> tuple[float, float, float]:
    """(HD95, ASSD, NSD at ``tolerance`` px) of two bool H×W masks, compared at the ground truth's size."""
    if pred.shape != target.shape or pred.ndim != 2:
        raise LesionBenchError(f"boundary_distances: prediction {tuple(pred.shape)} and mask "
                               f"{tuple(target.shape)} must both be H×W")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise LesionBenchError(f"surface_metrics: the NSD tolerance must be a finite number >= 0, got {tolerance}")
    pred, target = pred.bool().cpu().numpy(), target.bool().cpu().numpy()
    has_pred, has_target = bool(pred.any()), bool(target.any())
    if not has_pred and not has_target:
        return 0.0, 0.0, 1.0
    if has_pred != has_target:
        diagonal = math.hypot(*pred.shape)
        return diagonal, diagonal, 0.0
    rows, cols = np.flatnonzero((pred | target).any(1)), np.flatnonzero((pred | target).any(0))
    box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    # cropping to the union's box (one pixel of margin) keeps every boundary pixel and distance
    edges_pred, edges_target = _edges(pred[box]), _edges(target[box])
    d_pred, d_target = _directed(edges_pred, edges_target), _directed(edges_target, edges_pred)
    hd95 = max(float(np.percentile(d_pred, 95)), float(np.percentile(d_target, 95)))
    assd = float((d_pred.sum() + d_target.sum()) / (d_pred.size + d_target.size))
    nsd = float((np.count_nonzero(d_pred <= tolerance) + np.count_nonzero(d_target <= tolerance))
                / (d_pred.size + d_target.size))
    return hd95, assd, nsd


def boundary_distances(pred: Tensor, target: Tensor) -> tuple[float, float]:
    """(HD95, ASSD) of two bool H×W masks, compared at the ground truth's size."""
    hd95, assd, _ = surface_metrics(pred, target, 0.0)
    return hd95, assd


def image_boundary(pred: Tensor, target: Tensor, tolerance: float | None = None) -> Tensor:
    """(HD95, ASSD) per image and channel: bool B×C×H×W twice -> float64 B×C×2; with an NSD
    ``tolerance`` (px) B×C×3, (HD95, ASSD, NSD) as ``SURFACE_NAMES``."""
    if pred.shape != target.shape or pred.ndim != 4:
        raise LesionBenchError(f"image_boundary: prediction {tuple(pred.shape)} and mask "
                               f"{tuple(target.shape)} must both be B×C×H×W")
    b, c = pred.shape[:2]
    width = len(BOUNDARY_NAMES) if tolerance is None else len(SURFACE_NAMES)
    out = torch.zeros(b, c, width, dtype=torch.float64)
    for i in range(b):
        for j in range(c):
            values = surface_metrics(pred[i, j], target[i, j], 0.0 if tolerance is None else tolerance)
            out[i, j] = torch.tensor(values[:width], dtype=torch.float64)
    return out
