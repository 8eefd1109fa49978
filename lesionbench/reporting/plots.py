"""Leaderboard figures: Dice bars with CIs per dataset, training curves per run and overlays.

Uses matplotlib's object API (``Figure`` + Agg canvas), never pyplot, so no global backend
is switched and nothing needs a display. PNGs are written atomically (tmp + os.replace).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_META = {"epoch", "step", "phase"}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_metric_bars(labels: Sequence[str], means: Sequence[float], lows: Sequence[float],
                     highs: Sequence[float], out_path: Path, title: str = "", ylabel: str = "Dice",
                     seeds: Sequence[Sequence[float]] | None = None) -> Path:
    """Horizontal bars of the mean (the ranking metric), best at the top, each seed's score as a dot and the
    interval of the mean (seed and image noise) as whiskers."""
    m = np.asarray(means, float)
    lo = np.nan_to_num(m - np.asarray(lows, float), nan=0.0).clip(min=0)
    hi = np.nan_to_num(np.asarray(highs, float) - m, nan=0.0).clip(min=0)
    fig = Figure(figsize=(7, 0.5 * len(labels) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(labels))[::-1]
    ax.barh(y, m, xerr=np.vstack([lo, hi]), color="#4C72B0", alpha=0.75, capsize=4, ecolor="black")
    for yi, dots in zip(y, seeds or [], strict=False):
        ax.plot(list(dots), [yi] * len(dots), "o", color="#DD8452", markeredgecolor="black", markersize=5, zorder=3)
    ax.set_yticks(y, labels=list(labels))
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{ylabel} (bar: mean over seeds; dots: each seed; whiskers: 95% CI, seeds and images)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out_path)


def plot_rank_blobs(labels: Sequence[str], probabilities: Sequence[Sequence[float]], out_path: Path,
                    title: str = "") -> Path:
    """challengeR's blob plot: x = model (leaderboard order), y = rank, area = how often the bootstrap
    gave the model that rank; a cross marks the median rank."""
    p = np.asarray(probabilities, float)
    k = p.shape[1]
    fig = Figure(figsize=(max(5.0, 0.7 * len(labels) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    for x, row in enumerate(p):
        ranks = np.nonzero(row > 0)[0]
        ax.scatter(np.full(ranks.size, x), ranks + 1, s=600 * row[ranks], color="#4C72B0", alpha=0.7)
        median = int(np.searchsorted(np.cumsum(row), 0.5)) + 1
        ax.plot([x], [median], "x", color="black", markersize=8)
    ax.set_xticks(range(len(labels)), labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(range(1, k + 1))
    ax.set_ylim(k + 0.5, 0.5)
    ax.set_ylabel("rank (1 = best)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, out_path)


def read_curves(csv_path: Path) -> pd.DataFrame:
    """One row per epoch from a Lightning CSVLogger file (train and val rows are separate lines).

    Rows are averaged per (segment, epoch), NaNs skipped; a segment is a phase (column
    ``phase``) or a restart of the epoch counter. ``x`` numbers the epochs across phases.
    """
    df = pd.read_csv(csv_path)
    if "epoch" not in df.columns:
        raise ValueError(f"{csv_path}: no 'epoch' column (expected a Lightning CSVLogger metrics.csv)")
    df = df[df["epoch"].notna()].copy()
    restart = (df["epoch"].diff() < 0).cumsum()
    if "phase" in df.columns:
        phase = df["phase"].ffill().bfill().astype(str)
        df["segment"] = (phase != phase.shift()).cumsum() + restart
        df["phase"] = phase
    else:
        df["segment"] = restart
        df["phase"] = "train"
    numeric = [c for c in df.columns if c not in _META | {"segment"} and pd.api.types.is_numeric_dtype(df[c])]
    out = df.groupby(["segment", "epoch"], sort=True).agg(
        {**{c: "mean" for c in numeric}, "phase": "first"}).reset_index()
    out["x"] = np.arange(len(out))
    return out


def _phase_lines(ax, curves: pd.DataFrame, names: bool = False) -> None:
    """A dotted line where each phase starts (and its name, on one panel, when there are several)."""
    starts = curves.loc[curves["segment"] != curves["segment"].shift(), ["x", "phase"]]
    for k, (_, row) in enumerate(starts.iterrows()):
        if k:
            ax.axvline(row["x"] - 0.5, color="grey", ls=":", lw=1)
        if names and len(starts) > 1 and isinstance(row["phase"], str):
            ax.annotate(row["phase"], (row["x"], 1.0), xycoords=("data", "axes fraction"), va="top", fontsize=7,
                        color="grey")


def plot_run_curves(run_dir: Path) -> Path | None:
    """``<run>/plots/curves.png``, the run's one curves figure (the leaderboard links it, the visual
    report embeds it): losses, validation metrics and learning rate per epoch, phases marked."""
    csv = Path(run_dir) / "logs" / "metrics.csv"
    if not csv.is_file():
        return None
    curves = read_curves(csv)
    losses = [c for c in curves.columns if "loss" in c and curves[c].notna().any()]
    vals = [c for c in curves.columns if c.startswith("val/") and "loss" not in c and curves[c].notna().any()]
    lrs = [c for c in curves.columns if c.startswith("lr") and curves[c].notna().any()]
    panels = [(losses, "loss", False), (vals, "validation metric", False), (lrs, "learning rate", True)]
    panels = [p for p in panels if p[0]]
    if not panels:
        return None
    fig = Figure(figsize=(4.4 * len(panels), 3.6), layout="constrained")
    for i, (cols, ylabel, log) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        for c in cols:
            s = curves[["x", c]].dropna()
            ax.plot(s["x"], s[c], marker="o", ms=3, label=c)
        if log and np.nanmin(curves[cols].to_numpy(float)) > 0:
            ax.set_yscale("log")
        _phase_lines(ax, curves, names=i == 1)
        ax.set_xlabel("epoch (all phases)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(Path(run_dir).name)
    return _save(fig, Path(run_dir) / "plots" / "curves.png")


def plot_overlay(runs: dict[str, Path], out_path: Path, metric: str = "val/dice", title: str = "") -> Path | None:
    """One line per run of ``metric`` per epoch (e.g. every run of one dataset)."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for label, run_dir in sorted(runs.items()):
        csv = Path(run_dir) / "logs" / "metrics.csv"
        if not csv.is_file():
            continue
        curves = read_curves(csv)
        if metric not in curves.columns or curves[metric].isna().all():
            continue
        s = curves[["x", metric]].dropna()
        ax.plot(s["x"], s[metric], label=label, lw=1.4)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("epoch (all phases)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, out_path)
