"""The one writer of a run folder's lifecycle, for every engine (training/run.py, engines/nnunet.py).

- ``set_aside_if_stale``: a result made under another config moves to ``superseded/`` first.
- ``start_run``: config.yaml, then run.json ``running`` with the run's provenance.
- ``finish_run``: per_image.csv, run.json ``finished``, metrics.json last (a folder with metrics.json
  holds the whole result).
- ``record_failure``: run.json ``failed`` with the reason, and error.log; on a full disk it still
  tries to say so in place.
- ``is_finished``: whether a folder holds this config's finished result (a re-run skips it).

The engines write their own files (weights, logs, predictions) and nothing of the above.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from lesionbench.config import ExperimentConfig
from lesionbench.io import atomic_write_text, is_disk_full
from lesionbench.lifecycle.provenance import provenance
from lesionbench.runfolder import (
    RUN_INFO,
    PerImageRow,
    RunFolderError,
    RunInfo,
    RunMetrics,
    read_metrics,
    read_run_info,
    write_metrics,
    write_per_image,
    write_run_info,
)

log = logging.getLogger(__name__)

#: Where a run folder made under another config goes (beside the runs, never read as a run).
SUPERSEDED = "superseded"
#: Files of the run's claim (studies/claim.py): they belong to the worker training the run now.
CLAIM_FILES = ("claim.json", "claims.log", ".claim-", ".takeover-")
CONFIG, ERROR_LOG = "config.yaml", "error.log"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def previous_info(run_dir: Path) -> RunInfo | None:
    try:
        return read_run_info(run_dir)
    except RunFolderError:
        return None


def folder_hash(run_dir: Path) -> str | None:
    """The hash of the config a run folder was made with, under today's hash rules (config.yaml),
    else the one its run.json recorded; None for a folder holding neither."""
    try:
        raw = yaml.safe_load((run_dir / CONFIG).read_text())
        return ExperimentConfig.model_validate(raw).config_hash()
    except Exception:  # noqa: BLE001 - missing, unreadable or from an older schema: ask run.json
        pass
    info = previous_info(run_dir)
    return info.config_hash if info else None


def is_finished(run_dir: Path, cfg: ExperimentConfig) -> bool:
    """Done when run.json and metrics.json are valid, the folder's config.yaml hashes (under today's
    rules, so a change of what the hash covers retrains nothing) to this config's hash, and the best
    weights are still there (a copied-in result without weights is re-made, e.g. the committed demo)."""
    try:
        info, metrics = read_run_info(run_dir), read_metrics(run_dir)
    except RunFolderError:
        return False
    best = info.best_checkpoint or metrics.best_checkpoint
    return info.status == "finished" and folder_hash(run_dir) == cfg.config_hash() and (run_dir / best).is_file()


def set_aside_if_stale(run_dir: Path, cfg: ExperimentConfig) -> Path | None:
    """Move a result made under another config to ``superseded/<run>.old-<hash>-<time>`` (never
    overwritten, never deleted), so the new config starts fresh; returns where it went. A folder with
    no config of its own (only a claim, or a run killed before it wrote config.yaml) holds no result
    and stays; the claim files stay in any case, they are the current worker's lock."""
    old = folder_hash(run_dir) if run_dir.is_dir() else None
    if old is None or old == cfg.config_hash():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target_dir = run_dir.parent / SUPERSEDED
    base = f"{run_dir.name}.old-{old}-{stamp}"
    target, n = target_dir / base, 1
    while target.exists():
        target, n = target_dir / f"{base}-{n}", n + 1
    target.mkdir(parents=True)
    for entry in run_dir.iterdir():
        if not entry.name.startswith(CLAIM_FILES):
            entry.rename(target / entry.name)
    log.warning("%s: made under another config (hash %s, now %s); kept as %s, training afresh",
                run_dir, old, cfg.config_hash(), target)
    return target


def start_run(run_dir: Path, cfg: ExperimentConfig, suite: str, *, engine: str = "lightning",
              versions: dict[str, str] | None = None, write: bool = True, **fields: Any) -> RunInfo:
    """config.yaml and run.json ``running``: what the run is, where it came from (provenance), how
    often it was resumed before. ``fields``: more of run.json (data hashes); ``versions``: the
    engine's own packages beside provenance's. ``write=False`` (a DDP rank other than zero) only
    returns the record."""
    previous = previous_info(run_dir)
    origin = provenance()
    origin["versions"] = {**origin["versions"], **(versions or {})}  # type: ignore[dict-item]
    info = RunInfo.model_validate({
        "status": "running", "run": run_dir.name, "suite": suite, "experiment": cfg.name,
        "config_hash": cfg.config_hash(), "seed": cfg.trainer.seed, "started": now(), "engine": engine,
        "resume_count": previous.resume_count if previous else 0, **origin, **fields})
    if write:
        atomic_write_text(run_dir / CONFIG, cfg.to_yaml())
        write_run_info(run_dir, info)
    return info


def finish_run(run_dir: Path, info: RunInfo, metrics: RunMetrics | dict[str, Any],
               rows: Sequence[PerImageRow | dict[str, Any]], **updates: Any) -> RunMetrics:
    """per_image.csv, run.json ``finished`` (with ``updates``), metrics.json last; all validated
    against the contract (lesionbench/runfolder.py) before the first is written."""
    checked = metrics if isinstance(metrics, RunMetrics) else RunMetrics.model_validate(metrics)
    per_image = [r if isinstance(r, PerImageRow) else PerImageRow.model_validate(r) for r in rows]
    done = RunInfo.model_validate({**info.model_dump(), **updates, "status": "finished", "finished": now()})
    write_per_image(run_dir, per_image)
    write_run_info(run_dir, done)
    write_metrics(run_dir, checked)  # last: a folder with metrics.json holds the whole result
    return checked


def record_failure(run_dir: Path, cfg: ExperimentConfig, suite: str, err: BaseException) -> None:
    """Keep the error beside the run (the suite goes on); earlier results stay untouched.

    run.json says ``failed`` with the reason's first line. When the disk is full even for that (an
    atomic write needs a second copy), run.json is rewritten in place, which needs no more room than
    it takes now; if nothing can be written, one log line says so where it is seen."""
    info = previous_info(run_dir) or RunInfo(status="failed", run=run_dir.name, suite=suite, experiment=cfg.name,
                                             config_hash=cfg.config_hash())
    line = f"{type(err).__name__}: {err}".splitlines()[0][:500]
    failed = info.model_copy(update={"status": "failed", "error": line, "finished": now()})
    try:
        write_run_info(run_dir, failed)
    except OSError as write_err:
        if not (is_disk_full(write_err) and _rewrite_in_place(run_dir / RUN_INFO, failed)):
            log.error("%s: could not record the failure (%s): %s", run_dir, write_err, line)
            return
    try:
        atomic_write_text(run_dir / ERROR_LOG, "".join(traceback.format_exception(err)))
    except OSError as write_err:
        log.warning("%s: run.json says failed, but %s could not be written (%s)", run_dir, ERROR_LOG, write_err)


def _rewrite_in_place(path: Path, info: RunInfo) -> bool:
    try:
        with open(path, "r+") as fh:
            fh.truncate(0)
            fh.write(json.dumps(info.model_dump(mode="json"), indent=2) + "\n")
        return True
    except OSError:
        return False
