"""The cross-dataset table: models trained on one dataset, scored on the others' test sets.

Reads only files: each run's own ``metrics.json`` / ``per_image.csv`` (the in-domain column) and
its ``eval/<dataset>/`` results written by ``lesionbench evaluate`` or a suite's ``cross_eval``.
Cells hold the target dataset's primary (challenge) metric, the mean over seeds with a 95%
CI counting seed and test-image noise (stats.mean_ci), and the number of target images
excluded because the model had seen them in training or validation.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lesionbench.data.layouts import LAYOUTS
from lesionbench.errors import LesionBenchError
from lesionbench.metrics.challenge import primary_metric
from lesionbench.metrics.scores import stats_from_rows
from lesionbench.reporting.markdown import MISSING, esc, table
from lesionbench.reporting.stats import mean_ci
from lesionbench.runfolder import METRICS, RunFolderError, read_eval_metrics, read_metrics, read_per_image

log = logging.getLogger(__name__)

OWN = "own test"


def primary_per_image(dataset: str, rows: pd.DataFrame) -> tuple[str, np.ndarray]:
    """(metric name, per-image values) of a binary dataset's ranking metric (metrics/challenge.py),
    recomputed from the per-image counts in per_image.csv."""
    metric = primary_metric(dataset)
    if metric.pooled:
        raise LesionBenchError(f"{dataset}: its primary metric {metric.name} is pooled over images, "
                               "not a mean of per-image values; the cross-dataset table covers binary datasets")
    num, den = metric.terms(stats_from_rows(rows, LAYOUTS[dataset].class_names))
    return metric.name, (num / den).numpy()


@dataclass
class Cell:
    """One (model, target) cell: per-seed per-image values, and what was excluded."""

    metric: str = ""
    seeds: dict[int, pd.Series] = field(default_factory=dict)  # seed -> values indexed by image id
    excluded: list[tuple[int, int]] = field(default_factory=list)  # (excluded, of) per seed

    def add(self, seed: int, dataset: str, rows: pd.DataFrame, excluded: tuple[int, int] | None = None) -> None:
        self.metric, values = primary_per_image(dataset, rows)
        self.seeds[seed] = pd.Series(values, index=rows["id"].astype(str))
        if excluded is not None:
            self.excluded.append(excluded)

    def summary(self) -> tuple[float, float, float] | None:
        """(mean over seeds, CI low, CI high) on the images every seed scored."""
        if not self.seeds:
            return None
        common = sorted(set.intersection(*(set(s.index) for s in self.seeds.values())))
        if not common:
            return None
        grid = np.stack([s.loc[common].to_numpy(float) for s in self.seeds.values()])  # seeds × images
        mean, low, high = mean_ci(grid, np.ones_like(grid))  # seed and image noise, as the leaderboard's CIs
        return float(mean), float(max(low, 0.0)), float(min(high, 1.0))


def _rows(folder: Path) -> pd.DataFrame:
    """per_image.csv through the contract's row model."""
    return pd.DataFrame([r.model_dump() for r in read_per_image(folder)])


def collect(suite_dir: Path) -> dict[tuple[str, str], dict[str, Cell]]:
    """{(model label, training dataset): {target dataset or OWN: Cell}} for runs with an eval/ folder."""
    grid: dict[tuple[str, str], dict[str, Cell]] = defaultdict(lambda: defaultdict(Cell))
    for evals in sorted(Path(suite_dir).glob("*/eval")):
        run_dir = evals.parent
        try:
            own, own_rows = read_metrics(run_dir), _rows(run_dir)
        except RunFolderError as err:  # the leaderboard lists broken runs; this table leaves them out
            log.warning("generalisation table: %s left out (%s)", run_dir.name, err)
            continue
        key = (own.experiment.removeprefix(f"{own.dataset}_"), own.dataset)
        grid[key][OWN].add(own.seed, own.dataset, own_rows)
        for target in sorted(p for p in evals.iterdir() if (p / METRICS).is_file()):
            try:
                meta, rows = read_eval_metrics(target), _rows(target)
            except RunFolderError as err:
                log.warning("generalisation table: %s left out (%s)", target, err)
                continue
            grid[key][meta.dataset].add(own.seed, meta.dataset, rows, (meta.excluded.count, meta.excluded.of))
    return grid


def section(suite_dir: str | Path, make_plot: bool = True) -> list[str]:
    """Markdown lines of the cross-dataset table (empty when the suite evaluated nothing across)."""
    suite = Path(suite_dir)
    grid = collect(suite)
    if not grid:
        return []
    targets = sorted({t for cells in grid.values() for t in cells if t != OWN})
    rows, values, excluded = [], {}, {}
    for (model, source), cells in sorted(grid.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        row = [esc(model), source]
        for target in [OWN, *targets]:
            cell = cells.get(target)
            stat = cell.summary() if cell is not None and target != source else None
            values[(model, source, target)] = stat[0] if stat else np.nan
            row.append(MISSING if stat is None else
                       f"{stat[0]:.4f} [{stat[1]:.3f}, {stat[2]:.3f}] ({cell.metric})")
            if cell is not None and cell.excluded:
                excluded[(source, target)] = cell.excluded[0]
        rows.append(row)
    lines = ["## Generalisation across datasets", "",
             "Each model trained on one dataset (its own test split in the first column) and scored on the "
             "other datasets' test splits with their primary metric. Cells: mean over seeds "
             "[95% CI counting seed-to-seed and test-image noise: t interval, Satterthwaite degrees of freedom].", ""]
    lines += table(rows, ["Model", "Trained on", OWN, *targets]) + [""]
    if excluded:
        lines += ["Images excluded from a target test set because the model saw them in training or validation "
                  "(same ISIC id or identical bytes):", ""]
        lines += [f"- {src} → {tgt}: {n} of {of} excluded" for (src, tgt), (n, of) in sorted(excluded.items())]
        lines += [""]
    if make_plot:
        path = _plot(values, targets, suite / "plots" / "generalisation.png")
        if path is not None:
            lines += [f"![generalisation]({path.relative_to(suite).as_posix()})", ""]
    return lines


def _plot(values: dict[tuple[str, str, str], float], targets: list[str], out: Path) -> Path | None:
    """A heat map: rows model (trained on), columns own test + targets."""
    from matplotlib.figure import Figure

    from lesionbench.reporting.plots import _save

    rows = sorted({(m, s) for m, s, _ in values}, key=lambda x: (x[1], x[0]))
    cols = [OWN, *targets]
    data = np.array([[values.get((m, s, t), np.nan) for t in cols] for m, s in rows])
    if np.isnan(data).all():
        return None
    fig = Figure(figsize=(1.6 * len(cols) + 3, 0.45 * len(rows) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), labels=cols)
    ax.set_yticks(range(len(rows)), labels=[f"{m} ({s})" for m, s in rows])
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, label="primary metric (mean over seeds)")
    ax.set_title("Generalisation: trained on (rows) → tested on (columns)")
    return _save(fig, out)
