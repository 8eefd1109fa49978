"""LesionBench: reproducible, fair comparisons of lesion segmentation architectures.

Python API: ``lesionbench.load_run(run_folder)`` gives a trained run (any engine) ready to predict
(README, "Python API"). It is imported on first use, so ``import lesionbench`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["LoadedRun", "__version__", "load_run"]

if TYPE_CHECKING:
    from lesionbench.inference.load import LoadedRun, load_run


def __getattr__(name: str) -> Any:
    if name in ("load_run", "LoadedRun"):
        from lesionbench.inference import load

        return getattr(load, name)
    raise AttributeError(f"module 'lesionbench' has no attribute {name!r}")
