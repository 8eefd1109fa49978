"""Encoder weights (``imagenet | none | PATH``) and whole-model save/load as safetensors.

Why: pretrained encoders come from the libraries' own loaders (torchvision enums, timm, smp);
a local file must fail with one clear line, not a 40-line ``load_state_dict`` traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lesionbench.errors import LesionBenchError
from lesionbench.settings import settings

#: ``weights`` default, resolved when a model is built: $LESIONBENCH_WEIGHTS, else imagenet
#: (``LESIONBENCH_WEIGHTS=none`` builds offline: CI, smoke runs).
DEFAULT_WEIGHTS = "default"
#: Keys of classifier heads that an ImageNet checkpoint carries and an encoder lacks.
_IGNORED_PREFIXES = ("fc.", "classifier.", "head.", "head_", "aux_logits")
_STRIP_PREFIXES = ("module.", "model.", "encoder.", "backbone.")


def resolve_weights(weights: str | None) -> str:
    """``default`` -> the value of $LESIONBENCH_WEIGHTS now (read through settings, not at import)."""
    w = (weights or "none").strip()
    return settings().weights.strip() if w.lower() == DEFAULT_WEIGHTS else w


def weights_kind(weights: str | None) -> str:
    """'imagenet', 'none' or 'path' (anything else is a file)."""
    w = resolve_weights(weights)
    return w.lower() if w.lower() in ("imagenet", "none") else "path"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .pth/.pt/.ckpt (optionally {'state_dict': ...}) or .safetensors file on CPU."""
    p = Path(resolve_weights(str(path))).expanduser()
    if not p.is_file():
        raise LesionBenchError(f"{p}: encoder weights file not found (model.options.weights: "
                               "use imagenet, none, or the path of a .pth/.safetensors file)")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd: Any = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file
        raise LesionBenchError(f"{p}: cannot read weights ({type(err).__name__}: {err})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise LesionBenchError(f"{p}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    return sd


def _normalise_keys(sd: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        while k not in expected and k.startswith(_STRIP_PREFIXES):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``encoder``; every encoder tensor must arrive with its shape."""
    own = encoder.state_dict()
    sd = _normalise_keys(read_state_dict(path), set(own))
    sd = {k: v for k, v in sd.items() if not (k not in own and k.startswith(_IGNORED_PREFIXES))}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
    if problems:
        raise LesionBenchError(f"{path}: does not fit the {type(encoder).__name__} encoder: "
                               + ", ".join(problems) + " (save it from the same encoder)")
    encoder.load_state_dict(sd, strict=True)


def save_encoder_weights(encoder: nn.Module, path: str | Path) -> Path:
    """Write an encoder state dict that ``weights: PATH`` reads back."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(p))
    else:
        torch.save(encoder.state_dict(), p)
    return p


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (name, num_classes, options), paper 002 style."""
    from safetensors.torch import save_model
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = dict(getattr(model, "_lb_config", {}))
    if "name" not in cfg:
        raise LesionBenchError("save_pretrained: the model was not built by create_model (no name)")
    save_model(model, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    return d


def load_pretrained(directory: str | Path, **overrides: Any) -> nn.Module:
    """Rebuild the model from ``config.json`` (encoder weights 'none') and load ``model.safetensors``."""
    from safetensors.torch import load_model

    from lesionbench.models.registry import accepts_option, create_model
    d = Path(directory)
    cfg_path, w_path = d / "config.json", d / "model.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise LesionBenchError(f"{p}: not found (save with lesionbench.models.save_pretrained)")
    cfg = json.loads(cfg_path.read_text())
    options = {**cfg.get("options", {}), **overrides}
    if accepts_option(cfg["name"], "weights"):
        options["weights"] = "none"  # the saved tensors replace any pretrained encoder
    model = create_model(cfg["name"], num_classes=cfg.get("num_classes", 1), **options)
    missing, unexpected = load_model(model, str(w_path), strict=False)
    if missing or unexpected:
        raise LesionBenchError(f"{w_path}: does not fit {cfg['name']!r}: missing {sorted(missing)[:3]}, "
                               f"unexpected {sorted(unexpected)[:3]}")
    return model
