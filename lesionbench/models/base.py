"""One small base class for every network: encoder -> decoder -> head, named stages, freezing.

Why: the training side (phases, init, CAM) talks to every architecture the same way, the way
segmentation-models-pytorch puts every architecture behind one ``SegmentationModel.forward``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lesionbench.errors import LesionBenchError

Logits = Tensor | list[Tensor]


class SegmentationModel(nn.Module):
    """``forward(x)`` = head(decoder(encoder(x))), resized to the input size.

    Subclasses set ``encoder`` (returns a list of feature maps), ``decoder`` (features -> tensor
    or list) and ``head`` (decoder output -> logits tensor, or a list for deep supervision,
    coarsest first). Deeply supervised models return the list in train mode and
    ``merge_heads(list)`` (default: the finest head) in eval mode.
    """

    encoder: nn.Module
    decoder: nn.Module
    head: nn.Module
    #: Per-head loss weights, coarsest first; None when the model has one output.
    deep_supervision_weights: list[float] | None = None
    #: True: coarse heads train against masks downsampled to their size (FCT); False: their
    #: logits are upsampled to the mask.
    deep_supervision_downsample_masks: bool = False
    #: The input size the write-up used (square).
    default_input_size: int = 224
    #: Inputs are padded to a multiple of this (the network's total stride), logits cropped back.
    size_multiple: int = 32
    #: Exact pretrained encoder weights (``torchvision:ResNet50_Weights.IMAGENET1K_V1``, ``none``),
    #: set by ``create_model`` from ``pretrained.weights_id``.
    weights_id: str = "none"

    def forward(self, x: Tensor) -> Logits:
        """Inputs of any H×W (767×1022 for paper 004): zero-padded right/bottom to ``size_multiple``,
        logits cropped back, so no layer sees a size its strides cannot halve evenly."""
        size = x.shape[-2:]
        pad_h, pad_w = -size[0] % self.size_multiple, -size[1] % self.size_multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        padded = x.shape[-2:]
        out = self.head(self.decoder(self.encoder(x)))
        if pad_h or pad_w:
            out = [self._crop(o, size, padded) for o in out] if isinstance(out, (list, tuple)) \
                else self._crop(out, size, padded)
        if isinstance(out, (list, tuple)):
            heads = [self._resize(o, size) if i == len(out) - 1 else o for i, o in enumerate(out)]
            return heads if self.training else self.merge_heads([self._resize(o, size) for o in heads])
        return self._resize(out, size)

    @staticmethod
    def _crop(t: Tensor, size: torch.Size, padded: torch.Size) -> Tensor:
        """The part of an output (at any scale of the padded input) that covers the real image."""
        h = math.ceil(t.shape[-2] * size[0] / padded[0])
        w = math.ceil(t.shape[-1] * size[1] / padded[1])
        return t[..., :h, :w]

    @staticmethod
    def _resize(t: Tensor, size: torch.Size) -> Tensor:
        return t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    def merge_heads(self, heads: list[Tensor]) -> Tensor:
        """Eval-mode output of a deeply supervised model: the finest head."""
        return heads[-1]

    # ------------------------------------------------------------------ stages
    def stages(self) -> dict[str, nn.Module]:
        """Named parts for freezing: encoder, encoder.<stage>..., decoder, head."""
        out: dict[str, nn.Module] = {"encoder": self.encoder}
        out.update({f"encoder.{k}": v for k, v in encoder_stages(self.encoder).items()})
        out["decoder"] = self.decoder
        out["head"] = self.head
        return out

    def decoder_modules(self) -> list[nn.Module]:
        """The decoder and the head: every part that is never a pretrained encoder."""
        return [self.decoder, self.head]

    def init_modules(self) -> list[nn.Module]:
        """What ``model.init`` initialises: every layer, except a pretrained encoder (ImageNet or a
        file), whose weights must never be reset. Paper 003's U-Nets train from scratch, so their
        init reaches the encoder too."""
        return self.decoder_modules() if self.weights_id != "none" else [self.encoder, *self.decoder_modules()]

    def cam_layers(self) -> dict[str, nn.Module]:
        """Layers for CAM / Grad-CAM: the last feature layer before logits and the bottleneck."""
        enc = list(encoder_stages(self.encoder).values()) or [self.encoder]
        return {"last": self.decoder, "bottleneck": enc[-1]}

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        if mode:  # BatchNorm statistics of frozen stages must not drift
            for m in self.modules():
                if getattr(m, "_lb_frozen", False) and isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def config(self) -> dict[str, Any]:
        """Name and options this model was built from (set by ``create_model``)."""
        return dict(getattr(self, "_lb_config", {}))


def encoder_stages(encoder: nn.Module) -> dict[str, nn.Module]:
    """An encoder may name its stages with a ``stages()`` method (a sub-module called
    ``stages``, as in timm, is not that)."""
    fn = getattr(type(encoder), "stages", None)
    return fn(encoder) if callable(fn) and not isinstance(fn, nn.Module) else {}


def _resolve(model: SegmentationModel, names: Iterable[str] | str) -> list[nn.Module]:
    stages = model.stages()
    names = [names] if isinstance(names, str) else list(names)
    missing = [n for n in names if n not in stages]
    if missing:
        raise LesionBenchError(
            f"unknown stage {', '.join(map(repr, missing))} for {type(model).__name__}; "
            f"available stages: {', '.join(stages)}")
    return [stages[n] for n in names]


def _set_trainable(model: SegmentationModel, names: Iterable[str] | str, trainable: bool) -> None:
    """Gradients on or off in the named stages; BatchNorm of frozen stages stays in eval mode."""
    for stage in _resolve(model, names):
        for p in stage.parameters():
            p.requires_grad_(trainable)
        for m in stage.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m._lb_frozen = not trainable
                m.train(model.training and trainable)


def freeze(model: SegmentationModel, names: Iterable[str] | str) -> None:
    """Stop gradients in the named stages and keep their BatchNorm layers in eval mode."""
    _set_trainable(model, names, False)


def unfreeze(model: SegmentationModel, names: Iterable[str] | str) -> None:
    """Undo ``freeze`` for the named stages (e.g. ``encoder.conv5`` after freezing ``encoder``)."""
    _set_trainable(model, names, True)


def count_params(model: nn.Module, trainable: bool | None = None) -> int:
    """Parameter count; ``trainable=True/False`` counts only (non-)trainable ones."""
    return sum(p.numel() for p in model.parameters() if trainable is None or p.requires_grad == trainable)
