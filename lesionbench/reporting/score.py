"""`lesionbench score TRUTH_DIR PRED_DIR`: score a folder of masks with our metrics, reported with
the figures and JSON keys of the organisers' scorer (``isic-challenge-scoring``), plus HD95/ASSD and
the Normalized Surface Dice (NSD) at the dataset's tolerance.

Files as the ISIC challenges name them: ``<id>_segmentation.png`` (Task 1; ``_Segmentation`` in
2016) or ``<id>_attribute_<name>.png`` (2018 Task 2), one prediction per ground-truth mask under
the same name. Like the organisers' scorer, both are greyscale and binarised at > 128, and a
prediction must have its ground truth's size. Metrics: metrics/scores.py (counts, empty-mask
policy), metrics/challenge.py (pooled Task 2 Jaccard), metrics/boundary.py (HD95, ASSD, NSD and its tolerances).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from lesionbench.data.layouts import IMAGE_EXTS, is_junk
from lesionbench.errors import LesionBenchError
from lesionbench.metrics.boundary import BOUNDARY_POLICY, NSD_POLICY, nsd_tolerance, surface_metrics
from lesionbench.metrics.scores import image_stats, per_image_metrics, thresholded_jaccard

Task = Literal["segmentation", "attribute"]
BINARY_THRESHOLD = 128  # the organisers' scorer: value > 128 is foreground
_SEGMENTATION = re.compile(r"^(?P<id>.+)_segmentation$", re.IGNORECASE)
_ATTRIBUTE = re.compile(r"^(?P<id>.+)_attribute_(?P<attr>[a-z_]+)$")


@dataclass
class ScoreReport:
    """What `score` prints: the organisers' JSON (``result``) and its table form (``text``)."""

    task: Task
    result: dict[str, Any]
    text: str

    def to_json(self) -> str:
        return json.dumps(self.result, indent=2)


def _mask(path: Path, truth: bool = False) -> np.ndarray:
    """A mask binarised at > 128; a ground truth must be binary (0/255 or 0/1) as `data verify` demands."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "1":
                im = im.convert("L")
            if im.mode != "L":
                raise LesionBenchError(f"{path}: not a single-channel (greyscale) mask (mode {im.mode}); "
                                       "save masks as 8-bit greyscale 0/255")
            arr = np.asarray(im)
            if truth:
                values = set(np.unique(arr).tolist())
                if not (values <= {0, 255} or values <= {0, 1}):
                    shown = ", ".join(str(v) for v in sorted(values)[:6]) + (", ..." if len(values) > 6 else "")
                    raise LesionBenchError(f"{path}: ground-truth mask is not binary (values {shown}; expected 0 "
                                           "and 255), as `lesionbench data verify` and `run` also refuse it")
                if values <= {0, 1}:
                    return arr > 0
            return arr > BINARY_THRESHOLD
    except (UnidentifiedImageError, OSError) as err:
        raise LesionBenchError(f"{path}: cannot be read as an image ({err})") from None


def _pairs(truth_dir: Path, pred_dir: Path) -> list[tuple[Path, Path]]:
    for d, what in ((truth_dir, "TRUTH_DIR"), (pred_dir, "PRED_DIR")):
        if not d.is_dir():
            raise LesionBenchError(f"{d}: no such folder ({what})")
    preds: dict[str, list[Path]] = {}
    for p in pred_dir.iterdir():
        if p.is_file() and not is_junk(p):
            preds.setdefault(p.stem, []).append(p)
    pairs = []
    for t in sorted(p for p in truth_dir.iterdir() if p.is_file() and not is_junk(p)):
        found = preds.get(t.stem, [])
        if len(found) != 1:
            raise LesionBenchError(f"{pred_dir}: {'no' if not found else 'more than one'} prediction named "
                                   f"{t.stem}.<{'|'.join(e.lstrip('.') for e in IMAGE_EXTS)}> for {t} "
                                   "(one mask per ground truth, under the same name)")
        pairs.append((t, found[0]))
    if not pairs:
        raise LesionBenchError(f"{truth_dir}: no ground-truth masks (want <id>_segmentation.png or "
                               "<id>_attribute_<name>.png)")
    return pairs


def _load(truth: Path, pred: Path) -> tuple[torch.Tensor, torch.Tensor]:
    t, p = _mask(truth, truth=True), _mask(pred)
    if t.shape != p.shape:
        raise LesionBenchError(f"{pred}: size {p.shape[1]}×{p.shape[0]} but its ground truth {truth.name} is "
                               f"{t.shape[1]}×{t.shape[0]} (predict at the image's original size)")
    return torch.from_numpy(p), torch.from_numpy(t)


def detect_task(truth_dir: Path) -> Task:
    """Task 2 when the ground truth holds attribute masks, else segmentation."""
    return "attribute" if any("_attribute_" in p.stem for p in Path(truth_dir).iterdir()) else "segmentation"


#: The NSD tolerance of ISIC-named folders (every ISIC edition has the same one, metrics/boundary.py).
ISIC_NSD_TOLERANCE = nsd_tolerance("isic2018")


def score_folder(truth_dir: str | Path, pred_dir: str | Path, task: Task | None = None,
                 nsd_tolerance_px: float = ISIC_NSD_TOLERANCE) -> ScoreReport:
    truth_dir, pred_dir = Path(truth_dir), Path(pred_dir)
    pairs = _pairs(truth_dir, pred_dir)
    task = task or detect_task(truth_dir)
    return _segmentation(pairs, nsd_tolerance_px) if task == "segmentation" else _attribute(pairs)


def _segmentation(pairs: list[tuple[Path, Path]], tolerance: float) -> ScoreReport:
    rows, boundary = [], []
    for truth, pred in pairs:
        if not _SEGMENTATION.match(truth.stem):
            raise LesionBenchError(f"{truth}: not named <id>_segmentation.png (use --task attribute for Task 2)")
        p, t = _load(truth, pred)
        per = per_image_metrics(image_stats(p[None, None], t[None, None])[0, 0])
        rows.append({"accuracy": per["accuracy"], "sensitivity": per["recall"], "specificity": per["specificity"],
                     "jaccard": per["iou"], "threshold_jaccard": thresholded_jaccard(per["iou"]), "dice": per["dice"]})
        boundary.append(surface_metrics(p, t, tolerance))
    macro = pd.DataFrame([{k: float(v) for k, v in r.items()} for r in rows]).mean().rename("macro_average")
    hd95, assd, nsd = np.mean(boundary, axis=0)
    overall = float(macro["threshold_jaccard"])
    result = {"overall": overall, "validation": overall, "macro_average": macro.to_dict(),
              "boundary": {"hd95": float(hd95), "assd": float(assd), "policy": BOUNDARY_POLICY,
                           "nsd": float(nsd), "nsd_tolerance": float(tolerance), "nsd_policy": NSD_POLICY}}
    text = (f"Overall: {overall}\nValidation: {overall}\n\nMacro averaged metrics:\n{macro.to_string()}"
            f"\n\nBoundary distances (pixels, mean over images; {BOUNDARY_POLICY}):\n"
            f"{pd.Series({'hd95': float(hd95), 'assd': float(assd)}).to_string()}"
            f"\n\nNormalized Surface Dice at {tolerance:g} px (mean over images; {NSD_POLICY}):\n"
            f"{pd.Series({'nsd': float(nsd)}).to_string()}")
    return ScoreReport("segmentation", result, text)


def _attribute(pairs: list[tuple[Path, Path]]) -> ScoreReport:
    norm: dict[str, list[torch.Tensor]] = {}
    for truth, pred in pairs:
        m = _ATTRIBUTE.match(truth.stem)
        if not m:
            raise LesionBenchError(f"{truth}: not named <id>_attribute_<name>.png (use --task segmentation for Task 1)")
        p, t = _load(truth, pred)
        counts = image_stats(p[None, None], t[None, None])[0, 0]
        norm.setdefault(m["attr"], []).append(counts / counts.sum())  # every image weighs the same
    result: dict[str, Any] = {}
    for attr in sorted(norm):
        per = per_image_metrics(torch.stack(norm[attr]).sum(0))
        result[attr] = {"jaccard": float(per["iou"]), "dice": float(per["dice"])}
    per = per_image_metrics(torch.cat([torch.stack(v) for v in norm.values()]).sum(0))
    result["micro_average"] = {"jaccard": float(per["iou"]), "dice": float(per["dice"])}
    result["overall"] = result["micro_average"]["jaccard"]
    table = pd.DataFrame({k: v for k, v in result.items() if isinstance(v, dict)}).T
    return ScoreReport("attribute", result, f"Overall: {result['overall']}\n\n{table.to_string()}")


#: Suffixes a prediction's file name may carry after the image id (predict's default and ISIC formats).
PRED_SUFFIXES = ("_segmentation", "_Segmentation", "_mask")


def _image_id(path: Path) -> str:
    stem = path.stem
    for suffix in PRED_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def score_dataset_folder(truth_dir: str | Path, pred_dir: str | Path, dataset: str) -> ScoreReport:
    """Score predictions against a dataset's own masks, read as its loader reads them (Kvasir-SEG: RGB JPEG,
    binarised at > 127), paired by image id; every prediction needs a truth, truths without one are not
    scored (and counted). The headline is the dataset's primary metric; per-image values are in the JSON,
    NSD at the dataset's tolerance (``nsd_tolerance`` in the JSON).
    """
    from lesionbench.data.decode import load_mask
    from lesionbench.data.layouts import get_layout
    from lesionbench.metrics.challenge import primary_metric

    layout = get_layout(dataset)
    truth_dir, pred_dir = Path(truth_dir), Path(pred_dir)
    for d, what in ((truth_dir, "TRUTH_DIR"), (pred_dir, "PRED_DIR")):
        if not d.is_dir():
            raise LesionBenchError(f"{d}: no such folder ({what})")
    truths = {_image_id(p): p for p in truth_dir.iterdir() if p.is_file() and not is_junk(p)}
    preds = {_image_id(p): p for p in sorted(pred_dir.iterdir()) if p.is_file() and not is_junk(p)
             and not p.stem.endswith("_overlay")}
    if not preds:
        raise LesionBenchError(f"{pred_dir}: no predicted masks (want <id>_mask.png, <id>_segmentation.png or <id>.png)")
    lone = sorted(set(preds) - set(truths))
    if lone:
        raise LesionBenchError(f"{preds[lone[0]]}: no ground truth for image id {lone[0]} in {truth_dir} "
                               f"({len(lone)} prediction(s) without one); point TRUTH_DIR at the dataset's masks")
    stats, per_image = [], {}
    tolerance = nsd_tolerance(dataset)
    for iid in sorted(preds):
        t = torch.from_numpy(load_mask(truths[iid], layout.mask_threshold).astype(bool))
        p = torch.from_numpy(load_mask(preds[iid], BINARY_THRESHOLD).astype(bool))
        if t.shape != p.shape:
            raise LesionBenchError(f"{preds[iid]}: size {p.shape[1]}×{p.shape[0]} but its ground truth is "
                                   f"{t.shape[1]}×{t.shape[0]} (predict at the image's original size)")
        counts = image_stats(p[None, None], t[None, None])[0]  # 1 class × 4 counts
        stats.append(counts)
        per = per_image_metrics(counts[0])
        hd95, assd, nsd = surface_metrics(p, t, tolerance)
        per_image[iid] = {k: float(per[k]) for k in ("dice", "iou", "precision", "recall", "specificity",
                                                       "accuracy")} | {"hd95": hd95, "assd": assd, "nsd": nsd}
    metric = primary_metric(dataset)
    value = metric.value(torch.stack(stats))
    frame = pd.DataFrame(per_image).T
    result = {"dataset": dataset, "metric": metric.name, "value": value, "definition": metric.definition,
              "n_scored": len(preds), "n_truths": len(truths), "mean": frame.mean().to_dict(),
              "nsd_tolerance": tolerance, "nsd_policy": NSD_POLICY, "per_image": per_image}
    text = (f"{dataset}: {metric.name} {value:.6f} over {len(preds)} image(s) ({metric.definition}); "
            f"{len(truths) - len(preds)} ground truth(s) without a prediction not scored\n\n"
            f"Means over images (nsd at {tolerance:g} px):\n{frame.mean().to_string()}")
    return ScoreReport("segmentation", result, text)
