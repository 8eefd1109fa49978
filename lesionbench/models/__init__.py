"""Models: registry name -> ``SegmentationModel`` returning logits (a list when deeply supervised).

Public API: ``create_model``, ``list_models``, ``register_model``, ``ModelInfo``,
``SegmentationModel``, ``freeze``, ``unfreeze``, ``count_params``, ``save_pretrained``,
``load_pretrained``, ``load_encoder_weights``, ``save_encoder_weights``.
"""

import lesionbench.imports  # noqa: F401 - loads timm without wandb, before smp does
from lesionbench.models.base import SegmentationModel, count_params, freeze, unfreeze
from lesionbench.models.registry import ModelInfo, create_model, list_models, model_names, register_model
from lesionbench.models.weights import (
    load_encoder_weights,
    load_pretrained,
    save_encoder_weights,
    save_pretrained,
)

__all__ = [
    "ModelInfo", "SegmentationModel", "count_params", "create_model", "freeze", "list_models",
    "load_encoder_weights", "load_pretrained", "model_names", "register_model", "save_encoder_weights",
    "save_pretrained", "unfreeze",
]
