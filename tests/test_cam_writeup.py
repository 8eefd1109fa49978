"""Paper 004's CAM and Grad-CAM: ``cam-writeup`` / ``gradcam-writeup`` equal the write-up's code."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from lesionbench.config import DatasetConfig, ExperimentConfig
from lesionbench.inference.explain import explain_array, writeup_cam
from lesionbench.models import create_model


def _setup():
    torch.manual_seed(1)
    model = create_model("unet", base_channels=4).eval()
    cfg = ExperimentConfig(dataset=DatasetConfig(image_size=64, augmentation="none"))
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(((image / 255.0 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225))
                         .transpose(2, 0, 1)).float().unsqueeze(0)
    return model, cfg, image, x


def test_cam_writeup_is_the_write_ups_compute_cam() -> None:
    model, cfg, image, x = _setup()
    acts = {}
    model.head.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    output = model(x)  # the write-up's CAM.compute_cam, line by line
    activations = acts["a"].cpu().detach().numpy()
    weights = np.mean(output.cpu().detach().numpy(), axis=(2, 3))
    cam = np.zeros(activations.shape[2:], dtype=np.float32)
    for channel_idx, weight in enumerate(weights[0]):
        cam += weight * activations[0, channel_idx]
    cam = np.maximum(cam, 0)
    cam = cam - np.min(cam)
    cam = cam / np.max(cam)
    assert np.abs(writeup_cam(model, x, model.head) - cam).max() < 1e-5
    heat = explain_array(model, cfg, image, "cam-writeup")  # default layer: the head
    assert np.abs(heat - cam).max() < 1e-4


def test_gradcam_writeup_is_the_write_ups_centre_pixel_gradcam() -> None:
    model, cfg, image, x = _setup()
    layer = model.cam_layers()["last"]  # the write-up hooks the bottleneck; any layer computes alike
    store = {}
    layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    layer.register_full_backward_hook(lambda m, gi, go: store.__setitem__("g", go[0]))
    output = model(x)  # the write-up's GradCAM.compute_cam, line by line
    h, w = output.shape[2:]
    model.zero_grad()
    output[0, 0, h // 2, w // 2].backward()
    gradients, activations = store["g"].detach().numpy(), store["a"].detach().numpy()
    weights = np.mean(gradients, axis=(2, 3))
    cam = np.zeros(activations.shape[2:], dtype=np.float32)
    for i, wt in enumerate(weights[0]):
        cam += wt * activations[0, i]
    cam = np.maximum(cam, 0)
    cam = cam - np.min(cam)
    assert np.max(cam) > 0  # a non-degenerate map
    cam = cam / np.max(cam)
    expected = cv2.resize(cam, (64, 64))  # pytorch-grad-cam resizes to the input, as any overlay must
    heat = explain_array(model, cfg, image, "gradcam-writeup", "last")
    assert np.abs(heat - expected).max() < 1e-3
