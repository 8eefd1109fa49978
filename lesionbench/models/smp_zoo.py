"""segmentation-models-pytorch architectures as ``smp:<Arch>/<encoder>``, registered in a loop.

Any smp architecture x encoder parses (``smp:UnetPlusPlus/efficientnet-b3``); a common matrix
is also registered so ``lesionbench models`` lists it. The smp model is split into our
encoder / decoder / head so freezing, init and CAM work as for the hand-built models.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from lesionbench.errors import LesionBenchError
from lesionbench.models.base import SegmentationModel
from lesionbench.models.pretrained import resolve
from lesionbench.models.registry import register_family, register_model
from lesionbench.models.weights import DEFAULT_WEIGHTS, load_encoder_weights

ARCHS = ("Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus",
         "PAN", "UPerNet", "Segformer")
ENCODERS = ("resnet18", "resnet34", "resnet50", "efficientnet-b0", "mobilenet_v2", "mit_b0",
            "tu-convnext_tiny")
_UNSUPPORTED = {("UnetPlusPlus", "mit_b0"), ("Linknet", "mit_b0")}


class SmpModel(SegmentationModel):
    """An smp model's encoder, decoder and segmentation head under our base class."""

    def __init__(self, arch: str, encoder_name: str, num_classes: int = 1,
                 weights: str = DEFAULT_WEIGHTS, **kwargs: Any) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp
        pre = resolve(f"smp:{encoder_name}", weights)
        try:
            net = smp.create_model(arch, encoder_name=encoder_name, classes=num_classes,
                                   encoder_weights=pre.tag, **kwargs)
        except KeyError as err:
            close = difflib.get_close_matches(encoder_name, smp.encoders.get_encoder_names(), n=5)
            raise LesionBenchError(f"smp:{arch}/{encoder_name}: unknown encoder ({err}); "
                                   f"close matches: {', '.join(close) or 'none'}") from None
        except (ValueError, TypeError, AttributeError) as err:
            raise LesionBenchError(f"smp:{arch}/{encoder_name}: {err}") from None
        if net.classification_head is not None:
            raise LesionBenchError(f"smp:{arch}/{encoder_name}: aux_params (classification head) unsupported")
        self.encoder, self.decoder, self.head = net.encoder, net.decoder, net.segmentation_head
        self.arch, self.encoder_name = arch, encoder_name
        if pre.id.startswith("file:"):
            load_encoder_weights(self.encoder, weights)  # a full library state dict, before pruning
        self.dropped = drop_unused(self, self.encoder)

    def stages(self) -> dict[str, nn.Module]:
        out = {"encoder": self.encoder}
        out.update({f"encoder.{n}": m for n, m in self.encoder.named_children()
                    if any(True for _ in m.parameters())})
        out.update(decoder=self.decoder, head=self.head)
        return out

    def cam_layers(self) -> dict[str, nn.Module]:
        enc = [m for n, m in self.encoder.named_children() if any(True for _ in m.parameters())]
        if getattr(self.encoder, "_depth", 5) < 5 or not enc:  # shallow encoders (PSPNet) skip the last stage
            return {"last": self.decoder, "bottleneck": self.decoder}
        return {"last": self.decoder, "bottleneck": self._last_executed_encoder_module() or enc[-1]}

    @torch.no_grad()
    def _last_executed_encoder_module(self) -> nn.Module | None:
        """The encoder sub-module whose tensor output finished last in a forward pass.

        Why: some smp encoders hold blocks in a ModuleList or keep unused heads (efficientnet,
        mobilenet), so "the last child" may never run and CAM hooks on it would never fire.
        """
        finished: list[nn.Module] = []
        hooks = [m.register_forward_hook(lambda mod, _i, out: finished.append(mod) if torch.is_tensor(out) else None)
                 for m in self.encoder.modules() if m is not self.encoder]
        was_training = self.training
        try:
            self.eval()
            self.encoder(torch.zeros(1, 3, 64, 64, device=next(self.parameters()).device))
        finally:
            for h in hooks:
                h.remove()
            self.train(was_training)
        return finished[-1] if finished else None


class Unused(nn.Module):
    """Stands in for a dropped module: passes its first input through (any call signature)."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x


def drop_unused(model: nn.Module, part: nn.Module, probes: tuple[int, ...] = (64, 256)) -> list[str]:
    """Replace sub-modules of ``part`` none of whose parameters reach the output by ``Unused``.

    Why: smp keeps what its encoders never use (efficientnet's ``_conv_head``/``_bn1``; the stage
    past ``encoder_depth`` that mobilenet/efficientnet compute and slice away; PSPNet's deep
    stages): parameters without gradient inflate the parameter count and make DDP fail without
    ``find_unused_parameters``. One eval-mode pass on zeros finds them (autograd's ``allow_unused``);
    on the meta device nothing is dropped.
    """
    params = list(part.named_parameters())
    if not params or params[0][1].device.type == "meta":
        return []
    grads = _probe_grads(model, [p for _, p in params], probes)
    if grads is None:  # no probe size fits this architecture: keep everything
        return []
    unused = {n for (n, _), g in zip(params, grads, strict=False) if g is None}
    dropped: list[str] = []
    for name, module in list(part.named_modules()):
        own = [f"{name}.{n}" for n, _ in module.named_parameters()]
        if not name or not own or any(name.startswith(d + ".") for d in dropped):
            continue
        if all(n in unused for n in own):
            parent, _, attr = name.rpartition(".")
            setattr(part.get_submodule(parent) if parent else part, attr, Unused())
            dropped.append(name)
    return dropped


def _probe_grads(model: nn.Module, params: list[torch.Tensor], probes: tuple[int, ...]) -> tuple | None:
    """Gradients (None = unused) of ``params`` for one eval-mode pass on zeros, at the first size that fits."""
    was_training = model.training
    model.eval()
    try:
        for size in probes:  # PAN's pyramid attention needs 256 px
            try:
                with torch.enable_grad():
                    out = model(torch.zeros(1, 3, size, size, device=params[0].device))
            except RuntimeError:
                continue
            out = out[-1] if isinstance(out, (list, tuple)) else out
            return torch.autograd.grad(out.sum(), params, allow_unused=True)
        return None
    finally:
        model.train(was_training)


def parse_smp(name: str, num_classes: int = 1, **options: Any) -> SmpModel:
    """``smp:<Arch>/<encoder>`` -> SmpModel; the arch name is case-insensitive."""
    import segmentation_models_pytorch as smp
    body = name.removeprefix("smp:")
    arch, sep, encoder = body.partition("/")
    mapping = {a.__name__.lower(): a.__name__ for a in smp._MODEL_ARCHITECTURES}
    if not sep or not encoder or arch.lower() not in mapping:
        close = difflib.get_close_matches(arch, list(mapping.values()), n=3, cutoff=0.4)
        raise LesionBenchError(
            f"model {name!r}: expected smp:<Arch>/<encoder> with Arch one of {', '.join(mapping.values())}"
            + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return SmpModel(mapping[arch.lower()], encoder, num_classes, **options)


register_family("smp:", parse_smp)


def _register_matrix() -> None:
    """Register the common arch x encoder matrix by name (no code per entry)."""
    for arch in ARCHS:
        for enc in ENCODERS:
            if (arch, enc) in _UNSUPPORTED:
                continue
            def build(num_classes: int = 1, weights: str = DEFAULT_WEIGHTS, _a: str = arch,
                      _e: str = enc, **kwargs: Any) -> SmpModel:
                return SmpModel(_a, _e, num_classes, weights, **kwargs)
            build.__doc__ = f"smp {arch} with a {enc} encoder."
            register_model(f"smp:{arch}/{enc}", source="smp", input_size=224, encoder=f"smp:{enc}")(build)


_register_matrix()
