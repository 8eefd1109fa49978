"""The numbers of one leaderboard table: experiments aggregated over seeds, ranked by the dataset's
primary metric, with bootstrap CIs over test images and a seed-aware test against the best.

The primary metric is recomputed from each image's counts in per_image.csv (so a pooled metric
gets its own bootstrap); runs written before the counts were stored fall back to the per-image
column of a mean metric (dice, iou).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.data.layouts import LAYOUTS
from lesionbench.reporting.markdown import MISSING
from lesionbench.reporting.runs import RunRecord
from lesionbench.reporting.stats import bootstrap_ci, holm, mean_std, ratio_bootstrap_ci, seed_aware_p
from lesionbench.training.challenge import PRIMARY, PrimaryMetric, primary_metric, ratio
from lesionbench.training.metrics import JACCARD_THRESHOLD, stats_from_rows

METRICS = [("dice", "Dice"), ("iou", "IoU"), ("thresholded_jaccard", "Thr. Jaccard"),
           ("precision", "Precision"), ("recall", "Recall")]
BOUNDARY = [("hd95", "HD95 (px)"), ("assd", "ASSD (px)")]
ALPHA, N_RESAMPLES, CONFIDENCE, CI_SEED = 0.05, 2000, 0.95, 0
_COLUMN = {"dice": "dice", "jaccard": "iou", "thresholded_jaccard": "iou"}  # fallback: per-image column
_MEAN_KEY = {"dice": "dice", "jaccard": "iou", "thresholded_jaccard": "thresholded_jaccard"}  # metrics.json


@dataclass
class Entry:
    """One experiment on one dataset, aggregated over its seeds."""

    experiment: str
    runs: list[RunRecord]
    stats: dict[str, tuple[float, float] | None] = field(default_factory=dict)  # mean ± std over seeds
    cis: dict[str, tuple[float, float] | None] = field(default_factory=dict)  # over test images
    terms: dict[str, tuple[pd.Series, pd.Series]] = field(default_factory=dict)  # run -> primary (num, den)
    verdict: str = MISSING

    @property
    def ci(self) -> tuple[float, float] | None:
        return self.cis.get("dice")


def metric_for(dataset: str) -> PrimaryMetric:
    """The dataset's primary metric; mean Dice for a dataset this version does not know."""
    return primary_metric(dataset) if dataset in LAYOUTS else PRIMARY["dice"]


def primary_terms(rec: RunRecord, metric: PrimaryMetric) -> tuple[pd.Series, pd.Series] | None:
    """Per-image (num, den) of the primary metric from per_image.csv, or None when it cannot be had."""
    df = rec.per_image
    if df is None:
        return None
    try:
        num, den = metric.terms(stats_from_rows(df, LAYOUTS[str(rec.dataset)].class_names))
        return pd.Series(num.numpy(), index=df.index), pd.Series(den.numpy(), index=df.index)
    except KeyError:  # no counts stored (an older run): a mean metric still has its per-image column
        column = _COLUMN.get(metric.name)
        if metric.pooled or column not in df.columns:
            return None
        v = df[column].astype(float)
        if metric.name == "thresholded_jaccard":
            v = v.where(v >= JACCARD_THRESHOLD, 0.0)
        return v, pd.Series(1.0, index=df.index)


def _number(v: Any) -> float | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
    return float(v) if ok else None


def _seed_primary(rec: RunRecord, metric: PrimaryMetric, terms: tuple[pd.Series, pd.Series] | None) -> float | None:
    challenge = rec.metrics.challenge if rec.metrics else None
    if challenge is not None and challenge.metric == metric.name and _number(challenge.value) is not None:
        return float(challenge.value)  # what the test loop wrote
    if terms is not None:
        return ratio(float(terms[0].sum()), float(terms[1].sum()))
    return _number(rec.metrics.per_image.get(_MEAN_KEY.get(metric.name, ""))) if rec.metrics else None


def _agg(values: list[Any]) -> tuple[float, float] | None:
    vals = [v for v in map(_number, values) if v is not None]
    return mean_std(vals) if vals else None


def _wide(series: list[pd.Series], experiment: str, notes: list[str]) -> pd.DataFrame | None:
    """Seeds side by side, paired by image id; ids missing from some seed are left out, with a note."""
    if not series:
        return None
    wide = pd.concat(series, axis=1)
    complete = wide.dropna()
    if len(complete) < len(wide):
        notes.append(f"{experiment}: {len(wide) - len(complete)} image id(s) not in every seed, left out of CI/test")
    return complete if len(complete) else None


def build_entry(experiment: str, runs: list[RunRecord], metric: PrimaryMetric, notes: list[str]) -> Entry:
    e = Entry(experiment, sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, r.run)))
    for key, _ in METRICS + BOUNDARY:
        e.stats[key] = _agg([r.metrics.per_image.get(key) if r.metrics else None for r in e.runs])
        if key == "thresholded_jaccard" and e.stats[key] is None:
            e.stats[key] = _agg([_seed_primary(r, PRIMARY[key], primary_terms(r, PRIMARY[key])) for r in e.runs])
    for r in e.runs:
        if (t := primary_terms(r, metric)) is not None:
            e.terms[r.run] = t
    e.stats["primary"] = _agg([_seed_primary(r, metric, e.terms.get(r.run)) for r in e.runs])
    for key, _ in [("dice", ""), *BOUNDARY]:
        wide = _wide([r.per_image[key].astype(float).rename(r.run) for r in e.runs
                      if r.per_image is not None and key in r.per_image], experiment, notes if key == "dice" else [])
        e.cis[key] = None if wide is None else bootstrap_ci(wide.mean(axis=1).to_numpy(), N_RESAMPLES,
                                                            CONFIDENCE, CI_SEED)
    num = _wide([t[0].rename(run) for run, t in e.terms.items()], experiment, [])
    den = _wide([t[1].rename(run) for run, t in e.terms.items()], experiment, [])
    e.cis["primary"] = None if num is None or den is None else ratio_bootstrap_ci(
        num.mean(axis=1).to_numpy(), den.mean(axis=1).to_numpy(), N_RESAMPLES, CONFIDENCE, CI_SEED)
    return e


def _seeds_by_images(e: Entry, ids: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """(num, den) as seeds × images over ``ids``."""
    return (np.stack([t[0].loc[ids].to_numpy(float) for t in e.terms.values()]),
            np.stack([t[1].loc[ids].to_numpy(float) for t in e.terms.values()]))


def rank(entries: list[Entry]) -> tuple[int, bool]:
    """Sort by the primary metric (seed mean), mark each entry against the best with a seed-aware test.

    Returns (number of comparisons, whether any entry had several seeds). A pair is tested only when
    both sides have at least two seeds with per_image.csv: a per-image test on one training run
    mistakes training noise for a difference.
    """
    entries.sort(key=lambda e: (-(e.stats["primary"] or (-np.inf, 0))[0], -(e.stats["dice"] or (-np.inf, 0))[0]))
    best = entries[0]
    best.verdict = "best"
    pairs = []
    for e in entries[1:]:
        ids = _common_ids(best).intersection(_common_ids(e))
        if len(best.terms) < 2 or len(e.terms) < 2 or not len(ids):
            e.verdict = "not tested"
            continue
        pairs.append((e, seed_aware_p(_seeds_by_images(best, ids), _seeds_by_images(e, ids), N_RESAMPLES, CI_SEED)))
    for (e, _), p in zip(pairs, holm([p for _, p in pairs]), strict=True):
        e.verdict = f"≈ best (p={p:.2g})" if p >= ALPHA else f"* (p={p:.2g})"
    return len(pairs), any(len(e.runs) > 1 for e in entries)


def _common_ids(e: Entry) -> pd.Index:
    ids: pd.Index | None = None
    for num, _ in e.terms.values():
        ids = num.index if ids is None else ids.intersection(num.index)
    return ids if ids is not None else pd.Index([])
