"""Export round trips: safetensors reload is bit-identical, ONNX (onnxruntime) and TorchScript within 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from runs import fake_run as make_run
from torch import nn

from lesionbench.config import ExperimentConfig
from lesionbench.errors import LesionBenchError


def fake_run(run_dir: Path, model: dict, size: int | list[int]) -> Path:
    """An untrained run folder (exports need no training)."""
    torch.manual_seed(0)
    return make_run(run_dir, ExperimentConfig.model_validate({
        "name": "tiny", "dataset": {"name": "synthetic", "image_size": size}, "model": model,
        "trainer": {"epochs": 1, "batch_size": 2, "accelerator": "cpu", "devices": 1}}))


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_run(tmp_path_factory.mktemp("export") / "run", {"name": "unet", "options": {"base_channels": 8}}, 32)


def _reference(run: Path, x: torch.Tensor) -> torch.Tensor:
    from lesionbench.inference.load import load_run
    with torch.no_grad():
        out = load_run(run).network(x)
    return out[-1] if isinstance(out, list) else out


@pytest.mark.timeout(120)
def test_safetensors_three_line_load_is_identical(unet_run: Path, tmp_path: Path) -> None:
    from lesionbench.inference.export import export_run
    path = export_run(unet_run, "safetensors", tmp_path / "st")
    assert path.name == "model.safetensors"
    meta = json.loads((tmp_path / "st" / "config.json").read_text())
    assert meta["name"] == "unet" and meta["preprocessing"]["image_size"] == 32 and meta["class_names"] == ["lesion"]
    from lesionbench.models import load_pretrained
    model = load_pretrained(tmp_path / "st")
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), _reference(unet_run, x))


@pytest.mark.parametrize("model,size", [({"name": "unet", "options": {"base_channels": 8}}, 32),
                                        ({"name": "test-pspnet", "options": {}}, 64),
                                        ({"name": "unet", "options": {"base_channels": 8}}, [24, 40])])
@pytest.mark.timeout(120)
def test_onnx_and_torchscript_match_pytorch(model: dict, size: int | list[int], tmp_path: Path) -> None:
    """Batch axis is dynamic (exported with 1 image, run with 3); PSPNet's 3 and 6 bins do not divide
    its feature map, which plain ONNX pooling cannot express; a run at H×W (paper 004) exports at H×W."""
    import onnx
    import onnxruntime as ort

    from lesionbench.inference.export import export_run
    run = fake_run(tmp_path / "run", model, size)
    x = torch.randn(3, 3, *([size, size] if isinstance(size, int) else size))
    want = _reference(run, x)
    onnx_path = export_run(run, "onnx", tmp_path / "out")
    assert onnx.load(str(onnx_path)).opset_import[0].version >= 17
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})[0]
    assert got.shape == tuple(want.shape) and np.abs(got - want.numpy()).max() < 1e-4
    ts = torch.jit.load(str(export_run(run, "torchscript", tmp_path / "out")))
    with torch.no_grad():
        assert (ts(x) - want).abs().max() < 1e-4


@pytest.mark.timeout(120)
def test_adaptive_pool_replacement_is_exact() -> None:
    from lesionbench.inference.export import _AdaptiveAvgPoolAsMatmul
    x = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).reshape(2, 3, 8, 10)
    for size in (1, 2, 3, 6, (3, None)):
        assert torch.allclose(_AdaptiveAvgPoolAsMatmul(size)(x), nn.AdaptiveAvgPool2d(size)(x), atol=1e-4)
    # hand-computed: 1×4 row [0, 1, 2, 3] into 3 bins -> [0, 1], [1, 2], [2, 3] -> 0.5, 1.5, 2.5
    row = torch.tensor([[[[0.0, 1.0, 2.0, 3.0]]]])
    assert _AdaptiveAvgPoolAsMatmul((1, 3))(row).flatten().tolist() == [0.5, 1.5, 2.5]


@pytest.mark.timeout(120)
def test_unknown_format(unet_run: Path, tmp_path: Path) -> None:
    from lesionbench.inference.export import export_run
    with pytest.raises(LesionBenchError, match="unknown export format"):
        export_run(unet_run, "tflite", tmp_path)  # type: ignore[arg-type]


@pytest.mark.timeout(120)
def test_dilated_same_padding_runs_in_onnxruntime(tmp_path: Path) -> None:
    """FCT's dilated padding='same' convs: ORT rejects SAME auto-padding with dilation; exportable() fixes it."""
    import onnxruntime as ort

    from lesionbench.inference.export import exportable
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same", dilation=2), nn.ReLU(), nn.Conv2d(4, 1, 3, padding="same"))
    wrapped = exportable(net)
    assert wrapped.model[0].padding == (2, 2) and net[0].padding == "same"  # the original is untouched
    x = torch.randn(2, 3, 16, 16)
    path = tmp_path / "m.onnx"
    torch.onnx.export(wrapped, (x,), str(path), dynamo=False, opset_version=17, input_names=["image"])
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - net(x).numpy()).max() < 1e-5


@pytest.mark.timeout(120)
def test_exported_model_with_documented_preprocessing_equals_predict(unet_run: Path, tmp_path: Path) -> None:
    """config.json names the one preprocessing (data/preprocess.py); following it reproduces predict."""
    from PIL import Image

    from lesionbench.data.preprocess import describe, model_input
    from lesionbench.inference.export import export_run
    from lesionbench.inference.load import load_run
    from lesionbench.metrics.scores import resize_logits_to
    from lesionbench.models import load_pretrained
    export_run(unet_run, "safetensors", tmp_path / "st")
    meta = json.loads((tmp_path / "st" / "config.json").read_text())
    assert meta["preprocessing"] == describe(32)
    image = tmp_path / "x.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(image)
    x, size = model_input(image, meta["preprocessing"]["image_size"])
    with torch.no_grad():
        probs = resize_logits_to(load_pretrained(tmp_path / "st").eval()(x[None]), size)[0].sigmoid().numpy()
    assert size == (70, 90) and np.array_equal(probs, load_run(unet_run).predict(image))
