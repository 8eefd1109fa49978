"""Segmentation losses on logits, built from ``LossConfig`` (weighted terms + deep supervision).

Every term takes logits B×C×H×W and a {0,1} mask of the same shape. C == 1 uses smp's
``mode="binary"``, C > 1 ``mode="multilabel"`` (one sigmoid per channel, as ISIC 2018 Task 2).

Where smp is used and what it means (smp 0.4–0.7, ``segmentation_models_pytorch.losses``):

- ``bce``: ``torch.nn.BCEWithLogitsLoss`` (mean over every pixel and channel); option ``pos_weight``.
- ``dice`` / ``jaccard`` / ``tversky``: smp ``DiceLoss`` / ``JaccardLoss`` / ``TverskyLoss``
  (``from_logits=True``). Soft counts are pooled over the batch and the pixels of each channel
  ("batch dice", as papers 001/004 compute it), loss = 1 − score, then the mean over channels.
  Tversky: ``alpha`` weighs false positives, ``beta`` false negatives (paper 002: 0.3 / 0.7, so
  missed polyp pixels cost more) — the same convention as Salehi et al. and paper 002.
- ``focal``: smp ``FocalLoss`` — per-pixel Lin et al. focal loss ``-α_t (1-p_t)^γ log p_t``,
  mean over all pixels; ``alpha`` weighs the *foreground* (α for y=1, 1−α for y=0) and no
  ``alpha`` option means no class weighting. Paper 002's ``Focal(α=0.8, γ=2)`` is read this way.
  Note: the popular Kaggle "FocalLoss(alpha=0.8, gamma=2)" applies α·(1−e^{−BCE})^γ·BCE to the
  *batch-mean* BCE (a scalar, no per-pixel focusing, α a plain scale); we do not copy that,
  because the seed's stated purpose (down-weight easy pixels) needs the per-pixel form.

Empty masks (dice-like terms): a channel whose ground truth is empty in the whole batch
contributes loss 0 (smp's rule), so "both empty → 0"; false positives on such a channel are then
left to the pixel-wise term (bce / focal). The channel still counts in the mean over channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import segmentation_models_pytorch.losses as smp_losses
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lesionbench.config import LossConfig, LossTerm
from lesionbench.errors import LesionBenchError
from lesionbench.metrics.scores import resize_logits_to

#: Allowed ``options`` per loss name, with defaults (None = library default / off).
LOSS_OPTIONS: dict[str, dict[str, float | None]] = {
    "bce": {"pos_weight": None},
    "dice": {"smooth": 0.0, "eps": 1e-7},
    "jaccard": {"smooth": 0.0, "eps": 1e-7},
    "focal": {"alpha": None, "gamma": 2.0},
    "tversky": {"alpha": 0.5, "beta": 0.5, "gamma": 1.0, "smooth": 0.0, "eps": 1e-7},
}


def _bce(mode: str, o: dict[str, float | None]) -> nn.Module:
    pw = o["pos_weight"]
    return nn.BCEWithLogitsLoss(pos_weight=None if pw is None else torch.tensor(float(pw)))


_FACTORIES: dict[str, Callable[[str, dict[str, float | None]], nn.Module]] = {
    "bce": _bce,
    "dice": lambda mode, o: smp_losses.DiceLoss(mode, from_logits=True, **o),
    "jaccard": lambda mode, o: smp_losses.JaccardLoss(mode, from_logits=True, **o),
    "focal": lambda mode, o: smp_losses.FocalLoss(mode, **o),
    "tversky": lambda mode, o: smp_losses.TverskyLoss(mode, from_logits=True, **o),
}


class LossTermModule(nn.Module):
    """One named term; holds a binary and a multilabel instance and picks by channel count."""

    def __init__(self, name: str, options: dict[str, float | None]) -> None:
        super().__init__()
        self.name = name
        self.binary = _FACTORIES[name]("binary", options)
        self.multilabel = _FACTORIES[name]("multilabel", options)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        fn = self.binary if logits.shape[1] == 1 else self.multilabel
        return fn(logits, target.to(logits.dtype))


def _resolve_options(term: LossTerm, where: str) -> dict[str, float | None]:
    allowed = LOSS_OPTIONS.get(term.name)
    if allowed is None:
        raise LesionBenchError(f"{where}.name: unknown loss {term.name!r} (allowed: {', '.join(LOSS_OPTIONS)})")
    for key in term.options:
        if key not in allowed:
            raise LesionBenchError(
                f"{where}.options.{key}: not an option of loss {term.name!r} (allowed: {', '.join(allowed)})"
            )
    return {**allowed, **term.options}


def downsample_mask(target: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour mask at a coarse head's size: for an integer factor s this is the FCT
    code's ``y[:, ::s, ::s]`` (every s-th pixel), so the mask stays {0, 1}."""
    return target if tuple(target.shape[-2:]) == size else F.interpolate(target.float(), size=size, mode="nearest")


class SegmentationLoss(nn.Module):
    """Weighted sum of terms; a list of logits (coarsest first) is deep supervision.

    ``downsample_masks``: a head smaller than the mask is scored against the mask downsampled to
    its size (FCT's deep supervision); otherwise its logits are upsampled to the mask.
    """

    def __init__(self, terms: Sequence[tuple[float, LossTermModule]], ds_weights: Sequence[float] | None,
                 downsample_masks: bool = False) -> None:
        super().__init__()
        self.weights = [float(w) for w, _ in terms]
        self.terms = nn.ModuleList([m for _, m in terms])
        self.ds_weights = None if ds_weights is None else [float(w) for w in ds_weights]
        self.downsample_masks = downsample_masks

    def components(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Unweighted value of each term on one head (for logging)."""
        if logits.shape[1] != target.shape[1]:
            raise LesionBenchError(
                f"loss: logits have {logits.shape[1]} channel(s) but the mask has {target.shape[1]}; "
                "create the model with num_classes equal to the dataset's"
            )
        logits = resize_logits_to(logits, tuple(target.shape[-2:]))
        return {m.name: m(logits, target) for m in self.terms}

    def single(self, logits: Tensor, target: Tensor) -> Tensor:
        parts = self.components(logits, target)
        return sum(w * v for w, v in zip(self.weights, parts.values(), strict=False))  # type: ignore[return-value]

    def head_weights(self, n: int) -> list[float]:
        """Config weights, else the model's, else equal (1/n each); never renormalised."""
        if self.ds_weights is None:
            return [1.0 / n] * n
        if len(self.ds_weights) != n:
            raise LesionBenchError(
                f"loss.deep_supervision_weights: {len(self.ds_weights)} weight(s) given but the model "
                f"returns {n} heads; give {n} weights, coarsest first"
            )
        return self.ds_weights

    def forward(self, logits: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        if isinstance(logits, Tensor):
            return self.single(logits, target)
        heads = list(logits)
        weights = self.head_weights(len(heads))
        if self.downsample_masks:
            return sum(w * self.single(h, downsample_mask(target, tuple(h.shape[-2:])))  # type: ignore[return-value]
                       for w, h in zip(weights, heads, strict=False))
        return sum(w * self.single(h, target) for w, h in zip(weights, heads, strict=False))  # type: ignore[return-value]


def build_loss(cfg: LossConfig, default_ds_weights: list[float] | None = None,
               downsample_masks: bool = False) -> SegmentationLoss:
    """Build the weighted loss; deep-supervision weights: config, else the model's default, else equal."""
    if not cfg.terms:
        raise LesionBenchError("loss.terms: empty; give at least one term, e.g. [{name: bce}, {name: dice}]")
    terms = []
    for i, term in enumerate(cfg.terms):
        opts = _resolve_options(term, f"loss.terms[{i}]")
        terms.append((term.weight, LossTermModule(term.name, opts)))
    ds = cfg.deep_supervision_weights if cfg.deep_supervision_weights is not None else default_ds_weights
    return SegmentationLoss(terms, ds, downsample_masks)
