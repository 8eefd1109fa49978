"""Data: official archive layouts, splits, cache, augmentation and the LightningDataModule.

Knows files and images, nothing of models or training. Names are imported lazily so that
``lesionbench.data.layouts`` or ``.verify`` do not pull in torch and Lightning. The functions
``verify`` and ``download`` share their module names: import them from their modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SegmentationDataModule": "datamodule", "SegmentationDataset": "datamodule", "collate": "datamodule",
    "resolve_root": "datamodule", "work_dir": "datamodule",
    "LAYOUTS": "layouts", "Layout": "layouts", "Sample": "layouts", "get_layout": "layouts", "scan": "layouts",
    "Leak": "leakage", "find_leaks": "leakage",
    "load_or_create": "splits", "make_split": "splits",
    "RECIPES": "transforms", "build_transforms": "transforms",
    "VerifyReport": "verify",
    "build_cache": "cache", "manifest_hash": "cache",
    "write_all": "synthetic", "ensure": "synthetic", "default_root": "synthetic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lesionbench.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lesionbench.data' has no attribute {name!r}")
