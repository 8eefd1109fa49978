"""CAM / Grad-CAM heatmaps for a trained run, with pytorch-grad-cam (no hand-written hooks).

Paper 004 shows two views: a CAM at the last layer (what the final pixel decision looks at)
and a Grad-CAM at the bottleneck (what the global context encodes). Every registered model
names both layers in ``model.cam_layers()``, so the same code explains every architecture.

What paper 004's code computes, exactly, is ``cam-writeup`` and ``gradcam-writeup``:

- ``cam-writeup`` (default layer ``head``, the final 1×1 conv): weights = the spatial mean of
  the model output per output channel; map = sum over c < #output channels of weight[c] ×
  activation channel c (the code enumerates the *output's* channels, so with one output only
  activation channel 0 counts); ReLU; min-max scaled. At the head this is ReLU(mean(logit) ×
  logit): it lights the lesion only when the mean logit is positive, the background otherwise.
- ``gradcam-writeup`` (default layer ``bottleneck``): the target is the logit of the centre
  pixel (h//2, w//2) of the chosen class; weights = spatial mean of the layer's gradients;
  ReLU(sum weight × activation); min-max scaled (pytorch-grad-cam's ``GradCAM``, whose only
  additions are a 1e-7 in the division and the resize to the image).

How ``cam`` and ``gradcam`` differ: both are the library's ``GradCAM`` with the target = sum of
the class logits over the predicted mask (``SemanticSegmentationTarget``), not one pixel;
``cam`` hooks the ``last`` feature layer, where (linear head) the channel weights are the head's
class weights times the mean of the mask: the classic CAM of Zhou et al. over all channels, not
the write-up's channel-0 product. ``eigencam`` is a gradient-free alternative at either layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
from torch import nn

from lesionbench.config import ExperimentConfig
from lesionbench.data.decode import load_image
from lesionbench.data.preprocess import IMAGENET, Stats, eval_tensor
from lesionbench.errors import LesionBenchError
from lesionbench.inference.load import load_run
from lesionbench.inference.network import final_logits
from lesionbench.inference.predict import save_png

METHODS: dict[str, type] = {
    "cam": GradCAM, "gradcam": GradCAM, "cam-writeup": GradCAM, "gradcam-writeup": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM,
    "hirescam": HiResCAM, "layercam": LayerCAM, "eigencam": EigenCAM, "eigengradcam": EigenGradCAM,
}
#: Paper 004: CAM at the last layer, Grad-CAM (and the other methods) at the bottleneck.
DEFAULT_LAYER = {"cam": "last", "cam-writeup": "head", "gradcam-writeup": "bottleneck"}


class SingleOutput(nn.Module):
    """pytorch-grad-cam wants one tensor: the finest head of a deeply supervised model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return final_logits(self.model(x))


def tensor_layer(model: nn.Module, name: str, x: torch.Tensor) -> nn.Module:
    """The module to hook for ``cam_layers()[name]``: itself when it returns a tensor, else the
    sub-module that produced the last tensor of its list output (timm ``features_only`` encoders).

    One probing forward pass checks this; a layer that is never called fails with one line.
    """
    layers = {**model.cam_layers(), "head": model.head}
    if name not in layers:
        raise LesionBenchError(f"unknown layer {name!r} for {type(model).__name__} (known: {', '.join(layers)})")
    layer, seen = layers[name], {}
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.__setitem__(mod, o)) for m in layer.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    if layer not in seen:
        raise LesionBenchError(f"{model.config().get('name', type(model).__name__)}: cam_layers()[{name!r}] "
                               f"({type(layer).__name__}) is not used in forward; use --layer "
                               f"{'last' if name != 'last' else 'bottleneck'} (or fix the model's cam_layers)")
    out = seen[layer]
    if isinstance(out, torch.Tensor):
        return layer
    last = out[-1] if isinstance(out, (list, tuple)) and out else None
    producer = [m for m, o in seen.items() if o is last and m is not layer]
    if not producer:
        raise LesionBenchError(f"cam_layers()[{name!r}] of {type(model).__name__} returns "
                               f"{type(out).__name__}, not a tensor; pick another --layer")
    return producer[-1]


def _spatial(t: torch.Tensor) -> torch.Tensor:
    """Transformer tokens B×N×C become a square B×C×H×W map; feature maps pass through."""
    if t.dim() == 3:
        side = int(round(t.shape[1] ** 0.5))
        t = t[:, : side * side].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)
    return t


class PixelTarget:
    """Paper 004's Grad-CAM target: one class logit at one pixel (default: the centre)."""

    def __init__(self, class_index: int, pixel: tuple[int, int] | None = None) -> None:
        self.class_index, self.pixel = class_index, pixel

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        y, x = self.pixel or (output.shape[-2] // 2, output.shape[-1] // 2)
        return output[self.class_index, y, x]


def writeup_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module) -> np.ndarray:
    """Paper 004's ``CAM.compute_cam`` for one image: sum_c mean(output_c) × activation_c, ReLU, min-max."""
    seen: dict[str, torch.Tensor] = {}
    hook = layer.register_forward_hook(lambda _m, _i, o: seen.__setitem__("a", o))
    try:
        with torch.no_grad():
            out = SingleOutput(model).eval()(x)
    finally:
        hook.remove()
    acts, weights = seen["a"][0].detach().float(), out[0].detach().float().mean(dim=(1, 2))
    cam = sum(w * acts[c] for c, w in enumerate(weights[: acts.shape[0]])).clamp(min=0)
    cam = cam - cam.min()
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).numpy().astype(np.float32)


def explain_array(model: nn.Module, cfg: ExperimentConfig, image: np.ndarray, method: str = "gradcam",
                  layer: str | None = None, class_index: int = 0, threshold: float = 0.5,
                  x: torch.Tensor | None = None, stats: Stats = IMAGENET) -> np.ndarray:
    """Heatmap H0×W0 in [0, 1] for an RGB uint8 image, targeting the predicted mask of ``class_index``.

    The target is ``SemanticSegmentationTarget``: the sum of the class logits over the predicted
    mask (all pixels when the prediction is empty, so the map is never blank by construction).
    ``x``: the network input when already made from the file (``LoadedRun.preprocess``, as predict
    makes it); else made from ``image`` with the normalisation ``stats`` (the run's: ``preprocess.stats``).
    """
    if method not in METHODS:
        raise LesionBenchError(f"unknown CAM method {method!r} (known: {', '.join(METHODS)})")
    layer = layer or DEFAULT_LAYER.get(method, "bottleneck")
    wrapped = SingleOutput(model).eval()
    for p in wrapped.parameters():  # frozen stages would otherwise give the layer no gradient
        p.requires_grad_(True)
    if x is None:
        x = eval_tensor(image, cfg.dataset.image_size, cfg.dataset.augmentation, stats)
    x = x.unsqueeze(0)
    with torch.no_grad():
        logits = wrapped(x)
    target_layer = tensor_layer(model, layer, x)
    if not 0 <= class_index < logits.shape[1]:
        raise LesionBenchError(f"--class {class_index}: the model has {logits.shape[1]} output channel(s)")
    if method == "cam-writeup":
        heat = writeup_cam(model, x, target_layer)
    else:
        mask = (logits[0, class_index].sigmoid() > threshold).float().numpy()
        if not mask.any():
            mask = np.ones_like(mask)
        target = PixelTarget(class_index) if method == "gradcam-writeup" \
            else SemanticSegmentationTarget(class_index, mask)
        with METHODS[method](model=wrapped, target_layers=[target_layer], reshape_transform=_spatial) as cam:
            heat = cam(input_tensor=x, targets=[target])[0]
    heat = np.nan_to_num(heat.astype(np.float32))
    resized = Image.fromarray(heat).resize((image.shape[1], image.shape[0]), Image.BILINEAR)
    return np.clip(np.asarray(resized, np.float32), 0.0, 1.0)


def heatmap_overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The library's jet overlay (``show_cam_on_image``) as RGB uint8."""
    return show_cam_on_image(image.astype(np.float32) / 255.0, heat, use_rgb=True, image_weight=0.5)


def explain_file(run_dir: str | Path, image_path: str | Path, out: str | Path, method: str = "gradcam",
                 layer: str | None = None, class_index: int = 0) -> Path:
    """Write ``<stem>_<method>_<layer>.png`` (heatmap over the image) into ``out``.
    An nnU-Net run has no LesionBench network to hook: one line says so."""
    path = Path(image_path)
    if not path.is_file():
        raise LesionBenchError(f"{path}: no such image file")
    run = load_run(run_dir)
    model = run.require_network("explain")
    image = load_image(path)
    layer = layer or DEFAULT_LAYER.get(method, "bottleneck")
    x, _ = run.preprocess(path)
    heat = explain_array(model, run.cfg, image, method, layer, class_index, run.threshold, x=x)
    tag = method.replace("+", "p")
    return save_png(heatmap_overlay(image, heat), Path(out) / f"{path.stem}_{tag}_{layer}.png")
