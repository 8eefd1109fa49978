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

from lesionbench.data.decode import image_size, load_image, resize_rgb
from lesionbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms


def eval_tensor(image: np.ndarray, size: int, augmentation: str = "none") -> torch.Tensor:
    """3×S×S float32 for an RGB uint8 image: the cache's resize, then the run's eval transform."""
    return build_transforms(augmentation, size, train=False)(image=resize_rgb(image, size))["image"].float()


def model_input(path: str | Path, size: int, augmentation: str = "none") -> tuple[torch.Tensor, tuple[int, int]]:
    """(3×S×S network input, original (H, W)) for an image file: bit-identical to the test batch item."""
    path = Path(path)
    return eval_tensor(load_image(path, size), size, augmentation), image_size(path)


def describe(size: int) -> dict[str, Any]:
    """What ``model_input`` does, written next to exported models so other code can reproduce it."""
    return {"image_size": size, "resize": "PIL bilinear, reducing_gap=2.0 (JPEG draft to >= 2x size first)",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": "uint8 / 255 then (x - mean) / std",
            "output": "logits; resize bilinear (align_corners=False) to the original size, sigmoid, > 0.5",
            "function": "lesionbench.data.preprocess.model_input"}
