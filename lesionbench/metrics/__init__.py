"""Metrics: per-image counts and summaries (scores), HD95/ASSD (boundary), each dataset's ranking
metric (challenge). Imports only torch, torchmetrics, numpy/scipy and ``data.layouts``, so the
readers (``score``, ``evaluate``, reporting, every engine) need no training stack."""
