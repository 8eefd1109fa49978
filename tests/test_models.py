"""Model layer: every registered model (timm-style loop), seed sizes, freezing, weights, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lesionbench.errors import LesionBenchError
from lesionbench.models import (
    count_params,
    create_model,
    freeze,
    list_models,
    load_pretrained,
    model_names,
    save_pretrained,
    unfreeze,
)
from lesionbench.models.registry import accepts_option
from lesionbench.models.weights import save_encoder_weights

torch.set_num_threads(2)
#: Small options so the loop stays fast; full-size seed models are tested once at their size below.
SMALL = {"unet": {"base_channels": 8}, "unet-residual": {"base_channels": 8},
         "unet-attention": {"base_channels": 8, "bilinear": True}, "unetplusplus": {"base_channels": 4},
         "pspnet": {"backbone_features": 32, "aux": True}, "unet-convnext-attention": {"encoder": "convnext_atto"}}
AT_SEED_SIZE = {"fct-resnet50", "resnet50-unet", "mobilenet-unet"}
HAND_BUILT = [n for n in model_names() if not n.startswith("smp:") and n not in AT_SEED_SIZE]
SMP_FEW = ["smp:Unet/resnet18", "smp:Segformer/mit_b0", "smp:PSPNet/resnet18"]


def build(name: str, **kw) -> nn.Module:
    """Offline build: encoder weights 'none' wherever the model takes them."""
    if accepts_option(name, "weights"):
        kw.setdefault("weights", "none")
    return create_model(name, **kw)


@pytest.fixture(scope="module")
def infos():
    return {i.name: i for i in list_models(with_params=False)}


@pytest.mark.parametrize("name", HAND_BUILT + SMP_FEW)
def test_forward_shapes_heads_and_cam(name, infos):
    torch.manual_seed(0)
    model = build(name, num_classes=1, **SMALL.get(name, {}))
    x = torch.randn(2, 3, 64, 64)  # batch 2: pyramid pooling's 1x1 BatchNorm needs it in train mode
    seen = {}
    cams = model.cam_layers()
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: seen.setdefault(k, o)) for k, m in cams.items()]
    model.train()
    with torch.no_grad():
        out = model(x)
    heads = 2 if name == "pspnet" else infos[name].heads if name in infos else 1  # pspnet: aux on
    if heads > 1:
        assert isinstance(out, list) and len(out) == heads
        assert out[-1].shape == (2, 1, 64, 64)
        assert len(model.deep_supervision_weights) == heads
    else:
        assert out.shape == (2, 1, 64, 64) and model.deep_supervision_weights is None
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 1, 64, 64) and torch.isfinite(y).all()
    assert set(seen) == {"last", "bottleneck"} and all(isinstance(v, torch.Tensor) for v in seen.values())
    for h in hooks:
        h.remove()
    enc = {id(p) for p in model.encoder.parameters()}
    assert not enc & {id(p) for m in model.decoder_modules() for p in m.parameters()}


@pytest.mark.parametrize("name", ["test-unet", "test-unetplusplus", "test-fct-resnet", "smp:Unet/resnet18"])
def test_five_classes(name):
    model = build(name, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5, 64, 64)


# ---------------------------------------------------------------- seed models at their sizes
#: Parameter counts measured at the default options (num_classes=1 unless the seed says 5).
PARAMS = {
    "fct-resnet50": 32_868_755, "mobilenet-unet": 6_995_457, "resnet50-unet": 40_918_977,
    "unet": 31_037_633, "unet-residual": 32_436_353, "unet-attention": 31_389_165,
    "unet-convnext-attention": 35_264_938, "unetplusplus": 9_163_428, "pspnet": 3_156_993,
}


def test_parameter_counts_of_registered_models():
    counts = {i.name: i.params for i in list_models() if i.name in PARAMS}
    assert counts == PARAMS


def test_listed_smp_counts_leave_out_modules_that_never_get_a_gradient():
    """``lesionbench models`` once counted smp PSPNet on the meta device, where no module can be
    found dead: 21.4 M parameters for a model that trains 1.5 M (encoder depth 3)."""
    from lesionbench.models.registry import listed_params
    trained = count_params(build("smp:PSPNet/resnet34", weights="none"))
    assert listed_params("smp:PSPNet/resnet34") == trained < 2_000_000


@pytest.mark.parametrize("name,size,shapes", [
    ("fct-resnet50", 224, [(1, 1, 56, 56), (1, 1, 112, 112), (1, 1, 224, 224)]),
    ("mobilenet-unet", 128, [(1, 1, 128, 128)]),
    ("resnet50-unet", 256, [(1, 1, 256, 256)]),
])
def test_paper_models_at_paper_resolution(name, size, shapes):
    model = build(name).train()  # train mode shows every deep-supervision head
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    out = out if isinstance(out, list) else [out]
    assert [tuple(o.shape) for o in out] == shapes


def test_mobilenet_parameter_table_with_freezing():
    model = build("mobilenet-unet")
    table = lambda: (count_params(model), count_params(model, True), count_params(model, False))  # noqa: E731
    assert table() == (6_995_457, 6_995_457, 0)
    freeze(model, ["encoder"])
    assert table() == (6_995_457, 4_771_585, 2_223_872)  # write-up: without fine-tune
    unfreeze(model, ["encoder.stage4"])
    assert table() == (6_995_457, 6_452_929, 542_528)  # write-up: stage 4 fine-tuned
    assert count_params(model.decoder) + count_params(model.head) == 4_771_585


def test_stage_names_and_unknown_stage_error():
    fct = create_model("test-fct-resnet", weights="none")
    assert list(fct.stages()) == ["encoder", "encoder.conv1", "encoder.conv2", "encoder.conv3",
                                  "encoder.conv4", "encoder.conv5", "decoder", "head"]
    assert fct.deep_supervision_weights == [0.14, 0.29, 0.57]
    with pytest.raises(LesionBenchError, match="available stages: encoder, encoder.conv1"):
        freeze(fct, ["encoder.stage9"])


def test_frozen_stage_keeps_weights_and_batchnorm_statistics():
    torch.manual_seed(0)
    model = build("mobilenet-unet")
    freeze(model, "encoder")
    unfreeze(model, "encoder.stage4")
    model.train()
    first_bn = lambda m: next(x for x in m.modules() if isinstance(x, nn.BatchNorm2d))  # noqa: E731
    bn1, bn4 = first_bn(model.encoder.features[1]), first_bn(model.encoder.features[15])  # stage1, stage4
    assert not bn1.training and bn4.training and model.decoder.conv1.bn.training
    before = {k: v.clone() for k, v in model.encoder.features[:14].state_dict().items()}
    w4 = model.encoder.features[17].conv[0][0].weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    opt.step()
    after = model.encoder.features[:14].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running stats
    assert not torch.equal(w4, model.encoder.features[17].conv[0][0].weight)


# ---------------------------------------------------------------- weights
def test_encoder_weights_from_local_files(tmp_path):
    import torchvision
    src = create_model("test-resnet-unet", weights="none")
    with torch.no_grad():
        src.encoder.conv1.weight.fill_(0.5)
        src.encoder.layer4[1].bn2.running_mean.fill_(3.0)
    for suffix in (".pth", ".safetensors"):
        path = save_encoder_weights(src.encoder, tmp_path / f"enc{suffix}")
        model = create_model("test-resnet-unet", weights=str(path))
        assert torch.all(model.encoder.conv1.weight == 0.5)
        assert torch.all(model.encoder.layer4[1].bn2.running_mean == 3.0)
    # a torchvision checkpoint (with its classifier) loads as it is
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    model = create_model("test-resnet-unet", weights=str(tmp_path / "tv.pth"))
    assert torch.equal(model.encoder.layer2[0].conv1.weight, tv.layer2[0].conv1.weight)


def test_encoder_weight_errors(tmp_path):
    with pytest.raises(LesionBenchError, match="not found"):
        create_model("test-resnet-unet", weights=str(tmp_path / "nope.pth"))
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "partial.pth")
    with pytest.raises(LesionBenchError, match="missing keys"):
        create_model("test-resnet-unet", weights=str(tmp_path / "partial.pth"))
    sd = create_model("test-resnet-unet", weights="none").encoder.state_dict()
    sd["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(LesionBenchError, match=r"shape mismatches \(e.g. conv1.weight \(32, 3, 7, 7\)"):
        create_model("test-resnet-unet", weights=str(tmp_path / "shape.pth"))


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import load_file
    torch.manual_seed(0)
    model = create_model("test-unet", num_classes=2).eval()
    save_pretrained(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    again = load_pretrained(tmp_path / "m").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    fresh = create_model("test-unet", num_classes=2)  # paper 002 usage: load_state_dict(load_file(...))
    fresh.load_state_dict(load_file(str(tmp_path / "m" / "model.safetensors")))
    assert torch.equal(fresh.head.weight, model.head.weight)


# ---------------------------------------------------------------- errors and smp
def test_unknown_model_lists_close_matches():
    with pytest.raises(LesionBenchError, match="did you mean unet-attention"):
        create_model("unet-atention")
    with pytest.raises(LesionBenchError, match="unknown option 'depth'.*allowed: base_channels, bilinear"):
        create_model("unet", depth=3)
    with pytest.raises(LesionBenchError, match="Arch one of Unet, UnetPlusPlus"):
        create_model("smp:Unett/resnet18", weights="none")
    with pytest.raises(LesionBenchError, match="close matches: resnet18"):
        create_model("smp:Unet/resnet181", weights="none")


def test_smp_models_share_the_interface():
    model = create_model("smp:linknet/resnet18", weights="none", num_classes=3, unused=None)
    assert model.config() == {"name": "smp:linknet/resnet18", "num_classes": 3, "options": {"weights": "none"}}
    assert {"encoder", "encoder.layer4", "decoder", "head"} <= set(model.stages())
    freeze(model, "encoder")
    assert count_params(model, True) == count_params(model.decoder) + count_params(model.head)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_unetplusplus_modes():
    torch.manual_seed(0)
    model = create_model("test-unetplusplus").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        heads = model.head(model.decoder(model.encoder(x)))
        assert torch.allclose(model(x), (heads[0] + heads[1] + heads[2] + heads[3]) / 4, atol=1e-6)
        fast = create_model("test-unetplusplus", mode="fast")
        fast.load_state_dict(model.state_dict())
        assert torch.equal(fast.eval()(x), heads[3])
    with pytest.raises(LesionBenchError, match="mode must be accurate|fast"):
        create_model("unetplusplus", mode="slow")
