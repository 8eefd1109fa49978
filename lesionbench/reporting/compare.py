"""The numbers of one leaderboard table: experiments aggregated over seeds, ranked by the dataset's
primary metric, with intervals that count seed and image noise, the whole-table test of each row
against rank 1 with its simultaneous gap interval and power (seedtest.py), failed seeds named, and
the ranking's stability under resampling (see stats.py and seedtest.py for each method and why).

The primary metric is recomputed from each image's counts in per_image.csv (so a pooled metric
gets its own interval); runs written before the counts were stored fall back to the per-image
column of a mean metric (dice, iou).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lesionbench.data.layouts import LAYOUTS
from lesionbench.metrics.challenge import PRIMARY, PrimaryMetric, primary_metric, ratio
from lesionbench.metrics.scores import JACCARD_THRESHOLD, stats_from_rows
from lesionbench.reporting.runs import RunRecord
from lesionbench.reporting.seedtest import (
    collapsed,
    detectable_gap,
    outlier_seeds,
    rank1_of_equal_models,
    seeds_needed,
    simultaneous_p,
    versus_best,
)
from lesionbench.reporting.stats import mean_ci, mean_std, median_kendall_tau, rank_bootstrap
from lesionbench.suitefolder import Interval

METRICS = [("dice", "Dice"), ("iou", "IoU"), ("thresholded_jaccard", "Thr. Jaccard"),
           ("precision", "Precision"), ("recall", "Recall")]
BOUNDARY = [("hd95", "HD95 (px)"), ("assd", "ASSD (px)")]
ALPHA, CONFIDENCE, POWER, RANK_RESAMPLES, RANK_SEED = 0.05, 0.95, 0.8, 1000, 0
_COLUMN = {"dice": "dice", "jaccard": "iou", "thresholded_jaccard": "iou"}  # fallback: per-image column
_MEAN_KEY = {"dice": "dice", "jaccard": "iou", "thresholded_jaccard": "thresholded_jaccard"}  # metrics.json


@dataclass
class Entry:
    """One experiment on one dataset, aggregated over its seeds, with its verdict once ranked."""

    experiment: str
    runs: list[RunRecord]
    stats: dict[str, tuple[float, float] | None] = field(default_factory=dict)  # mean ± std over seeds
    intervals: dict[str, Interval | None] = field(default_factory=dict)  # primary, dice, iou, hd95, assd
    terms: dict[str, tuple[pd.Series, pd.Series]] = field(default_factory=dict)  # run -> primary (num, den)
    seed_scores: list[float] = field(default_factory=list)  # the primary metric of each seed
    verdict: str = "not_tested"
    reason: str | None = None
    p_values: dict[str, float | None] = field(default_factory=dict)
    rank_probabilities: list[float] = field(default_factory=list)
    gap: tuple[float, float, float] | None = None  # rank 1 minus this row: (estimate, simultaneous low, high)
    failed: dict[str, str] = field(default_factory=dict)  # run -> why it is a failed training


@dataclass
class TableStats:
    """What a whole table's verdicts rest on (its footer)."""

    comparisons: int = 0
    detectable: float | None = None
    detectable_note: str = ""
    kendall_tau: float | None = None
    rank_resamples: int = 0
    rows_tested: int = 0
    seeds: int = 0  # the median seeds of the tested rows
    pooled_sd: float | None = None
    detectable_sd: float | None = None  # the same in seed-SD units
    seeds_for: dict[str, int | None] = field(default_factory=dict)  # "2 SDs" -> seeds per row for 80% power
    rank1_null: tuple[float, float] | None = None  # equal models: the leader's P(rank 1), median and 90th pct


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


def _interval(stat: tuple[float, float] | None, num: pd.DataFrame | None, den: pd.DataFrame | None,
              bounds: tuple[float, float] = (0.0, 1.0)) -> Interval | None:
    """Mean ± SD over seeds and the interval of stats.mean_ci (seeds × images), clipped to the metric's range."""
    if stat is None:
        return None
    n_seeds = 0 if num is None else num.shape[1]
    iv = Interval(mean=stat[0], std=stat[1] if n_seeds > 1 else None)
    if num is None or den is None or not np.all(np.isfinite(num.to_numpy(float))):
        return iv
    _, low, high = mean_ci(num.to_numpy(float).T, den.to_numpy(float).T, CONFIDENCE)
    lo_bound, hi_bound = bounds
    iv.low, iv.high = float(max(low, lo_bound)), float(min(high, hi_bound))  # the true mean lies in the range
    iv.includes = "seeds and images" if n_seeds > 1 else "images only"
    return iv


def build_entry(experiment: str, runs: list[RunRecord], metric: PrimaryMetric, notes: list[str]) -> Entry:
    e = Entry(experiment, sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, r.run)))
    for key, _ in METRICS + BOUNDARY:
        e.stats[key] = _agg([r.metrics.per_image.get(key) if r.metrics else None for r in e.runs])
        if key == "thresholded_jaccard" and e.stats[key] is None:
            e.stats[key] = _agg([_seed_primary(r, PRIMARY[key], primary_terms(r, PRIMARY[key])) for r in e.runs])
    for r in e.runs:
        if (t := primary_terms(r, metric)) is not None:
            e.terms[r.run] = t
    e.seed_scores = [v for v in (_seed_primary(r, metric, e.terms.get(r.run)) for r in e.runs) if v is not None]
    e.stats["primary"] = mean_std(e.seed_scores) if e.seed_scores else None
    nsd = [r.metrics.per_image.get("nsd") if r.metrics else None for r in e.runs]
    e.stats["nsd"] = _agg(nsd) if all(v is not None for v in nsd) else None  # a part of the seeds: not shown
    if e.stats["nsd"] is None and any(v is not None for v in nsd):
        notes.append(f"{experiment}: NSD recorded for {sum(v is not None for v in nsd)} of {len(nsd)} seeds (runs made "
                     "before it was computed have none), so its NSD column is left empty")
    for key in ("dice", "iou", "nsd", *[k for k, _ in BOUNDARY]):
        wide = _wide([r.per_image[key].astype(float).rename(r.run) for r in e.runs
                      if r.per_image is not None and key in r.per_image and r.per_image[key].notna().all()],
                     experiment, notes if key == "dice" else [])
        bounds = (0.0, np.inf) if key in dict(BOUNDARY) else (0.0, 1.0)
        e.intervals[key] = _interval(e.stats[key], wide, None if wide is None else wide * 0 + 1, bounds)
        if key == "nsd" and e.stats["nsd"] is None:
            e.intervals[key] = None
    num = _wide([t[0].rename(run) for run, t in e.terms.items()], experiment, [])
    den = _wide([t[1].rename(run) for run, t in e.terms.items()], experiment, [])
    e.intervals["primary"] = _interval(e.stats["primary"], num, den)
    return e


def _test_ids(e: Entry) -> frozenset[str] | None:
    """The test images every seed of ``e`` was scored on (None without per_image.csv)."""
    ids = [frozenset(num.index) for num, _ in e.terms.values()]
    return frozenset.intersection(*ids) if ids else None


def _collapse(rec: RunRecord) -> str | None:
    """'empty' / 'full' when the run's masks are empty (full) on nearly every test image (seedtest.collapsed)."""
    df = rec.per_image
    layout = LAYOUTS.get(str(rec.dataset))
    if df is None or layout is None:
        return None
    try:
        counts = stats_from_rows(df, layout.class_names).numpy().reshape(-1, 4)  # (image, class) × tp fp fn tn
    except KeyError:  # an older run without counts
        return None
    tp, fp, fn, tn = counts.T
    return collapsed(tp + fp == 0, fn + tn == 0, tp + fn > 0, fp + tn > 0)


def find_failed_seeds(entries: list[Entry]) -> None:
    """Name each failed training (seedtest.FAILED_RULE) in ``Entry.failed``."""
    scored = [e for e in entries if len(e.seed_scores) == len(e.runs)]
    flags = outlier_seeds([e.seed_scores for e in scored])
    for e in entries:
        e.failed = {}
        for r in e.runs:
            if (how := _collapse(r)) is not None:
                e.failed[r.run] = f"predicted mask {how} on nearly every test image"
    for e, row in zip(scored, flags, strict=True):
        for j, (r, x, far) in enumerate(zip(e.runs, e.seed_scores, row, strict=True)):
            if far and r.run not in e.failed:
                others = e.seed_scores[:j] + e.seed_scores[j + 1:]
                e.failed[r.run] = f"score {x:.4f}, far below its other seeds (median {np.median(others):.4f})"


def rank(entries: list[Entry]) -> TableStats:
    """Sort by the primary metric (seed mean), name failed seeds, and give every entry its verdict
    against rank 1 (seedtest.versus_best over every row with two or more seeds on rank 1's test images)."""
    entries.sort(key=lambda e: (-(e.stats["primary"] or (-np.inf, 0))[0], -(e.stats["dice"] or (-np.inf, 0))[0]))
    table = TableStats()
    if not entries:
        return table
    find_failed_seeds(entries)
    best = entries[0]
    best.verdict, best.reason = "best", None
    testable = [e for e in entries if len(e.seed_scores) >= 2 and _test_ids(e) in (None, _test_ids(best))]
    for e in entries[1:]:
        if e not in testable or best not in testable:
            e.verdict = "not_tested"
            e.reason = ("fewer than two seeds" if len(e.seed_scores) < 2 or len(best.seed_scores) < 2
                        else "scored on other test images than rank 1")
    if best in testable and len(testable) > 1:
        _test(testable, table)
    _rank_stability(entries, table)
    return table


def _test(testable: list[Entry], table: TableStats) -> None:
    """The whole-table test (seedtest.versus_best), each row's simultaneous gap, and the table's power."""
    n = max(len(e.seed_scores) for e in testable)
    scores = np.full((len(testable), n), np.nan)
    for i, e in enumerate(testable):
        scores[i, : len(e.seed_scores)] = e.seed_scores
    k = len(testable)
    vs = versus_best(scores, ALPHA, pool=np.array([not e.failed for e in testable]))
    table.comparisons, table.rows_tested = k - 1, k
    best = testable[0]
    for i, e in enumerate(testable[1:], 1):
        p = simultaneous_p(float(vs.gap[i]), float(vs.se[i]), float(vs.df[i]), k)
        e.p_values = {best.experiment: p}
        e.gap = (float(vs.gap[i]), float(vs.low[i]), float(vs.high[i]))
        e.verdict = "significantly_worse" if bool(vs.marked[i]) else "not_significant"
        e.reason = (f"gap {vs.gap[i]:.4f} [{vs.low[i]:.4f}, {vs.high[i]:.4f}], p={p:.2g}, "
                    f"{len(e.seed_scores)} vs {len(best.seed_scores)} seeds, "
                    f"{'pooled' if vs.pooled[i] else 'own (Welch)'} SE")
    table.seeds = sorted(len(e.seed_scores) for e in testable)[k // 2]
    table.pooled_sd = float(vs.pooled_sd)
    table.detectable_sd = detectable_gap(k, table.seeds, ALPHA, POWER)
    table.detectable = table.pooled_sd * table.detectable_sd
    table.seeds_for = {f"{d} SDs": seeds_needed(k, d, ALPHA, POWER) for d in (1, 2, 3)}
    table.detectable_note = (f"simulated power of this test with {k} rows, {table.seeds} seeds each and the pooled "
                             f"seed-to-seed SD {table.pooled_sd:.4f}: {table.detectable_sd:.2f} SDs")


def _rank_stability(entries: list[Entry], table: TableStats) -> None:
    """P(rank = r) for every entry from the bootstrap over seeds and images, and the median Kendall tau."""
    ids = None
    for e in entries:
        t = _test_ids(e)
        ids = t if ids is None else (ids & t if t is not None else ids)
    usable = [e for e in entries if e.terms and ids]
    if len(usable) < 2 or len(usable) < len(entries):
        return
    order = sorted(ids)
    terms = [(np.stack([num.loc[order].to_numpy(float) for num, _ in e.terms.values()]),
              np.stack([den.loc[order].to_numpy(float) for _, den in e.terms.values()])) for e in usable]
    ranks = rank_bootstrap(terms, RANK_RESAMPLES, RANK_SEED)
    seeds = sorted(len(e.terms) for e in usable)[len(usable) // 2]
    table.rank1_null = rank1_of_equal_models(len(usable), seeds) if seeds >= 2 else None
    k = len(usable)
    for i, e in enumerate(usable):
        e.rank_probabilities = [float(np.mean(ranks[:, i] == r)) for r in range(1, k + 1)]
    table.kendall_tau = median_kendall_tau(list(range(1, k + 1)), ranks)
    table.rank_resamples = RANK_RESAMPLES
