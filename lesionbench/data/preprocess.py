"""The one test-time preprocessing: decode and resize exactly as the cache does, then normalise.

Why one function: the test loop scores the cached pixels, so ``predict``, ``explain`` and
``export`` must feed the network the very same tensor, or their masks differ from what was
scored (on real ISIC images a different resize moved up to 12% of a mask's pixels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lesionbench.data.decode import Size, hw, image_size, load_image, resize_rgb
from lesionbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

Stats = tuple[tuple[float, ...], tuple[float, ...]]
IMAGENET: Stats = (IMAGENET_MEAN, IMAGENET_STD)


def eval_tensor(image: np.ndarray, size: Size, augmentation: str = "none", stats: Stats = IMAGENET) -> torch.Tensor:
    """3×H×W float32 (``size``) for an RGB uint8 image: the cache's resize, then the run's eval transform
    (``stats``: the run's normalisation mean/std, ImageNet's or its training split's)."""
    tf = build_transforms(augmentation, size, train=False, mean=stats[0], std=stats[1])
    return tf(image=resize_rgb(image, size))["image"].float()


def model_input(path: str | Path, size: Size, augmentation: str = "none",
                stats: Stats = IMAGENET) -> tuple[torch.Tensor, tuple[int, int]]:
    """(3×H×W network input at ``size``, original (H, W)) for an image file: bit-identical to the test batch item."""
    path = Path(path)
    return eval_tensor(load_image(path, size), size, augmentation, stats), image_size(path)


def describe(size: Size, stats: Stats = IMAGENET) -> dict[str, Any]:
    """What ``model_input`` does, written next to exported models so other code can reproduce it."""
    return {"image_size": size if isinstance(size, int) else list(hw(size)), "resize": "PIL bilinear, reducing_gap=2.0 (JPEG draft to >= 2x size first)",
            "mean": list(stats[0]), "std": list(stats[1]), "scale": "uint8 / 255 then (x - mean) / std",
            "output": "logits; resize bilinear (align_corners=False) to the original size, sigmoid, > 0.5",
            "function": "lesionbench.data.preprocess.model_input"}
