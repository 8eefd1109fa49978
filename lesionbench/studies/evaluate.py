"""Cross-dataset evaluation: score a finished run on another dataset's split, leakage removed.

Why: a model that wins on its own test split may not transfer, and ISIC 2016/2017 images reappear
in ISIC 2018, so a cross-edition table leaks unless the overlap is removed. Every image of the
target split that is also in the run's training or validation data (same ISIC id, or identical
image bytes: ``data/leakage.py``) is excluded before scoring, and the count is written down.

The target is read from its own folder only (``--root``; else the run's ``dataset.root`` when it
holds the target, else $LESIONBENCH_DATA): a folder with just the test archive is enough wherever the
split's ids are known without the training archive (an ISIC test or validation archive, Kvasir-SEG's
official lists). The run's own training data is read for the leakage check.

Writes ``<run>/eval/<dataset>/metrics.json``, ``per_image.csv`` and ``excluded.json``
(``eval/<dataset>__<split>/`` for a split other than test); a present result made from the same
weights and the same target content (ids and file bytes, wherever the folder is) is skipped. When
every target image was seen in training, only ``excluded.json`` is written and evaluation fails.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lesionbench.config import NUM_CLASSES, ExperimentConfig
from lesionbench.data import leakage
from lesionbench.data.checks import ensure_checked
from lesionbench.data.datamodule import SegmentationDataModule, resolve_root, work_dir
from lesionbench.data.layouts import Sample, get_layout, locate, missing_message, scan
from lesionbench.data.splits import kvasir_official, load_or_create, official_list_dir
from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_json
from lesionbench.runfolder import (
    METRICS,
    PER_IMAGE,
    EvalMetrics,
    EvalStamp,
    Excluded,
    PerImageRow,
    RunFolderError,
    read_eval_metrics,
    read_metrics,
    read_run_info,
    write_eval_metrics,
    write_per_image,
)
from lesionbench.settings import settings

log = logging.getLogger(__name__)
EVAL_DIR = "eval"
EXCLUDED = "excluded.json"  # the target images left out as seen in training, even when none is left


@dataclass
class EvalResult:
    folder: Path
    status: str  # "evaluated" | "skipped"
    metrics: EvalMetrics


def eval_folder(run_dir: Path, dataset: str, split: str = "test") -> Path:
    return Path(run_dir) / EVAL_DIR / (dataset if split == "test" else f"{dataset}__{split}")


def _target_root(cfg: ExperimentConfig, dataset: str, split: str, root: str | None) -> Path:
    """The folder holding ``dataset``'s archives: ``--root``; else the run's ``dataset.root`` when it
    holds them (a parent of every dataset), else $LESIONBENCH_DATA. Errors name the target."""
    layout = get_layout(dataset)
    part = split if split in layout.splits else next(iter(layout.splits))
    if root is not None:
        found = resolve_root(dataset, root)
        if locate(layout, found) is None:
            raise LesionBenchError(f"evaluate --root {root}: {missing_message(layout, found, part)}")
        return found
    candidates = [(cfg.dataset.root, "the run's dataset.root")] if cfg.dataset.root else []
    if settings().data is not None:
        candidates.append((None, "$LESIONBENCH_DATA"))
    looked: list[str] = []
    for candidate, what in candidates:
        found = resolve_root(dataset, candidate)
        if locate(layout, found) is not None:
            return found
        looked.append(f"{found} ({what})")
    where = f"not in {' nor '.join(looked)}" if looked else "no folder given ($LESIONBENCH_DATA is not set)"
    raise LesionBenchError(f"evaluate: target {dataset}: its archives are {where}; pass --root with the folder "
                           f"holding the unzipped {dataset} archives (get them from {layout.source})")


def _official_ids(dataset: str, split: str, present: dict[str, list[Sample]]) -> list[str] | None:
    """The ids of ``dataset``'s official ``split`` when they are known without the other parts'
    files: an archive that is the part itself (ISIC test, val), or the dataset's own id lists
    (Kvasir-SEG). None when the split must be computed from the whole pool."""
    layout = get_layout(dataset)
    if split in present and split in layout.splits and (split != "train" or "val" in layout.splits):
        return [s.id for s in present[split]]
    if dataset == "kvasir-seg":
        folder = official_list_dir("kvasir-seg")
        listed = [line.strip() for f in ("train.txt", "val.txt") for line in (folder / f).read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
        pool = {s.id for samples in present.values() for s in samples}
        if pool & set(listed):  # the real Kvasir-SEG (a synthetic replica has none of its ids)
            return (kvasir_official(listed) or {}).get(split, [])
    return None


def _target_samples(cfg: ExperimentConfig, dataset: str, split: str, troot: Path) -> list[Sample]:
    """The target split's samples, read from ``troot`` alone: a folder holding only the test set is
    enough wherever the split's ids are known without the training archive."""
    label = f"evaluate: target {dataset}/{split} at {troot}"
    try:
        present = scan(dataset, troot)
        ids = _official_ids(dataset, split, present)
        if ids is None:
            ids = load_or_create(dataset, "official", present, work_dir(troot) / "splits")[split]
    except LesionBenchError as err:
        raise LesionBenchError(f"{label}: {err}") from None
    by_id = {s.id: s for samples in present.values() for s in samples}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise LesionBenchError(f"{label}: {len(missing)} of its {len(ids)} official id(s) are not in the folder, "
                               f"e.g. {missing[0]}; restore the {dataset} {split} images and masks")
    if not ids:
        raise LesionBenchError(f"{label}: the official {split} part is empty; pick another --split")
    samples = sorted((by_id[i] for i in ids), key=lambda s: s.id)
    samples = samples[: cfg.dataset.subset] if cfg.dataset.subset else samples
    # verify's checks (decodable, mask matches image), once per set of files: one line per fault
    ensure_checked(samples, dataset, troot, work_dir(troot) / "checked", f"{dataset}-eval-{split}")
    return samples


def _fingerprint(run_dir: Path, dataset: str, split: str, samples: list[Sample]) -> EvalStamp:
    """What a stored evaluation must match to be reused: the run's weights and the target's content
    (ids and file bytes, wherever the folder is)."""
    info = read_run_info(run_dir)
    digest = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.id):
        digest.update(s.id.encode())
        for path in (s.image, *s.masks):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return EvalStamp(source_config_hash=info.config_hash, source_finished=info.finished, dataset=dataset, split=split,
                     target_content=digest.hexdigest())


def _seen_in_training(run_dir: Path, cfg: ExperimentConfig, dataset: str, split: str) -> list[Sample]:
    """The run's own training and validation images (for the leakage check)."""
    source = SegmentationDataModule.from_experiment(cfg)
    try:
        source.setup("fit")
    except LesionBenchError as err:
        raise LesionBenchError(
            f"evaluate: target {dataset}/{split}: cannot check it for images {run_dir.name} trained on, because "
            f"that run's own training data ({cfg.dataset.name}, dataset.root {cfg.dataset.root}) cannot be read: "
            f"{err}") from None
    return source.parts["train"] + source.parts["val"]


def _write_exclusions(out: Path, record: dict[str, Any]) -> Path:
    """``excluded.json``: which target images were left out, and why (written even when none is left)."""
    path = out / EXCLUDED
    atomic_write_json(path, record)
    return path


def evaluate_run(run_dir: str | Path, dataset: str, split: str = "test", root: str | None = None,
                 accelerator: str = "auto", progress: bool = False) -> EvalResult:
    """Score the finished run at ``run_dir`` (any engine: ``load_run``) on ``dataset``'s ``split``
    (leaked images excluded), as its own test scored it: its preprocessing and batches, each mask at
    its ground truth's original size."""
    from lesionbench.inference.load import load_run
    from lesionbench.inference.score import device_of, score_samples
    from lesionbench.metrics.boundary import nsd_tolerance
    from lesionbench.metrics.scores import summarize

    run_dir = Path(run_dir)
    out = eval_folder(run_dir, dataset, split)
    run = load_run(run_dir, device_of(accelerator))  # refuses an unfinished or unreadable run with one line
    cfg = run.cfg
    if NUM_CLASSES[dataset] != cfg.num_classes:
        raise LesionBenchError(f"evaluate: {run_dir.name} predicts {cfg.num_classes} channel(s) but target {dataset} "
                               f"has {NUM_CLASSES[dataset]}; pick a dataset with the same classes")
    troot = _target_root(cfg, dataset, split, root)
    candidates = _target_samples(cfg, dataset, split, troot)
    stamp = _fingerprint(run_dir, dataset, split, candidates)
    if (out / METRICS).is_file():
        try:
            done = read_eval_metrics(out)
        except RunFolderError:  # unreadable or from an older layout: evaluate again
            done = None
        if done is not None and done.evaluation == stamp:
            return EvalResult(out, "skipped", done)

    leaks = leakage.find_leaks(_seen_in_training(run_dir, cfg, dataset, split), candidates)
    dropped = {x.eval_id: x.reason for x in leaks}
    reasons = Counter(dropped.values())
    excluded = Excluded(count=len(dropped), by_id=reasons.get("id", 0), by_bytes=reasons.get("bytes", 0),
                        of=len(candidates), ids=sorted(dropped))
    kept = [s for s in candidates if s.id not in dropped]
    record = {"run": run_dir.name, "dataset": dataset, "split": split, "root": str(troot),
              "evaluation": stamp.model_dump(mode="json"), "excluded": excluded.model_dump(mode="json"),
              "n_scored": len(kept)}
    out.mkdir(parents=True, exist_ok=True)
    if not kept:
        for stale in (METRICS, PER_IMAGE):  # another target's result must not stand in for this one
            (out / stale).unlink(missing_ok=True)
        path = _write_exclusions(out, record)
        raise LesionBenchError(f"evaluate: every one of the {len(candidates)} image(s) of target {dataset}/{split} "
                               f"at {troot} is also in {run_dir.name}'s training or validation data; nothing is "
                               f"left to score (the exclusions are listed in {path})")
    if dropped:
        log.warning("%s on %s/%s: excluded %d image(s) seen in training/validation", run_dir.name, dataset, split,
                    len(dropped))

    layout = get_layout(dataset)
    tolerance = nsd_tolerance(dataset)  # NSD as the test loop scores it
    stats, boundary = score_samples(run, kept, layout.mask_threshold, progress, nsd_tolerance=tolerance)
    ids = [s.id for s in kept]
    metrics, rows = summarize(stats, ids, dataset, list(layout.class_names), boundary=boundary,
                              nsd_tolerance=tolerance)
    checked = EvalMetrics.model_validate({
        **metrics, "run": run_dir.name, "experiment": cfg.name, "model": read_metrics(run_dir).model,
        "seed": cfg.trainer.seed,
        "source_dataset": cfg.dataset.name, "dataset": dataset, "split": split, "n_test": len(ids),
        "evaluation": stamp, "excluded": excluded,
    })
    _write_exclusions(out, record)
    write_per_image(out, [PerImageRow.model_validate(r) for r in rows])
    write_eval_metrics(out, checked)  # last: its presence means the evaluation is complete
    return EvalResult(out, "evaluated", checked)


def evaluate_runs(run_dirs: list[Path], targets: dict[str, list[str]], notify=None, **kwargs: Any) -> dict[str, str]:
    """Each finished run (by its training dataset) on each of its target datasets; failures are
    recorded in ``eval/<dataset>/error.txt`` and reported, and never stop the others."""
    statuses: dict[str, str] = {}
    for run_dir in run_dirs:
        try:
            source = read_metrics(run_dir).dataset
        except RunFolderError:
            continue  # not finished: its failure is reported by the suite runner
        for dataset in targets.get(source, []):
            key = f"{run_dir.name} → {dataset}"
            try:
                result = evaluate_run(run_dir, dataset, **kwargs)
                statuses[key] = result.status
            except LesionBenchError as err:
                statuses[key] = f"failed: {err}"
                folder = eval_folder(run_dir, dataset)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "error.txt").write_text(f"{err}\n")
            if notify:
                notify(key, statuses[key])
    return statuses
