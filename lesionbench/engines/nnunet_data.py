"""Our split in nnU-Net's raw format, and nnU-Net's test predictions scored by our metric code.

The export holds exactly the split's train + val ids (``imagesTr``/``labelsTr``) and its test ids
(``imagesTs``), as RGB PNGs read by nnU-Net's ``NaturalImage2DIO`` at the recipe's image size (the
pixels every other model trains on) or, with ``nnunet.native_resolution``, at each image's own size;
``splits_final.json`` makes our train/val fold 0.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lesionbench.data.decode import Size, hw, load_mask, load_pair
from lesionbench.data.layouts import Sample
from lesionbench.io import atomic_write_json, read_json
from lesionbench.metrics.boundary import image_boundary, nsd_tolerance
from lesionbench.metrics.scores import image_stats, resize_logits_to, summarize
from lesionbench.runfolder import mask_files

LABELS = {"background": 0, "lesion": 1}


def dataset_json(num_training: int, name: str) -> dict[str, Any]:
    """nnU-Net's dataset.json for 2D RGB PNGs (documentation/dataset_format.md, natural images)."""
    return {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": LABELS, "numTraining": num_training,
            "file_ending": ".png", "overwrite_image_reader_writer": "NaturalImage2DIO",
            "name": name, "description": "exported by LesionBench: our split, fold 0 = our train/val"}


def export_raw(parts: dict[str, list[Sample]], folder: Path, size: Size | None, threshold: int,
               name: str) -> dict[str, Any]:
    """Write the raw dataset; returns (and records in export.json, written last) the exported ids.
    ``size=None``: every image and mask at its own size (native resolution).

    An export with the same ids and size is kept; anything else is removed and written afresh.
    """
    ids = {p: [s.id for s in parts[p]] for p in ("train", "val", "test")}
    shape = "native" if size is None else size if isinstance(size, int) else list(hw(size))
    record = {"ids": ids, "image_size": shape}  # as JSON reads back
    marker = folder / "export.json"
    if marker.is_file() and read_json(marker) == record:
        return record
    shutil.rmtree(folder, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    for part in ("train", "val", "test"):
        images = folder / ("imagesTs" if part == "test" else "imagesTr")
        for s in parts[part]:
            image, masks = load_pair(s, threshold, size)
            Image.fromarray(image).save(images / f"{s.id}_0000.png")
            if part != "test":
                Image.fromarray(masks[0]).save(folder / "labelsTr" / f"{s.id}.png")  # values 0 / 1
    atomic_write_json(folder / "dataset.json", dataset_json(len(ids["train"]) + len(ids["val"]), name))
    atomic_write_json(marker, record)
    return record


def write_splits(preprocessed: Path, train_ids: list[str], val_ids: list[str]) -> None:
    """Fold 0 of nnU-Net's cross-validation = our train / val (read by its trainer's do_split)."""
    atomic_write_json(preprocessed / "splits_final.json", [{"train": train_ids, "val": val_ids}])


def exported_ids(raw: Path) -> dict[str, list[str]]:
    """The case ids actually present in a raw folder (for checks and tests)."""
    def cases(sub: str, suffix: str) -> list[str]:
        return sorted(p.name.removesuffix(suffix) for p in (raw / sub).glob(f"*{suffix}"))

    return {"imagesTr": cases("imagesTr", "_0000.png"), "labelsTr": cases("labelsTr", ".png"),
            "imagesTs": cases("imagesTs", "_0000.png")}


def score(samples: list[Sample], predictions: Path, threshold: int, dataset: str, class_names: list[str],
          masks_out: Path, postprocessing: Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """nnU-Net's lesion probabilities -> bilinear to each ground truth's original size -> > 0.5 ->
    nnU-Net's postprocessing (its ``postprocessing.pkl``, when given) -> our counts, boundary distances
    and summary; the binary masks (0/255) are kept in ``masks_out``, named as every run names its test
    predictions (training/test_outputs.py), for re-scoring."""
    masks_out.mkdir(parents=True, exist_ok=True)
    fns: list[Any] = []
    if postprocessing is not None:
        from batchgenerators.utilities.file_and_folder_operations import load_pickle

        fns, kwargs = load_pickle(str(postprocessing))
    stats, boundary = [], []
    for s in samples:
        probs = np.load(predictions / f"{s.id}.npz")["probabilities"]  # (classes, 1, H, W) for 2D images
        lesion = torch.from_numpy(probs[LABELS["lesion"]].astype(np.float32)).reshape(1, 1, *probs.shape[-2:])
        truth = torch.from_numpy(np.stack([load_mask(p, threshold) for p in s.masks]))[None].bool()
        pred = resize_logits_to(lesion, truth.shape[-2:]) > 0.5
        if fns:  # on a label map shaped as nnU-Net's reader gives it, (1, H, W), values 0 / 1
            from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing

            seg = apply_postprocessing(pred[0].numpy().astype(np.uint8), fns, kwargs)
            pred = torch.from_numpy(seg == LABELS["lesion"])[None]
        Image.fromarray(pred[0, 0].numpy().astype(np.uint8) * 255).save(masks_out / mask_files(s.id, class_names)[0])
        stats.append(image_stats(pred, truth)[0])
        boundary.append(image_boundary(pred, truth, tolerance=nsd_tolerance(dataset))[0])  # as the test loop
    return summarize(torch.stack(stats), [s.id for s in samples], dataset, class_names,
                     boundary=torch.stack(boundary), nsd_tolerance=nsd_tolerance(dataset))
