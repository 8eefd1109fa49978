"""FCT decoder on a ResNet-50 encoder (paper 000, DermSeg; FCT: Tragakis et al., WACV 2023).

Built from the write-up and the facts of the authors' TensorFlow code:
- taps relu(conv1) 112x112x64, layer1..layer4 -> 1x1 conv projections to 16/32/64/128/384
  (plain conv with bias, no activation: the write-up says only "1x1 proj");
- an FCT block on the 7x7x384 bottleneck, then decoder blocks 6-9 (128/64/32/16 ch):
  LayerNorm -> nearest upsample x2 -> 2x2 conv (ReLU) -> concat [skip, x] -> two 3x3 convs
  (ReLU) -> dropout 0.3 -> FCT block;
- FCT block: ConvAttention (q, k, v = depthwise 3x3 conv without bias + LayerNorm, k/v with
  stride 2; 2 heads with key size = channels, as Keras ``MultiHeadAttention(2, c)``) ->
  StochasticDepth -> 3x3 conv (ReLU) -> + input; LayerNorm -> Wide-Focus -> StochasticDepth
  -> + residual. The TF code uses stochastic depth rate 0.0; ``drop_path`` sets it.
- heads after blocks 7, 8, 9: upsample x2 -> LayerNorm -> two 3x3 convs (ReLU) -> 1x1 conv,
  at 56, 112, 224 for a 224 input. Coarse heads stay at their own size and train against the
  mask subsampled to it (``deep_supervision_downsample_masks``; the TF code's generator yields
  ``y[:, ::4, ::4], y[:, ::2, ::2], y``); loss weights [0.14, 0.29, 0.57]; eval uses the last head.
Why not ``nn.MultiheadAttention``: its per-head size is embed_dim / heads, while FCT's heads
each have key size = channels (projection to heads x channels), so the projections are written
out and the product uses ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from lesionbench.models.base import SegmentationModel
from lesionbench.models.encoders import ResNetEncoder
from lesionbench.models.registry import register_model
from lesionbench.models.weights import DEFAULT_WEIGHTS


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW map (Keras ``LayerNormalization()`` on NHWC)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def conv_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    """Keras ``Conv2D(padding="same", activation="relu")``; even kernels pad right/bottom as TF does."""
    if k % 2:
        return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True))
    return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(cin, cout, k), nn.ReLU(inplace=True))


class ConvAttention(nn.Module):
    """CvT-style attention: convolutional q/k/v projections, k and v at half resolution."""

    def __init__(self, c: int, heads: int = 2, stride_kv: int = 2) -> None:
        super().__init__()
        self.heads, self.c = heads, c

        def proj(stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), LayerNorm2d(c))
        self.conv_q, self.conv_k, self.conv_v = proj(1), proj(stride_kv), proj(stride_kv)
        self.q, self.k, self.v = (nn.Linear(c, heads * c) for _ in range(3))
        self.out = nn.Linear(heads * c, c)

    def _split(self, t: Tensor, lin: nn.Linear) -> Tensor:
        b = t.shape[0]
        return lin(t.flatten(2).transpose(1, 2)).view(b, -1, self.heads, self.c).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = self._split(self.conv_q(x), self.q)
        k = self._split(self.conv_k(x), self.k)
        v = self._split(self.conv_v(x), self.v)
        o = F.scaled_dot_product_attention(q, k, v)  # B x heads x HW x c, scale 1/sqrt(c)
        return self.out(o.transpose(1, 2).reshape(b, h * w, -1)).transpose(1, 2).view(b, c, h, w)


class WideFocus(nn.Module):
    """Parallel dilation-1 and dilation-2 3x3 convs (GELU, dropout 0.1), summed, 3x3 conv."""

    def __init__(self, c: int, p: float = 0.1) -> None:
        super().__init__()
        def br(d: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c, c, 3, padding="same", dilation=d), nn.GELU(), nn.Dropout(p))
        self.d1, self.d2, self.fuse = br(1), br(2), br(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(self.d1(x) + self.d2(x))


class FCTBlock(nn.Module):
    """ConvAttention + residual, then LayerNorm + Wide-Focus + residual."""

    def __init__(self, c: int, heads: int = 2, drop_path: float = 0.0) -> None:
        super().__init__()
        self.attn = ConvAttention(c, heads)
        self.sd1 = StochasticDepth(drop_path, "row")
        self.conv = conv_relu(c, c)
        self.norm = LayerNorm2d(c, eps=1e-5)
        self.wide_focus = WideFocus(c)
        self.sd2 = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor) -> Tensor:
        x2 = self.conv(self.sd1(self.attn(x))) + x
        return self.sd2(self.wide_focus(self.norm(x2))) + x2


class FCTDecoderBlock(nn.Module):
    """Blocks 6-9: LayerNorm, upsample, 2x2 conv, concat skip, two 3x3 convs, dropout, FCT block."""

    def __init__(self, cin: int, skip: int, cout: int, heads: int, drop_path: float) -> None:
        super().__init__()
        self.norm = LayerNorm2d(cin, eps=1e-5)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv_relu(cin, cout, 2))
        self.convs = nn.Sequential(conv_relu(skip + cout, cout), conv_relu(cout, cout), nn.Dropout(0.3))
        self.fct = FCTBlock(cout, heads, drop_path)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(self.norm(x))
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.fct(self.convs(torch.cat([skip, x], 1)))


class FCTDecoder(nn.Module):
    """1x1 projections of the five taps, bottleneck FCT block, decoder blocks 6-9."""

    def __init__(self, enc_ch: list[int], proj: tuple[int, ...] = (16, 32, 64, 128, 384),
                 heads: int = 2, drop_path: float = 0.0) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(i, o, 1) for i, o in zip(enc_ch, proj, strict=False))
        self.bottleneck = FCTBlock(proj[4], heads, drop_path)
        self.blocks = nn.ModuleList(
            FCTDecoderBlock(proj[i + 1], proj[i], proj[i], heads, drop_path) for i in (3, 2, 1, 0))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        s1, s2, s3, s4, s5 = (p(f) for p, f in zip(self.proj, feats, strict=False))
        x = self.bottleneck(s5)
        outs = []
        for block, skip in zip(self.blocks, (s4, s3, s2, s1), strict=False):
            x = block(x, skip)
            outs.append(x)
        return outs[1:]  # blocks 7, 8, 9 feed the deep-supervision heads


class DSHead(nn.Sequential):
    """Upsample x2 -> LayerNorm -> two 3x3 convs (ReLU) -> 1x1 conv to logits."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), LayerNorm2d(c, eps=1e-5),
                         conv_relu(c, c), conv_relu(c, c), nn.Conv2d(c, num_classes, 1))


class DSHeads(nn.ModuleList):
    def forward(self, feats: list[Tensor]) -> list[Tensor]:  # type: ignore[override]
        return [head(f) for head, f in zip(self, feats, strict=False)]


class FCTResNet(SegmentationModel):
    """ResNet encoder + FCT decoder; stages encoder, encoder.conv1..conv5, decoder, head."""

    deep_supervision_weights = [0.14, 0.29, 0.57]
    deep_supervision_downsample_masks = True  # the TF code feeds y[::4, ::4], y[::2, ::2], y

    def __init__(self, num_classes: int = 1, weights: str = DEFAULT_WEIGHTS, depth: int = 50,
                 heads: int = 2, drop_path: float = 0.0,
                 channels: tuple[int, ...] = (16, 32, 64, 128, 384)) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(depth, weights)
        self.decoder = FCTDecoder(self.encoder.channels, tuple(channels), heads, drop_path)
        self.head = DSHeads(DSHead(c, num_classes) for c in channels[2::-1])

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"last": self.decoder.blocks[-1], "bottleneck": self.decoder.bottleneck}


@register_model(source="paper 000", input_size=224, heads=3, encoder="torchvision:resnet50")
def fct_resnet50(num_classes: int = 1, weights: str = DEFAULT_WEIGHTS, heads: int = 2,
                 drop_path: float = 0.0) -> FCTResNet:
    """ResNet-50 encoder + FCT decoder with three deep-supervision heads (DermSeg)."""
    return FCTResNet(num_classes, weights, 50, heads, drop_path)


@register_model(source="test", input_size=64, heads=3, encoder="torchvision:resnet18")
def test_fct_resnet(num_classes: int = 1, weights: str = "none") -> FCTResNet:
    """ResNet-18 + narrow FCT decoder, for fast tests."""
    return FCTResNet(num_classes, weights, 18, channels=(8, 8, 16, 16, 32))
