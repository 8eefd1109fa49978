"""LesionBench: reproducible, fair comparisons of lesion segmentation architectures."""

__version__ = "0.1.0"
