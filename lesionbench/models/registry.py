"""timm-style model registry: ``@register_model`` builders, ``create_model``, ``list_models``.

Why: configs name a network plus options; the registry turns that into a module, and a new
model needs one decorated builder and no new test (tests loop over the registry).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lesionbench.errors import LesionBenchError
from lesionbench.models.base import SegmentationModel, count_params

Builder = Callable[..., SegmentationModel]


@dataclass(frozen=True)
class ModelInfo:
    """One registry row: what ``lesionbench models`` prints."""

    name: str
    source: str  # "paper 000", "smp", "classic", "test", ...
    input_size: int  # the write-up's square input size
    heads: int  # number of outputs in training mode (>1 = deep supervision)
    params: int | None  # parameter count at the default options (num_classes=1)
    description: str = ""


@dataclass(frozen=True)
class _Entry:
    fn: Builder
    source: str
    input_size: int
    heads: int
    defaults: dict[str, Any]
    encoder: str | None = None


_REGISTRY: dict[str, _Entry] = {}
#: Parsers for open-ended families such as ``smp:<Arch>/<encoder>`` (prefix -> builder(name, ...)).
_FAMILIES: dict[str, Callable[..., SegmentationModel]] = {}


def register_model(name: str | None = None, *, source: str = "lesionbench", input_size: int = 224,
                   heads: int = 1, encoder: str | None = None, **defaults: Any) -> Callable[[Builder], Builder]:
    """Register ``fn(num_classes, **options)``; the name defaults to the function name with dashes.

    ``defaults`` are extra options bound to this name (used for ``test-*`` and smp entries).
    ``encoder``: the pretrained encoder as ``<library>:<arch>`` (``{option}`` fields are filled
    from the options), so ``pretrained.weights_id`` names the weights without building.
    """
    def deco(fn: Builder) -> Builder:
        key = name or fn.__name__.replace("_", "-")
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} registered twice")
        _REGISTRY[key] = _Entry(fn, source, input_size, heads, dict(defaults), encoder)
        return fn
    return deco


def register_family(prefix: str, fn: Callable[..., SegmentationModel]) -> None:
    """Names starting with ``prefix`` that are not registered go to ``fn(name, num_classes, **opts)``."""
    _FAMILIES[prefix] = fn


def model_names() -> list[str]:
    """Registered names, sorted (the smp family also parses names not listed here)."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def builder_info(name: str) -> tuple[Builder | None, str | None, dict[str, Any]]:
    """(builder, encoder reference, bound defaults) of a model name; smp family names parse."""
    _ensure_loaded()
    entry = _REGISTRY.get(name)
    if entry is not None:
        return entry.fn, entry.encoder, entry.defaults
    if name.startswith("smp:") and "/" in name:
        return None, "smp:" + name.split("/", 1)[1], {}
    raise LesionBenchError(f"unknown model {name!r} (model.name in the experiment; see `lesionbench models`)")


def accepts_option(name: str, key: str) -> bool:
    """Whether model ``name`` takes option ``key`` (families such as smp: take ``weights``)."""
    _ensure_loaded()
    entry = _REGISTRY.get(name)
    if entry is None:
        return any(name.startswith(p) for p in _FAMILIES)
    params = inspect.signature(entry.fn).parameters
    return key in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_options(name: str, fn: Callable[..., Any], options: dict[str, Any]) -> None:
    sig = inspect.signature(fn)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    allowed = [p for p in sig.parameters if p != "num_classes"]
    bad = [k for k in options if k not in allowed]
    if bad:
        raise LesionBenchError(
            f"model {name!r}: unknown option {', '.join(map(repr, bad))} "
            f"(allowed: {', '.join(allowed) or 'none'}); fix model.options in the experiment")


def create_model(name: str, num_classes: int = 1, **options: Any) -> SegmentationModel:
    """Build a registered model; ``None`` options are dropped so configs can leave them unset."""
    _ensure_loaded()
    options = {k: v for k, v in options.items() if v is not None}
    entry = _REGISTRY.get(name)
    if entry is not None:
        merged = {**entry.defaults, **options}
        _check_options(name, entry.fn, merged)
        model = entry.fn(num_classes=num_classes, **merged)
    else:
        family = next((fn for prefix, fn in _FAMILIES.items() if name.startswith(prefix)), None)
        if family is None:
            close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "see `lesionbench models`"
            raise LesionBenchError(f"unknown model {name!r}: {hint} (model.name in the experiment)")
        model = family(name, num_classes=num_classes, **options)
    model._lb_config = {"name": name, "num_classes": num_classes, "options": options}
    from lesionbench.models.pretrained import weights_id
    model.weights_id = weights_id(name, options)
    return model


def list_models(with_params: bool | str = True, source: str | None = None) -> list[ModelInfo]:
    """Every registered model; parameter counts of our own models come from a build on the meta
    device (no memory), those of smp rows from a real build, so modules that never receive a
    gradient are not counted (see ``smp_zoo.drop_unused``).

    smp matrix rows are counted only with ``with_params="all"``.
    """
    _ensure_loaded()
    rows = []
    for name in sorted(_REGISTRY):
        e = _REGISTRY[name]
        if source is not None and e.source != source:
            continue
        params = None
        if with_params == "all" or (with_params and e.source != "smp"):
            params = listed_params(name)
        doc = (inspect.getdoc(e.fn) or "").splitlines()
        rows.append(ModelInfo(name, e.source, e.input_size, e.heads, params, doc[0] if doc else ""))
    return rows


def listed_params(name: str) -> int | None:
    """Parameters of a registered model as ``lesionbench models`` lists them (None if it cannot be built).
    smp rows are built for real: dropping their gradient-less modules needs one forward pass."""
    e = _REGISTRY[name]
    opts = {"weights": "none"} if accepts_option(name, "weights") else {}
    try:
        with torch.device("cpu" if e.source == "smp" else "meta"):
            return count_params(create_model(name, num_classes=1, **opts))
    except Exception:  # some encoders cannot be built on the meta device (mit_b0): build for real
        try:
            return count_params(create_model(name, num_classes=1, **opts))
        except Exception:  # noqa: BLE001 - a listing must not fail on one model
            return None


def _ensure_loaded() -> None:
    """Import the model modules so their decorators run (lazy, to keep ``import`` cheap)."""
    import lesionbench.models.zoo  # noqa: F401
