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


def resolve(encoder: str, weights: str | None, fetch: bool = True) -> Pretrained:
    """``encoder`` is ``<library>:<arch>`` (torchvision:resnet50, timm:convnext_tiny, smp:resnet34).

    ``fetch``: make sure the weights are in the library's cache first (a builder is about to load them), so
    an offline machine gets one line naming the weights, where they come from and the fix (fetch_weights).
    """
    library, _, arch = encoder.partition(":")
    w = str(weights if weights is not None else NO_WEIGHTS).strip()
    kind = weights_kind(w)
    if kind == "none":
        return Pretrained(NO_WEIGHTS)
    if kind == "path":  # a file, or an exact library tag (IMAGENET1K_V1, convnext_tiny.fb_in1k)
        looks_like_file = "/" in w or Path(w).suffix.lower() in _FILE_SUFFIXES or Path(w).exists()
        pre = Pretrained(f"file:{w}") if looks_like_file else _LOADERS[library](arch, w)
    else:
        pre = _LOADERS[library](arch, "imagenet")
    if fetch:
        fetch_weights(pre)
    return pre


def pretrained_for(name: str, options: dict[str, Any] | None = None) -> Pretrained:
    """The exact encoder weights a model name and options build, resolved without building or fetching."""
    from lesionbench.models.registry import builder_info
    fn, encoder, defaults = builder_info(name)
    opts = {**defaults, **{k: v for k, v in (options or {}).items() if v is not None}}
    if encoder is None:
        return Pretrained(NO_WEIGHTS)
    params = inspect.signature(fn).parameters if fn is not None else {}
    for key, p in params.items():
        if key not in opts and p.default is not inspect.Parameter.empty:
            opts[key] = p.default
    return resolve(encoder.format(**opts), opts.get("weights"), fetch=False)


def weights_id(name: str, options: dict[str, Any] | None = None) -> str:
    """The exact encoder weights a config builds, without building it (for run folders, leaderboards).

    ``none`` for models without a pretrained encoder (trained from scratch).
    """
    return pretrained_for(name, options).id


# ----------------------------------------------------------------------------- fetching, offline

GENERIC_FIX = ("--set model.options.weights=none (train from scratch; LESIONBENCH_WEIGHTS=none for recipes that "
               "do not name their weights) or a local file (--set model.options.weights=/path/to/weights.pth)")


def fetch_weights(pre: Pretrained, fix: str = GENERIC_FIX) -> None:
    """Download the weights into the cache their library reads (torch hub, Hugging Face Hub), if absent.

    A failure (no network, a proxy, a hub outage) is one line: which weights, from where, and the fix.
    """
    plan = _fetch_plan(pre)
    if plan is None:
        return
    source, cache, get = plan
    try:
        get()
    except Exception as err:  # noqa: BLE001 - urllib, requests, httpx and hub errors all mean "not fetched"
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise LesionBenchError(f"encoder weights {pre.id} could not be fetched from {source} ({reason}); "
                               f"fix: {fix}, or pre-populate {cache} on a machine with network") from None


def _fetch_plan(pre: Pretrained) -> tuple[str, str, Any] | None:
    """(where from, which cache, how to get it) for library weights; None for no weights or a file."""
    library, _, ref = pre.id.partition(":")
    if pre.tag is None or library not in ("torchvision", "timm", "smp"):
        return None
    if library == "torchvision":
        return _url_plan(pre.tag.url)
    if library == "timm":
        import timm

        name = ref.split(" ", 1)[0]  # "convnext_tiny.fb_in1k (smp tu- default)"
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is not None and cfg.hf_hub_id:
            return _hub_plan(cfg.hf_hub_id, [cfg.hf_hub_filename or "model.safetensors", "pytorch_model.bin"])
        return _url_plan(cfg.url) if cfg is not None and cfg.url else None
    import segmentation_models_pytorch as smp

    encoder, _, weights = ref.rpartition(".")
    where = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {}).get(weights) or {}
    if "repo_id" not in where:
        return None
    repo = f"{where['repo_id']}@{where['revision']}" if where.get("revision") else where["repo_id"]
    return _hub_plan(repo, ["config.json", "model.safetensors"], every=True)


def _url_plan(url: str) -> tuple[str, str, Any]:
    """A file torch.hub.load_state_dict_from_url reads from <torch hub>/checkpoints/<file name>."""
    import re
    import sys
    from urllib.parse import urlparse

    import torch.hub

    name = Path(urlparse(url).path).name
    dst = Path(torch.hub.get_dir()) / "checkpoints" / name
    digest = re.search(r"-([a-f0-9]*)\.", name)  # torch's hash prefix convention (check_hash=True)

    def get() -> None:
        if dst.is_file():
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dst), digest.group(1) if digest else None, progress=sys.stderr.isatty())

    return url, f"the torch hub cache ({dst})", get


def _hub_plan(repo: str, files: list[str], every: bool = False) -> tuple[str, str, Any]:
    """Files of a Hugging Face Hub repo (``repo@revision``): all of them (``every``), else the first that exists."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id, _, revision = repo.partition("@")

    def get() -> None:
        for i, name in enumerate(files):
            if isinstance(huggingface_hub.try_to_load_from_cache(repo_id, name, revision=revision or None), str):
                if every:
                    continue
                return  # cached: no request (offline, the hub client would retry for half a minute first)
            try:
                huggingface_hub.hf_hub_download(repo_id, filename=name, revision=revision or None)
            except EntryNotFoundError as err:  # the repo lacks this file (timm: .safetensors, else .bin)
                if every or isinstance(err, LocalEntryNotFoundError) or i == len(files) - 1:
                    raise  # offline (nothing cached), or no file at all
                continue
            if not every:
                return

    return (f"the Hugging Face Hub repo {repo_id}", "the Hugging Face cache ($HF_HOME, default ~/.cache/huggingface)",
            get)
