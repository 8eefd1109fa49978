"""Read run folders (results/<suite>/<run>/) into records the leaderboard can trust.

One broken folder must never hide the others: every problem becomes a record with
status "broken" and a one-line error instead of an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError

from lesionbench.errors import LesionBenchError
from lesionbench.io import read_json
from lesionbench.runfolder import (
    METRICS,
    PER_IMAGE,
    RUN_INFO,
    RunFolderError,
    RunInfo,
    RunMetrics,
    read_metrics,
    read_per_image,
    read_run_info,
)

#: Folders under a suite that are not runs (written by the reporting layer itself).
NOT_RUNS = {"plots"}
RUN_FILES = (RUN_INFO, "metrics.json", "config.yaml")


@dataclass
class RunRecord:
    """Everything the leaderboard needs from one run folder, read through the run-folder contract
    (lesionbench/runfolder.py): ``info`` and ``metrics`` are its models, None until read."""

    path: Path
    run: str
    status: str  # finished | failed | running | pruned | broken
    error: str | None = None
    experiment: str | None = None
    dataset: str | None = None
    model: str | None = None
    seed: int | None = None
    image_size: int | tuple[int, int] | None = None  # the recipe's resolution, S or (H, W) (FLOPs are counted at it)
    weights: str | None = None  # model.options.weights as configured (None: the option is not set)
    epochs: int | None = None  # trainer.epochs
    info: RunInfo | None = None  # run.json
    metrics: RunMetrics | None = None  # metrics.json (finished runs)
    per_image: pd.DataFrame | None = None  # per_image.csv, indexed by image id
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "finished"


def error_line(text: Any, limit: int = 300) -> str:
    """The informative line of an error: the last line of a traceback, else the first line."""
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    if not lines:
        return "no error message recorded"
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _config_fields(run_dir: Path) -> dict[str, Any]:
    """Best-effort experiment/dataset/model from config.yaml (for failed runs without metrics)."""
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        return {"experiment": cfg.get("name"), "dataset": (cfg.get("dataset") or {}).get("name"),
                "model": (cfg.get("model") or {}).get("name"), "seed": (cfg.get("trainer") or {}).get("seed"),
                "image_size": (cfg.get("dataset") or {}).get("image_size"),
                "weights": _weights(cfg), "epochs": (cfg.get("trainer") or {}).get("epochs")}
    except Exception:
        return {}


def _weights(cfg: dict[str, Any]) -> str | None:
    weights = ((cfg.get("model") or {}).get("options") or {}).get("weights")
    return None if weights is None else str(weights)


def _per_image_frame(run_dir: Path, n_test: int) -> pd.DataFrame:
    """per_image.csv through the contract's row model, as a frame indexed by image id."""
    rows = read_per_image(run_dir)  # one line naming the file, line and column on a bad value
    if len(rows) != n_test:
        raise RunFolderError(f"{PER_IMAGE}: {len(rows)} rows but metrics.json says n_test={n_test} "
                             "(a truncated copy? copy the run folder again or re-run it)")
    return pd.DataFrame([r.model_dump() for r in rows]).set_index("id")


#: metrics.json sections the leaderboard can do without: a bad one is dropped with a note, not the run.
OPTIONAL_SECTIONS = {"cost": "dict", "published": "list", "challenge": "dict"}


def _metrics(run_dir: Path, warnings: list[str]) -> RunMetrics:
    """metrics.json through the contract; a bad optional section (a hand-edited cost, say) is
    left out with a note rather than hiding the run's scores, which are checked strictly."""
    try:
        return read_metrics(run_dir)
    except RunFolderError as err:
        try:
            raw = read_json(run_dir / METRICS)
            bad = [k for k in OPTIONAL_SECTIONS if isinstance(raw, dict) and k in raw and f"key '{k}" in str(err)]
            if not bad:
                raise err from None
            metrics = RunMetrics.model_validate({k: v for k, v in raw.items() if k not in bad})
        except (ValidationError, OSError, ValueError):
            raise err from None
    warnings.extend(f"{run_dir.name}: metrics.json '{k}' is not a {OPTIONAL_SECTIONS[k]} as the run-folder "
                    "contract says, ignored" for k in bad)
    return metrics


def read_run(run_dir: Path) -> RunRecord:
    """One run folder -> RunRecord; raises RunFolderError (one line) for the caller to record as broken."""
    run_dir = Path(run_dir)
    rec = RunRecord(path=run_dir, run=run_dir.name, status="broken")
    for k, v in _config_fields(run_dir).items():
        setattr(rec, k, v)
    rec.info = read_run_info(run_dir)
    rec.status, rec.experiment = rec.info.status, rec.info.experiment
    rec.seed = rec.info.seed if rec.info.seed is not None else rec.seed
    if rec.status != "finished":
        rec.error = error_line(rec.info.error) if rec.status == "failed" else f"status: {rec.status}"
        return rec
    rec.metrics = m = _metrics(run_dir, rec.warnings)
    rec.experiment, rec.dataset, rec.model, rec.seed = m.experiment, m.dataset, m.model, m.seed
    rec.image_size = m.image_size or rec.image_size
    if (run_dir / PER_IMAGE).is_file():
        rec.per_image = _per_image_frame(run_dir, m.n_test)  # a bad file skips the run: it would shift the CI
    else:
        rec.warnings.append(f"{rec.run}: {PER_IMAGE} missing (no CI/significance from this run)")
    return rec


def collect_runs(suite_dir: str | Path) -> list[RunRecord]:
    """Every run folder under ``suite_dir``, sorted by name; problems become "broken" records.

    Sub-folders holding none of run.json / metrics.json / config.yaml (and plots/) are not runs.
    """
    suite = Path(suite_dir)
    if not suite.is_dir():
        raise LesionBenchError(f"{suite}: no such suite folder (run `lesionbench run --suite NAME` first)")
    records = []
    for d in sorted(p for p in suite.iterdir() if p.is_dir()):
        if d.name in NOT_RUNS or d.name.startswith("."):  # a run may be named "_x"; hidden folders are not runs
            continue
        if not any((d / f).exists() for f in RUN_FILES):
            continue
        try:
            records.append(read_run(d))
        except Exception as err:  # RunFolderError names the file by its full path: keep it short
            fields = _config_fields(d)
            records.append(RunRecord(path=d, run=d.name, status="broken", error=error_line(str(err).replace(f"{d}/", "")),
                                     **{k: v for k, v in fields.items() if k in ("experiment", "dataset", "model")}))
    return records
