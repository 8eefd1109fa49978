"""Third-party imports that need care: timm without its optional ``import wandb``.

timm (which segmentation-models-pytorch imports) tries ``import wandb`` at import time for a
logging helper LesionBench never calls. wandb then loads in every run, CSV or not (1-2 s, and its
own threads and temp folders). W&B is imported only where the wandb logger is built.
"""

from __future__ import annotations

import importlib
import sys


def import_timm() -> None:
    """Import timm with ``wandb`` hidden (timm catches the ImportError); a no-op once either is loaded."""
    if "timm" in sys.modules or "wandb" in sys.modules:
        return
    sys.modules["wandb"] = None  # type: ignore[assignment]  # makes `import wandb` raise ImportError
    try:
        importlib.import_module("timm")
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"] is None:
            del sys.modules["wandb"]


import_timm()  # importing this module is enough: models/ and training/ import it first
