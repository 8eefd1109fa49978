"""What a run does to an image before and after its network, without Lightning.

Why the test loop's way, step for step: the network sees exactly the tensor the test loop fed it
(``model_input``: the cache's decode and resize, then the eval normalisation), in batches of the
test loop's size (a convolution over 4 images is not bit-identical to four over 1, so one image at
a time moved a real run's scores by 1e-6), under the run's precision and memory layout; the logits
go back to the original size with the test loop's own resize, so a mask scores what
``per_image.csv`` says.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lesionbench.config import ExperimentConfig
from lesionbench.data.decode import Size, image_size, load_image, resize_rgb
from lesionbench.data.preprocess import IMAGENET, Stats, describe, eval_tensor, model_input
from lesionbench.metrics.scores import resize_logits_to

Source = np.ndarray | str | Path


@dataclass(frozen=True)
class Preprocess:
    """Image (RGB uint8 H×W×3, or a file) -> (network input, original (H, W)).

    ``stats``: the run's normalisation (mean, std): the input is the test loop's normalised 3×H×W
    tensor. ``None`` (nnU-Net, which normalises by its own plans): the resized RGB uint8 image.
    ``size``: the run's ``image_size``; ``None`` keeps each image's own size (nnU-Net native resolution).
    """

    size: Size | None
    augmentation: str = "none"
    stats: Stats | None = IMAGENET

    def __call__(self, source: Source) -> tuple[Any, tuple[int, int]]:
        if isinstance(source, np.ndarray):
            original = tuple(source.shape[:2])
            if self.stats is None:
                return resize_rgb(source, self.size), original
            return eval_tensor(source, self.size, self.augmentation, self.stats), original
        path = Path(source)
        if self.stats is None:
            return load_image(path, self.size), image_size(path)
        return model_input(path, self.size, self.augmentation, self.stats)

    def describe(self) -> dict[str, Any]:
        """What it does, in words and numbers (written beside exported models)."""
        return describe(self.size, self.stats or IMAGENET)


def final_logits(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Deeply supervised outputs are lists (coarsest first): the finest head is the prediction."""
    return out[-1] if isinstance(out, (list, tuple)) else out


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + max(1, size)]


class NetworkPredictor:
    """A LesionBench network as the test loop ran it: batched, at the run's precision and layout."""

    def __init__(self, network: nn.Module, cfg: ExperimentConfig, device: torch.device) -> None:
        self.batch_size = cfg.trainer.batch_size  # the test loader's batch size
        self.channels_last = cfg.trainer.channels_last
        self.device, self.precision = device, cfg.trainer.precision
        self.network = network.to(device).eval()
        if self.precision == "64-true":
            self.network.double()
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """Lightning's mixed precision (16-mixed falls back to bfloat16 on CPU, as Lightning does)."""
        if not self.precision.endswith("-mixed"):
            return contextlib.nullcontext()
        half = self.precision == "16-mixed" and self.device.type != "cpu"
        return torch.autocast(self.device.type, dtype=torch.float16 if half else torch.bfloat16)

    def logits(self, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """B×C×h×w logits for a B×3×h×w input; ``tta``: mean of the image's and its two flips' logits."""
        x = x.to(self.device, torch.float64 if self.precision == "64-true" else torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), self._autocast():
            out = final_logits(self.network(x))
            if tta:  # a flip is its own inverse: flip in, predict, flip back, average the logits
                out = torch.stack([out, *(final_logits(self.network(x.flip(d))).flip(d) for d in (3, 2))]).mean(0)
        return out

    def probabilities(self, inputs: list[torch.Tensor], sizes: list[tuple[int, int]],
                      tta: bool = False) -> list[np.ndarray]:
        """C×H0×W0 probabilities per image: one batch through the network, each image's logits resized to
        its original size with the test loop's own resize, then the sigmoid."""
        logits = self.logits(torch.stack(inputs), tta)
        return [resize_logits_to(logits[i : i + 1].float(), size)[0].sigmoid().cpu().numpy()
                for i, size in enumerate(sizes)]

    @staticmethod
    def postprocess(masks: np.ndarray) -> np.ndarray:
        return masks  # the test loop scores the thresholded masks as they are
