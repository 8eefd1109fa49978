"""Cross-dataset evaluation: score a finished run on another dataset's split, leakage removed.

Why: a model that wins on its own test split may not transfer, and ISIC 2016/2017 images reappear
in ISIC 2018, so a cross-edition table leaks unless the overlap is removed. Every image of the
target split that is also in the run's training or validation data (same ISIC id, or identical
image bytes: ``data/leakage.py``) is excluded before scoring, and the count is written down.

Writes ``<run>/eval/<dataset>/metrics.json`` and ``per_image.csv`` (``eval/<dataset>__<split>/`` for
a split other than test); a present result made from the same weights and target is skipped.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lesionbench.config import NUM_CLASSES, ExperimentConfig
from lesionbench.data import SegmentationDataModule, leakage
from lesionbench.data.layouts import Sample
from lesionbench.errors import LesionBenchError
from lesionbench.runfolder import (
    METRICS,
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

log = logging.getLogger(__name__)
EVAL_DIR = "eval"


@dataclass
class EvalResult:
    folder: Path
    status: str  # "evaluated" | "skipped"
    metrics: EvalMetrics


def eval_folder(run_dir: Path, dataset: str, split: str = "test") -> Path:
    return Path(run_dir) / EVAL_DIR / (dataset if split == "test" else f"{dataset}__{split}")


def _target_config(cfg: ExperimentConfig, dataset: str, split: str, root: str | None) -> ExperimentConfig:
    """The run's own preprocessing (size, normalisation, subset) on the target's official split."""
    ds = cfg.dataset.model_copy(update={"name": dataset, "split": "official", "leakage": "ignore", "cache": False,
                                        "normalize": "imagenet",  # the model's own stats are applied below
                                        "root": root if root is not None else cfg.dataset.root})
    return cfg.model_copy(update={"dataset": ds})


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


def evaluate_run(run_dir: str | Path, dataset: str, split: str = "test", root: str | None = None,
                 accelerator: str = "auto", progress: bool = False) -> EvalResult:
    """Score the finished run at ``run_dir`` on ``dataset``'s ``split`` (leaked images excluded)."""
    import lightning as L

    from lesionbench.inference.load import load_run, run_stats
    from lesionbench.training.metrics import summarize

    run_dir = Path(run_dir)
    out = eval_folder(run_dir, dataset, split)
    task, cfg = load_run(run_dir)  # refuses an unfinished or unreadable run with one line
    target_cfg = _target_config(cfg, dataset, split, root)
    target = SegmentationDataModule.from_experiment(target_cfg)
    target.setup("test")
    candidates = target.parts[split]
    stamp = _fingerprint(run_dir, dataset, split, candidates)
    if (out / METRICS).is_file():
        try:
            done = read_eval_metrics(out)
        except RunFolderError:  # unreadable or from an older layout: evaluate again
            done = None
        if done is not None and done.evaluation == stamp:
            return EvalResult(out, "skipped", done)
    if NUM_CLASSES[dataset] != cfg.num_classes:
        raise LesionBenchError(f"evaluate: {run_dir.name} predicts {cfg.num_classes} channel(s) but {dataset} has "
                               f"{NUM_CLASSES[dataset]}; pick a dataset with the same classes")

    source = SegmentationDataModule.from_experiment(cfg)
    source.setup("fit")
    seen = source.parts["train"] + source.parts["val"]
    leaks = leakage.find_leaks(seen, candidates)
    dropped = {x.eval_id: x.reason for x in leaks}
    kept = target.restrict(split, exclude=set(dropped), stats=run_stats(task.model))
    if not kept:
        raise LesionBenchError(f"evaluate: every {dataset}/{split} image is also in {run_dir.name}'s training or "
                               "validation data; nothing is left to score")
    if dropped:
        log.warning("%s on %s/%s: excluded %d image(s) seen in training/validation", run_dir.name, dataset, split,
                    len(dropped))

    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=progress, enable_model_summary=False)
    trainer.test(task, dataloaders=target.loader(split), verbose=False)
    index, stats = task.test_result
    ids = [kept[i].id for i in index.reshape(-1).tolist()]
    metrics, rows = summarize(stats, ids, dataset, target.class_names, boundary=task.test_boundary_result)
    reasons = Counter(dropped.values())
    checked = EvalMetrics.model_validate({
        **metrics, "run": run_dir.name, "experiment": cfg.name, "model": cfg.model.name, "seed": cfg.trainer.seed,
        "source_dataset": cfg.dataset.name, "dataset": dataset, "split": split, "n_test": len(ids),
        "evaluation": stamp,
        "excluded": Excluded(count=len(dropped), by_id=reasons.get("id", 0), by_bytes=reasons.get("bytes", 0),
                             of=len(candidates), ids=sorted(dropped)),
    })
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
