"""Export a trained run: safetensors (+ config.json), ONNX, TorchScript — each verified on export.

Load the safetensors export with the registry in three lines (paper 002's usage, adapted)::

    from lesionbench.models import load_pretrained
    model = load_pretrained("exported/")   # config.json + model.safetensors
    model.eval()

Inputs are ``image_size`` (S×S, or H×W when given as a pair) RGB tensors made by
``lesionbench.data.preprocess.model_input`` (the test loop's own decode, resize and ImageNet
normalisation, described in ``config.json["preprocessing"]``); outputs are logits: ``sigmoid`` then ``> 0.5`` for the mask.
ONNX and TorchScript files take a B×3×H×W float tensor (batch axis dynamic) and return B×C×H×W logits.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from lesionbench.data.decode import hw
from lesionbench.errors import LesionBenchError
from lesionbench.inference.explain import SingleOutput
from lesionbench.inference.load import load_run

Format = Literal["safetensors", "onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("safetensors", "onnx", "torchscript")
TOLERANCE = 1e-4
OPSET = 17


class _AdaptiveAvgPoolAsMatmul(nn.Module):
    """``AdaptiveAvgPool2d`` as two averaging matrices: identical numbers, and exportable when the
    output size does not divide the input (PSPNet bins 3 and 6), which ONNX's pooling cannot do."""

    def __init__(self, output_size: int | tuple[int | None, int | None]) -> None:
        super().__init__()
        self.output_size = output_size if isinstance(output_size, tuple) else (output_size, output_size)

    @staticmethod
    def _matrix(n: int, o: int, like: torch.Tensor) -> torch.Tensor:
        m = torch.zeros(o, n, dtype=like.dtype)
        for i in range(o):
            start, end = (i * n) // o, -((-(i + 1) * n) // o)
            m[i, start:end] = 1.0 / (end - start)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        oh, ow = (s or d for s, d in zip(self.output_size, (h, w), strict=False))
        return self._matrix(h, oh, x) @ x @ self._matrix(w, ow, x).T


def exportable(model: nn.Module) -> nn.Module:
    """A copy that returns one tensor and uses only ops ONNX/ORT run: explicit padding instead of
    ``padding='same'`` (ORT rejects it with dilation) and matmul adaptive pooling."""
    model = copy.deepcopy(model).cpu().eval()
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Conv2d) and mod.padding == "same":
            total = [d * (k - 1) for d, k in zip(mod.dilation, mod.kernel_size, strict=False)]
            if all(t % 2 == 0 for t in total):
                mod.padding = tuple(t // 2 for t in total)
        elif isinstance(mod, nn.AdaptiveAvgPool2d) and name:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, _AdaptiveAvgPoolAsMatmul(mod.output_size))
    return SingleOutput(model).eval()


def _check(name: str, got: torch.Tensor, want: torch.Tensor) -> float:
    diff = float((got.float() - want.float()).abs().max())
    if diff > TOLERANCE:
        raise LesionBenchError(f"{name}: export differs from PyTorch by {diff:.2e} (> {TOLERANCE}); "
                               "report the model name, this export is not safe to use")
    return diff


def export_run(run_dir: str | Path, fmt: Format, out: str | Path) -> Path:
    """Write the run's best model in ``fmt`` into ``out``, check it against PyTorch, return the file.
    An nnU-Net run is refused with one line (its model is nnU-Net's, exported by nnU-Net's tools)."""
    if fmt not in FORMATS:
        raise LesionBenchError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    run = load_run(run_dir)
    model, out = run.require_network("export").eval(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = run.cfg.dataset.image_size
    x = torch.randn(2, 3, *hw(size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = SingleOutput(model)(x)
    if fmt == "safetensors":
        from lesionbench.models import load_pretrained, save_pretrained
        save_pretrained(model, out)
        meta = json.loads((out / "config.json").read_text())
        meta.update(experiment=run.cfg.name, class_names=list(run.class_names), threshold=run.threshold,
                    preprocessing=run.preprocess.describe())
        (out / "config.json").write_text(json.dumps(meta, indent=2, default=str))
        with torch.no_grad():
            _check(str(out), SingleOutput(load_pretrained(out).eval())(x), want)
        return out / "model.safetensors"
    wrapped = exportable(model)
    if fmt == "torchscript":
        path = out / "model.torchscript.pt"
        with torch.no_grad():
            traced = torch.jit.trace(wrapped, x[:1], check_trace=False)
        traced.save(str(path))
        with torch.no_grad():
            _check(str(path), torch.jit.load(str(path))(x), want)
        return path
    import onnxruntime as ort
    path = out / "model.onnx"
    torch.onnx.export(wrapped, (x[:1],), str(path), dynamo=False, opset_version=OPSET,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _check(str(path), torch.from_numpy(session.run(None, {"image": x.numpy()})[0]), want)
    return path
