"""Visual report of one finished run, in ``<run>/report/`` (paper 001's figures, for every run).

Drawn from files only: the masks the test loop scored (``predictions/``), the images it picked
for the report with their ground truth and scores (``report/inputs/``, both written during the
test by training/test_outputs.py) and ``logs/metrics.csv``. No model is loaded and no dataset is
read, so a run folder copied to another machine still draws. A run whose test saved its masks but
no report inputs (an nnU-Net run, or a run from before inputs were saved) gets them once, made as
the test loop makes them from the run's test split and ``per_image.csv``. Figures: the run's curves (the one
``plots/curves.png``), a grid of test images with ground truth, prediction and overlay, error
maps (false positives / false negatives in two colours) and the best and worst test images by
Dice, plus an ``index.md`` that embeds them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from lesionbench.data.decode import load_pair, size_label
from lesionbench.data.drawing import EXTREMES, FN_COLOUR, FP_COLOUR, GRID, TP_COLOUR, error_map, overlay, thumbnail
from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_text
from lesionbench.reporting.plots import _save, plot_run_curves
from lesionbench.runfolder import INPUTS, PREDICTIONS, SAMPLES, mask_files, read_metrics, read_per_image

log = logging.getLogger(__name__)
#: No picks (curves only): what the test loop picks is drawn from data/drawing.py's GRID and EXTREMES.
EMPTY: dict = {"grid": [], "best": [], "worst": [], "scores": {}, "class_names": ["lesion"]}


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


def _masks(folder: Path, names: list[str], size: tuple[int, int]) -> np.ndarray:
    """C×H×W bool masks from their PNGs, resized (nearest) to the thumbnail's W×H ``size``."""
    return np.stack([np.asarray(Image.open(folder / n).convert("L").resize(size, Image.Resampling.NEAREST)) > 127
                     for n in names])


def write_run_report(run_dir: str | Path) -> list[Path]:
    """Write ``<run>/report/{samples,errors,best_worst}.png`` and ``index.md``; return the paths."""
    run = Path(run_dir)
    metrics = read_metrics(run)
    out = run / "report"
    written = [p for p in [plot_run_curves(run)] if p]
    inputs = run / INPUTS
    picked = json.loads((inputs / SAMPLES).read_text()) if (inputs / SAMPLES).is_file() else _rebuild_inputs(run)
    cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def item(sid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, truth, prediction) at the thumbnail's size."""
        if sid not in cache:
            image = np.asarray(Image.open(inputs / f"{sid}.jpg").convert("RGB"))
            names = mask_files(sid, picked["class_names"])
            size = (image.shape[1], image.shape[0])
            cache[sid] = (image, _masks(inputs / "truth", names, size), _masks(run / PREDICTIONS, names, size))
        return cache[sid]

    def colour(masks: np.ndarray) -> np.ndarray:
        return overlay(np.zeros((*masks.shape[1:], 3), np.uint8), masks, alpha=1.0)

    def dice(sid: str) -> str:
        return f"Dice {picked['scores'][sid]:.3f}" if sid in picked["scores"] else ""

    if picked["grid"]:
        rows = []
        for sid in picked["grid"]:
            image, gt, pred = item(sid)
            rows.append((sid, [(image, "image"), (colour(gt), "ground truth"), (colour(pred), "prediction"),
                               (overlay(image, pred), f"overlay {dice(sid)}")]))
        written.append(_grid(rows, out / "samples.png"))
        rows = [(sid, [(item(sid)[0], "image"), (error_map(item(sid)[2].any(0), item(sid)[1].any(0)), dice(sid))])
                for sid in picked["grid"]]
        written.append(_grid(rows, out / "errors.png", legend=True))
    picks = [("best", s) for s in picked["best"]] + [("worst", s) for s in picked["worst"]]
    if picks:
        rows = []
        for label, sid in picks:
            image, gt, pred = item(sid)
            rows.append((f"{label}: {sid}", [(image, dice(sid)), (overlay(image, pred), "prediction"),
                                             (error_map(pred.any(0), gt.any(0)), "errors")]))
        written.append(_grid(rows, out / "best_worst.png", legend=True))
    size = size_label(metrics.image_size) if metrics.image_size else "?"
    lines = [f"# {run.name}: visual report", "",
             f"Model `{metrics.model}` on `{metrics.dataset}` ({size}); images shown at most "
             "512 px on their longest side, masks as the test loop scored them (`predictions/`).", ""]
    lines += [f"![{p.stem}]({p.name if p.parent == out else '../' + p.relative_to(run).as_posix()})\n"
              for p in written]
    written.append(atomic_write_text(out / "index.md", "\n".join(lines)))
    return written


def _rebuild_inputs(run: Path) -> dict:
    """``report/inputs/`` for a run that saved its test masks (``predictions/``) but no report inputs,
    picked and drawn as the test loop does, from the run's test split and ``per_image.csv``; the empty
    pick (curves only) with one warning when that cannot be done here."""
    import yaml

    from lesionbench.config import parse_config
    from lesionbench.data.datamodule import SegmentationDataModule

    try:
        if not (run / PREDICTIONS).is_dir():
            raise LesionBenchError(f"no {PREDICTIONS}/ folder (a run from before test outputs were saved)")
        cfg = parse_config(yaml.safe_load((run / "config.yaml").read_text()), str(run / "config.yaml"))
        scores = {r.id: r.dice for r in read_per_image(run)}
        dm = SegmentationDataModule(cfg.dataset.model_copy(update={"cache": False}), 1, cfg.trainer.seed,
                                    cfg.num_classes)
        dm.setup("test")
    except (OSError, LesionBenchError) as err:
        log.warning("report: %s has no %s and it cannot be made here (%s); writing curves only",
                    run.name, INPUTS / SAMPLES, str(err).splitlines()[0])
        return EMPTY
    samples = [s for s in dm.parts["test"] if s.id in scores]
    order = sorted((s.id for s in samples), key=scores.__getitem__)
    n = min(EXTREMES, len(order) // 2 or 1)
    picked = {"grid": [s.id for s in samples[:GRID]], "best": order[::-1][:n], "worst": order[:n]}
    shown = list(dict.fromkeys(picked["grid"] + picked["best"] + picked["worst"]))
    folder, by_id = run / INPUTS, {s.id: s for s in samples}
    (folder / "truth").mkdir(parents=True, exist_ok=True)
    for sid in shown:
        image, truth = load_pair(by_id[sid], dm.layout.mask_threshold)  # original size, as scored
        thumbnail(image, Image.Resampling.BILINEAR).save(folder / f"{sid}.jpg", quality=90)
        for mask, name in zip(truth, mask_files(sid, dm.class_names), strict=True):
            thumbnail(mask.astype(np.uint8) * 255, Image.Resampling.NEAREST).save(folder / "truth" / name)
    picked.update(metric="dice", scores={k: scores[k] for k in shown}, class_names=list(dm.class_names))
    atomic_write_text(folder / SAMPLES, json.dumps(picked, indent=1))
    return picked
