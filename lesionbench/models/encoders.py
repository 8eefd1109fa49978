"""Pretrained encoders behind one interface: ``forward(x) -> list of feature maps`` + named stages.

Why: the library modules keep their own parameter names (torchvision ``conv1``/``layer1``,
``features.N``), so a torchvision/timm state dict loads into ``weights: PATH`` unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from lesionbench.errors import LesionBenchError
from lesionbench.models.pretrained import resolve
from lesionbench.models.weights import load_encoder_weights


class ResNetEncoder(nn.Module):
    """torchvision ResNet without avgpool/fc; taps after relu(conv1) and layer1..layer4.

    ``weights``: imagenet (= IMAGENET1K_V1, see models/pretrained.py), IMAGENET1K_V1/V2, none, a file.
    Stages use the Keras/paper names: conv1 = stem, conv2 = maxpool+layer1, ..., conv5 = layer4.
    """

    def __init__(self, depth: int = 50, weights: str = "imagenet") -> None:
        super().__init__()
        import torchvision.models as tvm
        builders = {18: (tvm.resnet18, tvm.ResNet18_Weights), 34: (tvm.resnet34, tvm.ResNet34_Weights),
                    50: (tvm.resnet50, tvm.ResNet50_Weights), 101: (tvm.resnet101, tvm.ResNet101_Weights)}
        if depth not in builders:
            raise LesionBenchError(f"resnet depth {depth} not supported (use one of {sorted(builders)})")
        fn, _ = builders[depth]
        pre = resolve(f"torchvision:resnet{depth}", weights)
        self.weights_id = pre.id
        net = fn(weights=pre.tag)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if depth >= 50 else 1
        self.channels = [64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        if pre.id.startswith("file:"):
            load_encoder_weights(self, weights)

    def stages(self) -> dict[str, nn.Module]:
        return {"conv1": nn.ModuleList([self.conv1, self.bn1]), "conv2": self.layer1,
                "conv3": self.layer2, "conv4": self.layer3, "conv5": self.layer4}

    def forward(self, x: Tensor) -> list[Tensor]:
        f1 = self.relu(self.bn1(self.conv1(x)))
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        return [f1, f2, f3, f4, self.layer4(f4)]


class MobileNetV2Encoder(nn.Module):
    """torchvision ``mobilenet_v2().features`` split at stride changes (paper 001).

    stage1 = features[:4] (24 ch, /4), stage2 = [4:7] (32, /8), stage3 = [7:14] (96, /16),
    stage4 = [14:] (1280, /32); features[:14] has 542,528 parameters, all features 2,223,872.
    """

    bounds = {"stage1": (0, 4), "stage2": (4, 7), "stage3": (7, 14), "stage4": (14, 19)}
    channels = [24, 32, 96, 1280]

    def __init__(self, weights: str = "imagenet") -> None:
        super().__init__()
        import torchvision.models as tvm
        pre = resolve("torchvision:mobilenet_v2", weights)
        self.weights_id = pre.id
        self.features = tvm.mobilenet_v2(weights=pre.tag).features
        if pre.id.startswith("file:"):
            load_encoder_weights(self, weights)

    def stages(self) -> dict[str, nn.Module]:
        return {name: self.features[a:b] for name, (a, b) in self.bounds.items()}

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for a, b in self.bounds.values():
            for i in range(a, b):
                x = self.features[i](x)
            out.append(x)
        return out


class TimmEncoder(nn.Module):
    """Any timm backbone with ``features_only=True`` (ConvNeXt-Tiny for paper 003); weights by exact tag."""

    def __init__(self, name: str = "convnext_tiny", weights: str = "imagenet") -> None:
        super().__init__()
        import timm
        pre = resolve(f"timm:{name}", weights)
        self.weights_id = pre.id
        try:
            self.model = timm.create_model(pre.tag or name, features_only=True, pretrained=pre.tag is not None)
        except RuntimeError as err:
            raise LesionBenchError(f"timm encoder {name!r}: {err}") from None
        self.channels = list(self.model.feature_info.channels())
        if pre.id.startswith("file:"):
            load_encoder_weights(self, weights)

    def stages(self) -> dict[str, nn.Module]:
        kids = [m for n, m in self.model.named_children() if n.startswith("stages")]
        return {f"stage{i + 1}": m for i, m in enumerate(kids)}

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.model(x))
