"""Exact names for pretrained encoder weights: ``imagenet`` is an alias, the id says which file.

Why: "ImageNet weights" names no file. torchvision's ResNet-50 ``DEFAULT`` is V2 (80.9% top-1,
a newer recipe) while Keras and ``pretrained=True`` code of the write-ups' era gave V1; timm's
``convnext_tiny`` default is ImageNet-12k then 1k. A recipe names the generation it uses
(``weights: IMAGENET1K_V1``, ``weights: convnext_tiny.fb_in1k``) and every run records the id.

Policy of the alias ``imagenet`` (used by the fair matrix): the original ImageNet-1k weights of
each encoder, no extra data, no later training recipe: torchvision ``IMAGENET1K_V1``, timm
``<arch>.fb_in1k`` (else the first ImageNet-1k-only tag), smp's own ``imagenet``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lesionbench.errors import LesionBenchError
from lesionbench.models.weights import weights_kind

IMAGENET_POLICY = ("imagenet = original ImageNet-1k weights: torchvision IMAGENET1K_V1, "
                   "timm <arch>.fb_in1k (else first in1k-only tag), smp 'imagenet'")
NO_WEIGHTS = "none"
_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")


@dataclass(frozen=True)
class Pretrained:
    """``tag``: what the library loader takes (enum member, timm name, smp name); None = no download."""

    id: str
    tag: Any = None


def _torchvision(arch: str, weights: str) -> Pretrained:
    import torchvision.models as tvm
    enum = tvm.get_model_weights(arch)
    key = "IMAGENET1K_V1" if weights.lower() == "imagenet" else weights
    if key not in enum.__members__ or key == "DEFAULT":
        raise LesionBenchError(
            f"model.options.weights: {weights!r} is not a weights generation of torchvision {arch} "
            f"(use imagenet, none, a file, or one of {', '.join(k for k in enum.__members__ if k != 'DEFAULT')})")
    member = enum[key]
    return Pretrained(f"torchvision:{type(member).__name__}.{member.name}", member)


def _timm_in1k(arch: str) -> str:
    import timm
    tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*") if n.split(".", 1)[0] == arch]
    if "fb_in1k" in tags:
        return "fb_in1k"
    pure = [t for t in tags if t.endswith("in1k") and "12k" not in t and "22k" not in t]
    if not pure:
        raise LesionBenchError(f"model.options.weights: timm {arch} has no ImageNet-1k-only weights; "
                               f"name one of {', '.join(tags) or 'none'}")
    return pure[0]


def _timm(arch: str, weights: str) -> Pretrained:
    import timm
    tag = _timm_in1k(arch) if weights.lower() == "imagenet" else weights.removeprefix(f"{arch}.")
    full = f"{arch}.{tag}"
    if full not in timm.list_pretrained(full):
        raise LesionBenchError(f"model.options.weights: {weights!r} is not a timm tag of {arch} "
                               f"(use imagenet, none, a file, or one of {', '.join(timm.list_pretrained(arch + '.*'))})")
    return Pretrained(f"timm:{full}", full)


def _smp(encoder: str, weights: str) -> Pretrained:
    import segmentation_models_pytorch as smp
    if encoder.startswith("tu-"):  # smp's timm bridge loads timm's default tag for "imagenet"
        import timm
        if weights.lower() != "imagenet":
            raise LesionBenchError(f"model.options.weights: smp {encoder} takes imagenet, none or a file")
        default = timm.create_model(encoder[3:], pretrained=False).pretrained_cfg.get("tag")
        return Pretrained(f"timm:{encoder[3:]}.{default} (smp tu- default)", "imagenet")
    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    if weights not in settings and weights.lower() != "imagenet":
        raise LesionBenchError(f"model.options.weights: {weights!r} is not an smp weight name of {encoder} "
                               f"(use none, a file, or one of {', '.join(settings) or 'imagenet'})")
    name = "imagenet" if weights.lower() == "imagenet" else weights
    return Pretrained(f"smp:{encoder}.{name}", name)


_LOADERS = {"torchvision": _torchvision, "timm": _timm, "smp": _smp}


def resolve(encoder: str, weights: str | None) -> Pretrained:
    """``encoder`` is ``<library>:<arch>`` (torchvision:resnet50, timm:convnext_tiny, smp:resnet34)."""
    library, _, arch = encoder.partition(":")
    w = str(weights if weights is not None else NO_WEIGHTS).strip()
    kind = weights_kind(w)
    if kind == "none":
        return Pretrained(NO_WEIGHTS)
    if kind == "path":  # a file, or an exact library tag (IMAGENET1K_V1, convnext_tiny.fb_in1k)
        looks_like_file = "/" in w or Path(w).suffix.lower() in _FILE_SUFFIXES or Path(w).exists()
        return Pretrained(f"file:{w}") if looks_like_file else _LOADERS[library](arch, w)
    return _LOADERS[library](arch, "imagenet")


def weights_id(name: str, options: dict[str, Any] | None = None) -> str:
    """The exact encoder weights a config builds, without building it (for run folders, leaderboards).

    ``none`` for models without a pretrained encoder (trained from scratch).
    """
    from lesionbench.models.registry import builder_info
    fn, encoder, defaults = builder_info(name)
    opts = {**defaults, **{k: v for k, v in (options or {}).items() if v is not None}}
    if encoder is None:
        return NO_WEIGHTS
    params = inspect.signature(fn).parameters if fn is not None else {}
    for key, p in params.items():
        if key not in opts and p.default is not inspect.Parameter.empty:
            opts[key] = p.default
    return resolve(encoder.format(**opts), opts.get("weights")).id
