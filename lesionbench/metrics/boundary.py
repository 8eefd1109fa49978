"""Boundary metrics per image: HD95 and average symmetric surface distance (ASSD), in pixels.

Definitions follow MONAI's ``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)``: the boundary of a mask is its pixels that
binary erosion removes; each boundary pixel of one mask has a Euclidean distance to the nearest
boundary pixel of the other. HD95 = max of the two directed 95th percentiles; ASSD = mean of all
distances of both directions together. Computed with scipy.ndimage (``binary_erosion``,
``distance_transform_edt``: exact, linear in pixels), the calls MONAI itself makes on CPU; MONAI
is not a dependency, and torchmetrics' helpers were measured 2× slower at ISIC sizes and 45× at
64 px (its default distance engine also needs foreground × background memory).

Empty-mask policy: both masks empty → 0 (nothing to miss); exactly one empty → the image
diagonal sqrt(H² + W²) (the largest distance possible in the image, as some challenges do).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from lesionbench.errors import LesionBenchError

BOUNDARY_NAMES = ("hd95", "assd")
BOUNDARY_POLICY = "both masks empty: 0; exactly one empty: the image diagonal sqrt(H²+W²); in pixels"


def _directed(edges_from: np.ndarray, edges_to: np.ndarray) -> np.ndarray:
    """Distance from each boundary pixel of ``edges_from`` to the nearest one of ``edges_to``."""
    return ndimage.distance_transform_edt(~edges_to)[edges_from]


def _edges(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask)


def boundary_distances(pred: Tensor, target: Tensor) -> tuple[float, float]:
    """(HD95, ASSD) of two bool H×W masks, compared at the ground truth's size."""
    if pred.shape != target.shape or pred.ndim != 2:
        raise LesionBenchError(f"boundary_distances: prediction {tuple(pred.shape)} and mask "
                               f"{tuple(target.shape)} must both be H×W")
    pred, target = pred.bool().cpu().numpy(), target.bool().cpu().numpy()
    has_pred, has_target = bool(pred.any()), bool(target.any())
    if not has_pred and not has_target:
        return 0.0, 0.0
    if has_pred != has_target:
        diagonal = math.hypot(*pred.shape)
        return diagonal, diagonal
    rows, cols = np.flatnonzero((pred | target).any(1)), np.flatnonzero((pred | target).any(0))
    box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    # cropping to the union's box (one pixel of margin) keeps every boundary pixel and distance
    edges_pred, edges_target = _edges(pred[box]), _edges(target[box])
    d_pred, d_target = _directed(edges_pred, edges_target), _directed(edges_target, edges_pred)
    hd95 = max(float(np.percentile(d_pred, 95)), float(np.percentile(d_target, 95)))
    assd = float((d_pred.sum() + d_target.sum()) / (d_pred.size + d_target.size))
    return hd95, assd


def image_boundary(pred: Tensor, target: Tensor) -> Tensor:
    """(HD95, ASSD) per image and channel: bool B×C×H×W twice -> float64 B×C×2."""
    if pred.shape != target.shape or pred.ndim != 4:
        raise LesionBenchError(f"image_boundary: prediction {tuple(pred.shape)} and mask "
                               f"{tuple(target.shape)} must both be B×C×H×W")
    b, c = pred.shape[:2]
    out = torch.zeros(b, c, 2, dtype=torch.float64)
    for i in range(b):
        for j in range(c):
            out[i, j] = torch.tensor(boundary_distances(pred[i, j], target[i, j]), dtype=torch.float64)
    return out
