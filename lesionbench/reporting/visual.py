"""Visual report of one finished run, in ``<run>/report/`` (paper 001's figures, for every run).

Curves (loss and Dice per epoch, phases marked), a grid of test images with ground truth,
prediction and overlay, error maps (false positives / false negatives in two colours) and
the best and worst test images by Dice (from ``per_image.csv``), plus an ``index.md``
that embeds them. At most 8 images per grid, so a report takes seconds.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lesionbench.inference.load import load_run
from lesionbench.inference.predict import FN_COLOUR, FP_COLOUR, TP_COLOUR, error_map, overlay, predict_array
from lesionbench.io import atomic_write_text
from lesionbench.reporting.plots import _save, read_curves

log = logging.getLogger(__name__)
MAX_GRID = 8
N_EXTREMES = 3


def _curves(run: Path, out: Path, phase_names: list[str]) -> Path | None:
    csv_path = run / "logs" / "metrics.csv"
    if not csv_path.is_file():
        return None
    curves = read_curves(csv_path)
    panels = [("loss", [c for c in curves.columns if c.endswith("loss")]),
              ("Dice", [c for c in curves.columns if c.endswith("dice")])]
    panels = [(t, [c for c in cols if curves[c].notna().any()]) for t, cols in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig = Figure(figsize=(5 * len(panels), 3.6), layout="constrained")
    starts = curves.loc[curves["segment"] != curves["segment"].shift(), "x"].tolist()
    for i, (title, cols) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        for c in cols:
            s = curves[["x", c]].dropna()
            ax.plot(s["x"], s[c], marker="o", ms=3, label=c)
        for k, x0 in enumerate(starts):
            if k:
                ax.axvline(x0 - 0.5, color="grey", ls=":", lw=1)
            if len(starts) > 1 and k < len(phase_names):
                ax.annotate(phase_names[k], (x0, 1.0), xycoords=("data", "axes fraction"),
                            va="top", fontsize=7, color="grey")
        ax.set(xlabel="epoch (all phases)", ylabel=title, title=f"{title} per epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, out / "curves.png")


def _per_image(run: Path) -> list[tuple[str, float]]:
    path = run / "per_image.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [(r["id"], float(r["dice"])) for r in csv.DictReader(fh) if r.get("dice") not in (None, "")]


def _test_samples(cfg) -> tuple[dict, int]:
    """id -> Sample of the run's test split (empty when the data is not on this machine)."""
    from lesionbench.data import SegmentationDataModule
    try:
        dm = SegmentationDataModule.from_experiment(cfg)
        dm.setup("test")
        return {s.id: s for s in dm.parts["test"]}, dm.layout.mask_threshold
    except Exception as err:  # the report must not fail a finished run
        log.warning("report: test images unavailable (%s); writing curves only", err)
        return {}, 0


def _show(ax, image: np.ndarray, title: str = "") -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def _grid(rows: list[tuple[str, list[tuple[np.ndarray, str]]]], path: Path, legend: bool = False) -> Path:
    ncols = max(len(panels) for _, panels in rows)
    fig = Figure(figsize=(2.2 * ncols, 2.2 * len(rows) + (0.4 if legend else 0)), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (label, panels) in enumerate(rows):
        for c, (img, title) in enumerate(panels):
            _show(axes[r][c], img, f"{label}\n{title}" if c == 0 else title)
    if legend:
        fig.legend(handles=[Patch(color=np.array(c) / 255, label=t) for c, t in
                            ((FP_COLOUR, "false positive"), (FN_COLOUR, "false negative"), (TP_COLOUR, "true positive"))],
                   loc="outside lower center", ncol=3, fontsize=8)
    return _save(fig, path)


def write_run_report(run_dir: str | Path) -> list[Path]:
    """Write ``<run>/report/{curves,samples,errors,best_worst}.png`` and ``index.md``; return the paths."""
    from lesionbench.data.decode import load_pair
    run = Path(run_dir)
    task, cfg = load_run(run)
    out = run / "report"
    written = [p for p in [_curves(run, out, [p.name for p in cfg.resolved_phases()])] if p]
    samples, threshold = _test_samples(cfg)
    scores = dict(_per_image(run))
    ranked = sorted((i for i in scores if i in samples), key=lambda i: scores[i])
    cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def item(sid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if sid not in cache:
            image, gt = load_pair(samples[sid], threshold)
            cache[sid] = (image, gt.astype(bool), predict_array(task.model, cfg, image) > 0.5)
        return cache[sid]

    def colour(masks: np.ndarray) -> np.ndarray:
        return overlay(np.zeros((*masks.shape[1:], 3), np.uint8), masks, alpha=1.0)

    def dice(sid: str) -> str:
        return f"Dice {scores[sid]:.3f}" if sid in scores else ""

    grid_ids = list(samples)[:MAX_GRID]
    if grid_ids:
        rows = []
        for sid in grid_ids:
            image, gt, pred = item(sid)
            rows.append((sid, [(image, "image"), (colour(gt), "ground truth"), (colour(pred), "prediction"),
                               (overlay(image, pred), f"overlay {dice(sid)}")]))
        written.append(_grid(rows, out / "samples.png"))
        rows = [(sid, [(item(sid)[0], "image"), (error_map(item(sid)[2].any(0), item(sid)[1].any(0)), dice(sid))])
                for sid in grid_ids]
        written.append(_grid(rows, out / "errors.png", legend=True))
    if ranked:
        n = min(N_EXTREMES, len(ranked) // 2 or 1)
        picks = [("best", s) for s in ranked[::-1][:n]] + [("worst", s) for s in ranked[:n]]
        rows = []
        for label, sid in picks:
            image, gt, pred = item(sid)
            rows.append((f"{label}: {sid}", [(image, dice(sid)), (overlay(image, pred), "prediction"),
                                             (error_map(pred.any(0), gt.any(0)), "errors")]))
        written.append(_grid(rows, out / "best_worst.png", legend=True))
    lines = [f"# {run.name}: visual report", "",
             f"Model `{cfg.model.name}` on `{cfg.dataset.name}` ({cfg.dataset.image_size} px).", ""]
    lines += [f"![{p.stem}]({p.name})\n" for p in written]
    written.append(atomic_write_text(out / "index.md", "\n".join(lines)))
    return written
