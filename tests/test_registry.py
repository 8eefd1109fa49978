"""Tests that scale with the registry and the suites (timm / lightning-hydra-template habits).

Every registered model builds at a tiny size, runs forward and backward, returns the declared
heads and shape, and every parameter receives a gradient. The smp matrix is covered by every
architecture (with resnet18) and every encoder (with Unet, and with PSPNet, whose shallow
``encoder_depth`` leaves stages unused); ``LESIONBENCH_TEST_FULL_MATRIX=1`` runs all of it.
Every experiment of every suite builds its model, loss, transforms and DataModule config.
"""

from __future__ import annotations

import os

import pytest
import torch

from lesionbench.data.datamodule import SegmentationDataModule
from lesionbench.data.transforms import build_transforms
from lesionbench.models import create_model, list_models, model_names
from lesionbench.models.registry import accepts_option
from lesionbench.models.smp_zoo import ARCHS, ENCODERS
from lesionbench.training.losses import build_loss

torch.set_num_threads(2)
#: Tiny options of the hand-built seed models (the test-* variants are tiny already).
TINY = {"unet": {"base_channels": 4}, "unet-residual": {"base_channels": 4},
        "unet-attention": {"base_channels": 4}, "unetplusplus": {"base_channels": 4},
        "pspnet": {"backbone_features": 16, "aux": True}, "unet-convnext-attention": {"encoder": "convnext_atto"},
        "resnet50-unet": {"decoder_channels": (16, 16, 8, 8, 8)}}
#: Input sizes where an architecture needs more than 32 px (PAN's pyramid attention pools to 1/256).
SIZE = {"PAN": 256}
SMP = [n for n in model_names() if n.startswith("smp:")]
_COVER = {f"smp:{a}/resnet18" for a in ARCHS} | {f"smp:{a}/{e}" for a in ("Unet", "PSPNet") for e in ENCODERS}
FAST_SMP = [n for n in SMP if n in _COVER]
ALL = [n for n in model_names() if not n.startswith("smp:")] + (
    SMP if os.environ.get("LESIONBENCH_TEST_FULL_MATRIX") == "1" else FAST_SMP)
#: Full-size encoders (timm's habit: tiny variants in the fast loop, the full-size sweep in the slow tier).
#: Each full-size seed architecture keeps its fast forward-shape and parameter-count test in test_models.py.
FULL_SIZE_ENCODERS = {"resnet34", "resnet50", "tu-convnext_tiny", "mit_b0"}
FULL_SIZE_MODELS = {"fct-resnet50", "resnet50-unet"}  # their tiny twins: test-fct-resnet, test-resnet-unet


def _tier(name: str) -> object:
    full = name in FULL_SIZE_MODELS or name.split("/")[-1] in FULL_SIZE_ENCODERS
    return pytest.param(name, marks=[pytest.mark.slow] if full else [], id=name)


def _size(name: str) -> int:
    return SIZE.get(name.removeprefix("smp:").split("/")[0], 32)


@pytest.fixture(scope="module")
def heads() -> dict[str, int]:
    return {i.name: i.heads for i in list_models(with_params=False)}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", [_tier(n) for n in ALL])
def test_every_model_forward_backward_shape_and_gradients(name: str, heads: dict[str, int]) -> None:
    torch.manual_seed(0)
    opts = dict(TINY.get(name, {}), **({"weights": "none"} if accepts_option(name, "weights") else {}))
    model = create_model(name, num_classes=2, **opts).train()
    size = _size(name)
    out = model(torch.randn(2, 3, size, size))
    outs = out if isinstance(out, list) else [out]
    declared = 2 if name == "pspnet" else heads[name]  # pspnet: aux head switched on above
    assert len(outs) == declared and outs[-1].shape == (2, 2, size, size)
    sum(o.float().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: {len(missing)} parameter(s) without gradient, e.g. {missing[:3]}"
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, size, size))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 2, size, size)


def test_smp_efficientnet_has_no_dead_parameters() -> None:
    """smp keeps efficientnet's classifier conv/bn (3 tensors) that forward never uses: dropped."""
    model = create_model("smp:Unet/efficientnet-b0", weights="none")
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith(("encoder._conv_head", "encoder._bn1")) for n in names)
    assert model.dropped == ["_conv_head", "_bn1"]


def _suite_runs() -> list:
    from lesionbench.studies.suite import expand_suite, experiments_dir, load_suite
    names = sorted(p.stem for p in (experiments_dir() / "suites").glob("*.yaml"))
    runs = {}  # one per distinct recipe: training seeds and repeated suites add nothing to build
    for suite in names:
        for run in expand_suite(load_suite(suite)):
            key = run.config.model_dump_json(exclude={"trainer": {"seed"}, "name": True})
            runs.setdefault(key, (run.name, (suite, run.config)))
    return sorted(runs.values())


RUNS = _suite_runs()


@pytest.mark.parametrize(("run", "item"), RUNS, ids=[r for r, _ in RUNS])
def test_every_suite_experiment_builds(run: str, item: tuple) -> None:
    """Model (on the meta device, tiny where it can be), loss, transforms and DataModule config."""
    suite, cfg = item
    options = {**cfg.model.options, **TINY.get(cfg.model.name, {})}
    if accepts_option(cfg.model.name, "weights"):
        options["weights"] = "none"
    model = None
    if cfg.engine == "nnunet":  # nnU-Net builds its own network from its plans (tests/test_nnunet.py)
        assert cfg.nnunet is not None and cfg.num_classes == 1, (suite, run)
    else:
        with torch.device("meta"):
            try:
                model = create_model(cfg.model.name, num_classes=cfg.num_classes, **options)
            except NotImplementedError:  # an encoder that cannot be built on meta (mit_b0)
                pass
    if model is not None:
        build_loss(cfg.loss, model.deep_supervision_weights, model.deep_supervision_downsample_masks)
    cfg.resolved_phases()
    for train in (True, False):
        build_transforms(cfg.dataset.augmentation, 32, train=train)
    dm = SegmentationDataModule.from_experiment(cfg)
    assert dm.num_classes in (1, cfg.num_classes), (suite, run)
