"""A loaded run scored on labelled samples, as its own test loop scored its test split.

Why here: ``evaluate`` (a run on another dataset's split) and the parity checks score through the
one loader, for every engine: the run's preprocessing and batches, each mask at its ground truth's
original size, the same counts and boundary distances as the test loop's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from lesionbench.data.decode import load_mask
from lesionbench.data.layouts import Sample
from lesionbench.inference.load import LoadedRun
from lesionbench.metrics.boundary import image_boundary
from lesionbench.metrics.scores import image_stats


class _Items(Dataset):
    """(network input, original size, ground truth C×H×W) per sample, decoded in the loader's workers."""

    def __init__(self, samples: list[Sample], preprocess: Any, threshold: int) -> None:
        self.samples, self.preprocess, self.threshold = samples, preprocess, threshold

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, tuple[int, int], np.ndarray]:
        s = self.samples[i]
        return (*self.preprocess(s.image), np.stack([load_mask(p, self.threshold) for p in s.masks]))


def _as_lists(batch: list[tuple]) -> list[list]:
    return [list(column) for column in zip(*batch, strict=True)]


def score_samples(run: LoadedRun, samples: list[Sample], mask_threshold: int,
                  progress: bool = False, nsd_tolerance: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tp, fp, fn, tn) N×C×4 and (HD95, ASSD) N×C×2 per image and channel, rows in ``samples``' order;
    with ``nsd_tolerance`` (px) the surface part is N×C×3 (+ NSD), as the test loop computes it.
    ``mask_threshold``: the dataset's ground-truth threshold (``Layout.mask_threshold``)."""
    loader = DataLoader(_Items(samples, run.preprocess, mask_threshold), batch_size=run.batch_size,
                        shuffle=False, num_workers=run.cfg.dataset.num_workers, collate_fn=_as_lists)
    stats, boundary = [], []
    for inputs, sizes, truths in track(loader, description="scoring", disable=not progress):
        for probs, truth in zip(run.predictor.probabilities(inputs, sizes), truths, strict=True):
            pred, target = torch.from_numpy(run.mask(probs))[None], torch.from_numpy(truth)[None].bool()
            stats.append(image_stats(pred, target))
            boundary.append(image_boundary(pred, target, tolerance=nsd_tolerance))
    return torch.cat(stats), torch.cat(boundary)


def device_of(accelerator: str) -> str:
    """The torch device of a Lightning-style ``accelerator`` (auto: a GPU when there is one)."""
    acc = accelerator.lower()
    if acc == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return {"gpu": "cuda"}.get(acc, acc)
